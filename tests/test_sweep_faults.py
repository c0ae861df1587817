"""Faults during a sweep, with real signals on real worker processes.

SIGKILL mid-trial: the worker leaves no word, its trial's heartbeats stop, the next worker fails
it as stale and runs Optuna's retry, which resumes from the trial's own checkpoint: the
checkpoint is read, not rewritten, and the run ends with exactly the numbers of an uninterrupted
one. SIGTERM mid-trial: the trial saves, is handed back to the study, the worker exits 75, and
the same command finishes it from where it stopped. Either way no trial completes twice and none
is lost.
"""

import os
import signal

import pytest
from optuna.trial import TrialState

from experiments.sweep_study import retried_trial_number
from tests.sweep_helpers import (by_state, finish, load_study, records, start_sweep, sweep_dir,
                                 wait_for, write_sweep_config)
from tests.tiny_run import snapshot

LONG_TRIAL = {'train.steps': 300, 'checkpoint.every': 50, 'train.eval_every': 100,
              'train.log_every': 10}
FIRST_CHECKPOINT = LONG_TRIAL['checkpoint.every']


def _checkpoint_done(run_dir, step):
  return lambda: (run_dir / 'checkpoints' / str(step) / 'meta').is_dir()


@pytest.mark.slow
def test_a_sigkilled_trial_is_retried_and_resumes_from_its_checkpoint(tmp_path):
  space = {'optim.lr': 'choice(1e-2)'}
  config = write_sweep_config(tmp_path, space, run=LONG_TRIAL)
  reference = write_sweep_config(tmp_path, space, name='reference', run=LONG_TRIAL)
  uninterrupted = start_sweep(reference)  # the same trial, never killed, alongside
  worker = start_sweep(config)
  run_dir = sweep_dir(tmp_path) / 'trial_0000'
  wait_for(_checkpoint_done(run_dir, FIRST_CHECKPOINT), 240, worker, 'the first checkpoint')
  os.kill(worker.pid, signal.SIGKILL)
  code, _, _ = finish(worker)
  assert code == -signal.SIGKILL
  killed_at = max(r['step'] for r in records(run_dir, 'train'))
  saved = sorted(int(p.name) for p in (run_dir / 'checkpoints').iterdir() if p.name.isdigit())
  assert saved and killed_at < 300, 'the trial finished before it was killed'
  newest = saved[-1]
  before = snapshot(run_dir / 'checkpoints' / str(newest))
  assert load_study(tmp_path).trials[0].state == TrialState.RUNNING  # nobody told the study

  # The same command: after stale_after_s without heartbeats the trial is failed and retried.
  code, out, err = finish(start_sweep(config))
  assert code == 0, err[-3000:]
  study = load_study(tmp_path)
  states = by_state(study)
  original, = states['FAIL']
  retry, = states['COMPLETE']
  assert original.number == 0 and 'WAITING' not in states and 'RUNNING' not in states
  assert retried_trial_number(retry) == 0
  assert retry.params == original.params
  assert retry.user_attrs['run_dir'] == 'trial_0000'
  assert retry.user_attrs['resumed_from_step'] == newest
  assert (f'trial {retry.number} (retry of trial 0): optim.lr=0.01, resuming from step '
          f'{newest}') in out
  assert f'resumed from checkpoint step {newest} in {run_dir / "checkpoints"}' in err
  assert snapshot(run_dir / 'checkpoints' / str(newest)) == before  # read, not written again
  steps = [r['step'] for r in records(run_dir, 'train')]
  assert steps == list(range(10, 301, 10))  # each step logged once
  summary, = records(run_dir, 'summary')
  assert summary['step'] == 300

  code, _, err = finish(uninterrupted)
  assert code == 0, err[-3000:]
  reference_dir = sweep_dir(tmp_path, 'reference') / 'trial_0000'
  assert summary['validation_loss'] == pytest.approx(
      records(reference_dir, 'summary')[0]['validation_loss'], rel=1e-6)
  assert [r['loss'] for r in records(run_dir, 'train')] == pytest.approx(
      [r['loss'] for r in records(reference_dir, 'train')], rel=1e-6)
  print(f'killed at step {killed_at}, newest checkpoint {newest}; the retry (trial '
        f'{retry.number}) resumed there and trained steps {newest + 1}-300')


@pytest.mark.slow
def test_sigterm_hands_the_trial_back_and_the_same_command_finishes_it(tmp_path):
  config = write_sweep_config(tmp_path, {'optim.lr': 'choice(1e-2, 3e-3)'}, run=LONG_TRIAL)
  worker = start_sweep(config)
  run_dir = sweep_dir(tmp_path) / 'trial_0000'
  wait_for(_checkpoint_done(run_dir, FIRST_CHECKPOINT), 240, worker, 'the first checkpoint')
  os.kill(worker.pid, signal.SIGTERM)
  code, out, err = finish(worker)
  assert code == 75, err[-3000:]
  assert 'trial 0: handed back to the study (SIGTERM)' in out
  assert err.strip().splitlines()[-1].startswith('stopped: preempted (SIGTERM) at step ')
  stopped_at = int(err.strip().splitlines()[-1].split('at step ')[1].split(':')[0])
  assert stopped_at < 300
  assert (run_dir / 'checkpoints' / str(stopped_at)).is_dir()  # saved on the way out
  states = by_state(load_study(tmp_path))
  handed_back, = states['FAIL']
  assert len(states['WAITING']) == 2  # the other grid point, and the retry of trial 0
  queued, = [t for t in states['WAITING'] if retried_trial_number(t) == 0]
  assert 'preempted' in handed_back.user_attrs['reason']
  assert queued.params == handed_back.params

  code, out, err = finish(start_sweep(config))
  assert code == 0, err[-3000:]
  assert f'resuming from step {stopped_at}' in out
  states = by_state(load_study(tmp_path))
  assert len(states['FAIL']) == 1 and 'WAITING' not in states
  complete = sorted(states['COMPLETE'], key=lambda t: t.params['optim.lr'])
  assert [t.params['optim.lr'] for t in complete] == [3e-3, 1e-2]  # each point once
  retry = next(t for t in complete if t.params['optim.lr'] == 1e-2)
  assert retry.user_attrs['run_dir'] == 'trial_0000'
  assert retry.user_attrs['resumed_from_step'] == stopped_at
  assert [r['step'] for r in records(run_dir, 'train')] == list(range(10, 301, 10))
  assert len(records(run_dir, 'summary')) == 1
