"""Every rule set on several 8-device meshes gives one device's losses and parameters.

A GPT-2-style model (tied, padded vocabulary, biases, learned positions) and a Llama-style one
(grouped-query attention with 2 KV heads, untied, unpadded vocabulary, scanned layers) take 3
optimizer steps on the same batches on 1 device and on 8 simulated CPU devices; losses and
final parameters must agree to float32 round-off. Every rule set runs on every mesh of MESHES
with one model or the other, and each model under every rule set on two or three meshes
(SHARDING_FULL_GRID=1 runs every rule set on every mesh with both). The two models run in two
worker processes side by side.
"""

import os

import pytest

from sharding.rules import RULE_SETS
from tests import multidevice

MESHES = [(8, 1, 1), (1, 8, 1), (1, 1, 8), (2, 2, 2), (1, 2, 4)]
PLANS = {'gpt2': [(1, 8, 1), (1, 1, 8), (2, 2, 2)], 'llama': [(8, 1, 1), (1, 2, 4)]}
if os.environ.get('SHARDING_FULL_GRID'):
  PLANS = {'gpt2': MESHES, 'llama': MESHES}
RTOL = 1e-5


def _jobs(model: str, meshes) -> list[dict]:
  jobs = [dict(model=model, rules='dp', mesh=[1, 1, 1])]  # the reference
  for mesh in meshes:
    for rules in RULE_SETS:
      # Most jobs start from the reference's initial state put onto their shardings (it saves
      # a compile); dp_fsdp_tp initialises sharded itself, which must give the same state.
      init = 'create' if rules == 'dp_fsdp_tp' else 'put'
      jobs.append(dict(model=model, rules=rules, mesh=list(mesh), init=init))
  if model == 'llama':  # 2 KV heads over a tensor axis of 8: replicated
    jobs.append(dict(model=model, rules='tp', mesh=[1, 1, 8], init='create'))
  # Adam (its moments sharded like the parameters) and gradient accumulation.
  adam = dict(optim=dict(name='adamw', lr=1e-2))
  jobs.append(dict(model=model, rules='dp', mesh=[1, 1, 1], **adam))
  jobs.append(dict(model=model, rules='fsdp_tp', mesh=[2, 2, 2], **adam))
  jobs.append(dict(model=model, rules='dp_fsdp_tp', mesh=[2, 2, 2], train=dict(grad_accum_steps=2)))
  return jobs


@pytest.fixture(scope='module')
def results():
  workers = {model: multidevice.start('sharding_worker.py', '--devices', '8', '--jobs',
                                      multidevice.jobs_arg(_jobs(model, meshes)))
             for model, meshes in PLANS.items()}
  finished = dict(zip(workers, multidevice.finish_all(list(workers.values()), timeout_s=400)))
  for model, (code, _, err) in finished.items():
    assert code == 0, f'{model} worker failed:\n{err[-3000:]}'
  return {model: lines for model, (_, lines, _) in finished.items()}


def _reference(lines, job):
  adam = job.get('optim', {}).get('name') == 'adamw'
  return next(r for r in lines if (r.get('optim', {}).get('name') == 'adamw') == adam)


@pytest.mark.slow
@pytest.mark.parametrize('model', ['gpt2', 'llama'])
def test_every_rule_set_matches_one_device(results, model):
  lines = results[model]
  assert len(lines) == len(_jobs(model, PLANS[model]))
  for line in lines:
    reference = _reference(lines, line)
    where = f"{line['rules']} on {line['mesh']} {line.get('optim', '')}{line.get('train', '')}"
    assert line['losses'] == pytest.approx(reference['losses'], rel=RTOL), where
    if line.get('optim', {}).get('name') != 'adamw':
      # Adam turns the round-off in gradients that are zero in exact arithmetic (e.g. a key
      # bias: softmax ignores it) into full-size steps, so its parameters are judged by the
      # losses of the later steps only.
      assert line['param_diff'] < RTOL, where
  # The parameters must move well beyond the tolerance, or the comparison proves little.
  assert lines[0]['param_change'] > 1e3 * RTOL


@pytest.mark.slow
def test_fallbacks_are_reported(results):
  """GQA's 2 KV heads over a tensor axis of 8 are replicated; so is the unpadded vocabulary."""
  llama_tp = next(r for r in results['llama'] if r['rules'] == 'tp' and r['mesh'] == [1, 1, 8])
  assert any("'kv_heads' (2)" in note for note in llama_tp['notes'])
  assert any("'vocab' (100)" in note for note in llama_tp['notes'])
  gpt2_tp = next(r for r in results['gpt2'] if r['rules'] == 'tp' and r['mesh'] == [1, 1, 8])
  assert gpt2_tp['notes'] == []  # vocabulary padded to 104
