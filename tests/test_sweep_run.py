"""A sweep end to end, in this process: a 3-trial grid whose trials are ordinary run directories
(`eval` works on them), whose table and plots are written, and whose best config trains the same
run again; then how trials end: pruned, non-finite (failed, never best), a user error (stops)."""

import csv

import numpy as np
import pytest
from optuna.trial import TrialState

import launch
from errors import EXIT_USER_ERROR
from tests.sweep_helpers import (by_state, flat_config, load_study, records, sweep_dir,
                                 write_sweep_config)
from train import checkpoint
from train.experiment import Experiment

PNG = b'\x89PNG\r\n\x1a\n'


@pytest.mark.slow
def test_a_three_trial_grid_end_to_end(tmp_path, capsys):
  lrs = (3e-3, 1e-2, 3e-2)
  config = write_sweep_config(tmp_path, {'optim.lr': 'choice(3e-3, 1e-2, 3e-2, log=True)'})
  assert launch.main(['sweep', '--config', str(config)]) == 0
  out = capsys.readouterr().out
  study = load_study(tmp_path)
  trials = study.get_trials()
  assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
  assert [t.params['optim.lr'] for t in trials] == list(lrs)  # the grid, in order, once each
  directory = sweep_dir(tmp_path)
  for trial, lr in zip(trials, lrs):
    run_dir = directory / f'trial_{trial.number:04d}'
    assert trial.user_attrs['run_dir'] == run_dir.name
    summary, = records(run_dir, 'summary')  # an ordinary, finished run
    assert summary['validation_loss'] == trial.value and summary['step'] == 20
    saved = flat_config(run_dir / 'config.json')
    assert saved['optim.lr'] == lr and not any(k.startswith('sweep.') for k in saved)
    assert (run_dir / 'loss.png').read_bytes().startswith(PNG)
    assert checkpoint.latest_step(run_dir / 'checkpoints') == 20
    assert [r['step'] for r in records(run_dir, 'eval')] == [10, 20]
    assert list(trial.intermediate_values) == [10]  # reported at the periodic evaluation
  assert 'sweep sweep: 3/3 done (3 complete, 0 pruned, 0 failed), 0 running | best' in out

  # The table, best first, on the console and in trials.csv / trials.md.
  rows = list(csv.DictReader((directory / 'trials.csv').open()))
  values = sorted(t.value for t in trials)
  assert [float(r['validation_loss']) for r in rows] == pytest.approx(values)
  assert set(rows[0]) >= {'trial', 'state', 'validation_loss', 'optim.lr', 'steps', 'wall_s'}
  assert all(r['state'] == 'complete' and r['steps'] == '20' for r in rows)
  markdown = (directory / 'trials.md').read_text().splitlines()
  assert markdown[0].startswith('| trial | state | validation_loss | optim.lr |')
  assert len(markdown) == 2 + 3
  best = min(trials, key=lambda t: t.value)
  assert f'{best.number}      complete  {best.value:.4f}' in out
  for name in ('metric_vs_optim.lr.png', 'history.png', 'curves.png'):
    assert (directory / name).read_bytes().startswith(PNG), name
  assert not (directory / 'importance.png').exists()  # one parameter: nothing to rank

  # `eval` on the best trial's run directory gives its final validation loss.
  capsys.readouterr()
  best_dir = directory / best.user_attrs['run_dir']
  assert launch.main(['eval', '--run_dir', str(best_dir)]) == 0
  assert f'step 20: validation loss {best.value:.4f}' in capsys.readouterr().out

  # The best config trains the best trial again: the same run, the same loss.
  again = tmp_path / 'again'
  assert launch.main(['train', '--config', str(directory / 'best_config.py'), '--run_dir',
                      str(again), '--no_progress']) == 0
  assert records(again, 'summary')[0]['validation_loss'] == pytest.approx(best.value, rel=1e-6)
  assert flat_config(again / 'config.json')['optim.lr'] == best.params['optim.lr']

  # The same command again continues the (finished) study: nothing runs twice.
  capsys.readouterr()
  assert launch.main(['sweep', '--config', str(config)]) == 0
  assert len(load_study(tmp_path).trials) == 3
  assert 'trial 0:' not in capsys.readouterr().out
  assert launch.main(['sweep', '--summarize', str(directory)]) == 0
  assert f'{best.value:.4f}' in capsys.readouterr().out


