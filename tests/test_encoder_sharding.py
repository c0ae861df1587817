"""The encoder-decoder (span corruption) and the encoder classifier give one device's losses and
parameters under every rule set on 8 simulated CPU devices, like the decoder does
(tests/test_sharding_equivalence.py, whose worker runs them).

A T5-style model (cross-attention, scanned stacks, grouped-query attention, untied, padded
vocabulary) and a BERT-style encoder classifier (padding masked, mean-pooled head, learned
positions, biases) take 3 steps on 1 device and on 8; between them they run every rule set, the
T5 one also with gradient accumulation (its span noise is drawn for the whole batch before the
micro-batches are split, so it must match too). The two run in two worker processes side by
side.
"""

import pytest

from tests import multidevice
from tests.test_sharding_equivalence import RTOL

# Between them, the two models run every rule set (t5 on a 2x2x2 mesh, bert on 1x2x4 / 8x1x1).
PLANS = {
    't5': [dict(rules='fsdp', mesh=[2, 2, 2]), dict(rules='tp', mesh=[2, 2, 2]),
           dict(rules='fsdp_tp', mesh=[2, 2, 2]),
           dict(rules='dp_fsdp_tp', mesh=[2, 2, 2], init='create',
                train=dict(grad_accum_steps=2))],
    'bert': [dict(rules='dp_fsdp', mesh=[1, 2, 4]), dict(rules='tp', mesh=[1, 2, 4]),
             dict(rules='dp', mesh=[8, 1, 1])],
}


def _jobs(model: str) -> list[dict]:
  reference = dict(model=model, rules='dp', mesh=[1, 1, 1])
  return [reference] + [dict(dict(model=model, init='put'), **job) for job in PLANS[model]]


@pytest.fixture(scope='module')
def results():
  workers = {model: multidevice.start('sharding_worker.py', '--devices', '8', '--jobs',
                                      multidevice.jobs_arg(_jobs(model)))
             for model in PLANS}
  finished = dict(zip(workers, multidevice.finish_all(list(workers.values()), timeout_s=400)))
  for model, (code, _, err) in finished.items():
    assert code == 0, f'{model} worker failed:\n{err[-3000:]}'
  return {model: lines for model, (_, lines, _) in finished.items()}


@pytest.mark.slow
@pytest.mark.parametrize('model', list(PLANS))
def test_every_rule_set_matches_one_device(results, model):
  lines = results[model]
  assert len(lines) == len(_jobs(model))
  reference = lines[0]
  for line in lines[1:]:
    where = f"{line['rules']} on {line['mesh']} {line.get('train', '')}"
    assert line['losses'] == pytest.approx(reference['losses'], rel=RTOL), where
    assert line['param_diff'] < RTOL, where
  # The parameters and the loss must move well beyond the tolerance, or the comparison proves
  # little.
  assert reference['param_change'] > 1e3 * RTOL


def test_every_rule_set_is_run():
  from sharding.rules import RULE_SETS  # pylint: disable=import-outside-toplevel
  assert {job['rules'] for jobs in PLANS.values() for job in jobs} == set(RULE_SETS)
