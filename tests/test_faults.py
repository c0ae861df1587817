"""Numerical faults: a non-finite loss or gradient skips the update (counted in the metrics);
too many in a row stop the run with exit code 4, leaving the last good checkpoint the newest.

Faults are injected as bad input: for chosen steps the batch holds token ids far outside the
vocabulary, which the embedding lookup turns into NaN, as real corrupt data would.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import launch
from configs.base import get_config
from models.config import TransformerConfig
from models.transformer import Transformer
from errors import EXIT_NONFINITE
from tests.tiny_run import tiny_flags, write_corpus
from train import checkpoint
from train.metrics import read_metrics
from train.optim import make_optimizer
from train.schedules import make_schedule
from train.setup import Experiment
from train.state import make_init_fn
from train.step import loss_and_grads, train_step


def poison_steps(monkeypatch, bad_steps) -> None:
  """Steps (0-based loop indices) in `bad_steps` train on out-of-vocabulary ids."""
  real_batch = Experiment.train_batch

  def train_batch(self, step):
    batch = real_batch(self, step)
    if step in bad_steps:
      return self.global_batch(np.full(batch.shape, 2**30, np.int32))
    return batch

  monkeypatch.setattr(Experiment, 'train_batch', train_batch)


@pytest.mark.slow
def test_bad_steps_are_skipped_then_a_streak_stops_the_run(tmp_path, monkeypatch, capsys):
  write_corpus(tmp_path)
  run_dir = tmp_path / 'run'

  # One bad step: skipped, counted, the run goes on and ends normally.
  poison_steps(monkeypatch, {12})
  assert launch.main(['train'] + tiny_flags(tmp_path, run_dir, train__steps=30)) == 0
  records = {r['step']: r for r in read_metrics(run_dir, 'train')}
  assert records[13]['finite'] is False and records[12]['finite'] is True
  assert [records[s]['skipped_steps'] for s in (12, 13, 30)] == [0, 1, 1]
  assert records[14]['loss'] == pytest.approx(records[12]['loss'], rel=0.2)  # state untouched
  assert read_metrics(run_dir, 'summary')[-1]['skipped_steps'] == 1

  # Resumed with more steps (a safe change), then every step from the 35th on is bad.
  poison_steps(monkeypatch, set(range(34, 60)))
  capsys.readouterr()
  code = launch.main(['train'] + tiny_flags(tmp_path, run_dir, train__steps=60,
                                            train__max_consecutive_bad_steps=3))
  assert code == EXIT_NONFINITE == 4
  err_lines = [line for line in capsys.readouterr().err.splitlines()
               if not line.startswith('resumed from')]
  assert len(err_lines) == 1 and 'non-finite' in err_lines[0]
  assert 'the last good checkpoint is step 30' in err_lines[0]
  assert checkpoint.latest_step(run_dir / 'checkpoints') == 30  # no save during the streak
  records = {r['step']: r for r in read_metrics(run_dir, 'train')}
  assert records[34]['finite'] is True
  assert all(records[s]['finite'] is False for s in (35, 36, 37))
  assert max(records) < 40
  assert checkpoint.read_meta(run_dir / 'checkpoints', 30)['loop']['bad_step_streak'] == 0



MODEL = dict(vocab_size=64, d_model=32, n_layers=2, n_heads=2, max_len=16)


def _train_with_one_bad_batch(optim_overrides: dict, bad_step: int, steps: int):
  """A tiny model trained `steps` steps, the batch of `bad_step` out of the vocabulary.
  Returns [(batch, state before, metrics, state after)] per step, and the schedule."""
  model = Transformer(TransformerConfig(**MODEL).derived())
  optim = get_config().optim
  optim.update(schedule='linear', warmup_steps=4, lr=0.1, clip_norm=0.0, **optim_overrides)
  tx, schedule = make_optimizer(optim, steps), make_schedule(optim, steps)
  state = jax.jit(make_init_fn(model.cfg, tx, seed=0, seq_len=16))()
  step_fn = jax.jit(functools.partial(train_step, model=model, tx=tx, schedule=schedule,
                                      accum_steps=1))
  tokens = np.random.default_rng(0).integers(0, 64, (steps, 4, 17)).astype(np.int32)
  tokens[bad_step] = 2**30  # the embedding lookup of an out-of-range id is NaN
  history = []
  for batch in map(jnp.asarray, tokens):
    new_state, metrics = step_fn(state, batch)
    history.append((batch, state, jax.device_get(metrics), new_state))
    state = new_state
  return model, history, schedule


def test_logged_lr_is_the_lr_applied_when_a_step_was_skipped():
  model, history, schedule = _train_with_one_bad_batch(
      dict(name='sgd', weight_decay=0.0), bad_step=2, steps=6)
  assert [bool(m['finite']) for _, _, m, _ in history] == [True, True, False, True, True, True]
  applied_lrs = []
  for batch, before, metrics, after in history:
    old, new = np.asarray(before.params['embedding']), np.asarray(after.params['embedding'])
    if not metrics['finite']:
      np.testing.assert_array_equal(new, old)  # skipped: untouched
      continue
    # sgd without clipping or decay moves every param by -lr * grad: read lr off the update.
    _, grads = loss_and_grads(before.params, model, batch, jax.random.PRNGKey(0), 1)
    g = np.asarray(grads['embedding'])
    biggest = np.unravel_index(np.argmax(np.abs(g)), g.shape)
    applied = (old[biggest] - new[biggest]) / g[biggest]
    assert float(metrics['lr']) == pytest.approx(applied, rel=1e-4)
    applied_lrs.append(applied)
  # The schedule follows the updates applied: warmup 0.025, 0.05, (skip), 0.075, 0.1, then decay.
  expected = [float(schedule(n)) for n in range(5)]
  np.testing.assert_allclose(applied_lrs, expected, rtol=1e-4)
  assert expected[:4] == pytest.approx([0.025, 0.05, 0.075, 0.1])


def test_the_optimizer_counts_applied_updates_and_the_state_counts_steps():
  _, history, _ = _train_with_one_bad_batch(dict(name='adamw'), bad_step=1, steps=4)
  final = history[-1][-1]
  assert int(final.step) == 4 and int(final.skipped_steps) == 1  # data position: batch 4 next
  counts = [int(leaf) for path, leaf in jax.tree_util.tree_flatten_with_path(final.opt_state)[0]
            if getattr(path[-1], 'name', None) == 'count']
  assert len(counts) == 2  # Adam's bias correction and the lr schedule
  assert counts == [int(final.step - final.skipped_steps)] * 2 == [3, 3]