@pytest.mark.slow
def test_a_deliberately_bad_trial_is_pruned_and_keeps_its_checkpoint(tmp_path, capsys):
  config = write_sweep_config(
      tmp_path, {'optim.lr': 'choice(1e-2, 3e-2, 1e-7)'}, pruner='median',
      prune_startup_trials=2, run={'train.steps': 30, 'checkpoint.every': 0})
  assert launch.main(['sweep', '--config', str(config)]) == 0
  study = load_study(tmp_path)
  good, better, bad = study.get_trials()
  assert good.state == better.state == TrialState.COMPLETE
  assert bad.state == TrialState.PRUNED and bad.params['optim.lr'] == 1e-7
  # Pruned at its first evaluation, where it was far above the two finished trials.
  assert bad.intermediate_values[10] > max(good.intermediate_values[10],
                                           better.intermediate_values[10])
  assert bad.user_attrs['steps'] == 10 and 'at step 10' in bad.user_attrs['reason']
  run_dir = sweep_dir(tmp_path) / bad.user_attrs['run_dir']
  assert checkpoint.latest_step(run_dir / 'checkpoints') == 10  # saved although every=0
  assert max(r['step'] for r in records(run_dir, 'train')) == 10  # stopped at once
  assert records(run_dir, 'summary') == []
  out = capsys.readouterr().out
  assert 'trial 2: pruned: pruned by the sweep at step 10' in out
  assert '3/3 done (2 complete, 1 pruned, 0 failed)' in out
  assert study.best_trial.number in (0, 1)


@pytest.mark.slow
def test_non_finite_trial_fails_with_its_reason_and_a_user_error_stops_the_sweep(
    tmp_path, capsys, monkeypatch):
  real_batch = Experiment.train_batch

  def train_batch(self, step):  # lr 0.5 meets corrupt data from its 5th step: NaN losses
    batch = real_batch(self, step)
    if self.config.optim.lr == 0.5 and step >= 4:
      return self.global_batch(np.full(batch.shape, 2**30, np.int32))
    return batch
  monkeypatch.setattr(Experiment, 'train_batch', train_batch)
  config = write_sweep_config(tmp_path, {'optim.lr': 'choice(0.5, 1e-2)'},
                              run={'train.max_consecutive_bad_steps': 3})
  assert launch.main(['sweep', '--config', str(config)]) == 0
  study = load_study(tmp_path)
  failed, complete = study.get_trials()
  assert failed.state == TrialState.FAIL and complete.state == TrialState.COMPLETE
  assert '3 updates in a row' in failed.user_attrs['reason']
  assert 'non-finite' in failed.user_attrs['reason']
  assert study.best_trial.number == complete.number
  rows = list(csv.DictReader((sweep_dir(tmp_path) / 'trials.csv').open()))
  assert [r['state'] for r in rows] == ['complete', 'failed']
  assert 'non-finite' in rows[1]['note'] and rows[1]['validation_loss'] == ''
  assert '(1 complete, 0 pruned, 1 failed)' in capsys.readouterr().out

  # A trial whose corpus does not exist: a user error, the sweep stops with it.
  missing = tmp_path / 'missing.txt'
  config = write_sweep_config(tmp_path, {'data.source': f'choice({str(tmp_path / "corpus.txt")!r},'
                                         f' {str(missing)!r})'}, name='user_error')
  capsys.readouterr()
  assert launch.main(['sweep', '--config', str(config)]) == EXIT_USER_ERROR
  err = capsys.readouterr().err.strip().splitlines()
  assert err[-1].startswith('error: ') and str(missing) in err[-1]
  states = by_state(load_study(tmp_path, 'user_error'))
  assert len(states['COMPLETE']) == 1 and len(states['FAIL']) == 1
  assert str(missing) in states['FAIL'][0].user_attrs['reason']
  assert 'WAITING' not in states and 'RUNNING' not in states
