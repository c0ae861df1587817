"""muP trains the same on 8 simulated devices under every rule set as on one device.

The GPT-2-style model (tied embeddings, biases, learned positions) with heavy-ball momentum
(SGD-like multipliers: m on embeddings, norms and biases) and a zero-initialised query, and the
Llama-style one (scanned layers, grouped-query attention, untied and zero-initialised readout)
with AdamW (1/m on hidden matrices), both at width 32 on a base of 8 (m = 4), take 3 steps on a
2 x 2 x 2 mesh under each rule set, in two worker processes side by side
(tests/sharding_worker.py); losses and parameters must match the one-device run.
"""

import pytest

from sharding.rules import RULE_SETS
from tests import multidevice

RTOL = 1e-5
MUP = dict(parameterization='mup', mup_base_width=8)
SETUPS = {
    'gpt2': dict(model_overrides=dict(MUP, mup_zero_query=True)),
    'llama': dict(model_overrides=dict(MUP, mup_zero_readout=True),
                  optim=dict(name='adamw', lr=1e-2)),
}


def _jobs(model: str) -> list[dict]:
  setup = SETUPS[model]
  jobs = [dict(model=model, rules='dp', mesh=[1, 1, 1], **setup)]
  for rules in RULE_SETS:
    jobs.append(dict(model=model, rules=rules, mesh=[2, 2, 2], init='put', **setup))
  return jobs


@pytest.mark.slow
def test_mup_under_every_rule_set_matches_one_device():
  workers = {model: multidevice.start('sharding_worker.py', '--devices', '8', '--jobs',
                                      multidevice.jobs_arg(_jobs(model)))
             for model in SETUPS}
  finished = multidevice.finish_all(list(workers.values()), timeout_s=400)
  for model, (code, lines, err) in zip(workers, finished):
    assert code == 0, f'{model} worker failed:\n{err[-3000:]}'
    assert len(lines) == len(_jobs(model))
    reference = lines[0]
    for line in lines[1:]:
      where = f"{model}: {line['rules']} on {line['mesh']}"
      assert line['losses'] == pytest.approx(reference['losses'], rel=RTOL), where
      if model == 'gpt2':  # Adam (llama) turns round-off of zero gradients into full steps
        assert line['param_diff'] < RTOL, where
    assert reference['param_change'] > 1e3 * RTOL
