"""Numerical faults: a non-finite loss or gradient skips the update (counted in the metrics);
too many in a row stop the run with exit code 4, leaving the last good checkpoint the newest.

Faults are injected as bad input: for chosen steps the batch holds token ids far outside the
vocabulary, which the embedding lookup turns into NaN, as real corrupt data would.
"""

import numpy as np
import pytest

import launch
from errors import EXIT_NONFINITE
from tests.tiny_run import tiny_flags, write_corpus
from train import checkpoint
from train.metrics import read_metrics
from train.experiment import Experiment


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
