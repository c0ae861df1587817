"""A sweep worker: asks the study for a trial, trains it in this process, reports, repeats.

Trials run in the worker's own process (`train.loop.train`), not in a subprocess per trial:
- a trial that spans a pod must run where `jax.distributed` already joined the processes:
  process 0 asks the study and broadcasts the trial, every process trains it, process 0 reports;
- starting Python and JAX costs seconds per trial that a small trial cannot spare, and the
  pruner's answer has to reach the running loop at each evaluation (`on_evaluation`);
- Optuna's heartbeat thread beats while the trial trains (XLA releases the GIL), so a worker
  that dies for any reason, SIGKILL or a crash, leaves a stale trial that is retried: the one
  fault path covers them all. JAX's caches are cleared between trials so memory stays flat.

How a trial ends, and what the study records:
  complete     the metric of the run's final summary (a non-finite one is a failure instead);
  pruned       the pruner stopped it at an evaluation; its checkpoint is kept;
  failed       non-finite losses (exit 4 of the run), with the reason, never the best;
  handed back  SIGTERM: the run saves, the trial is failed and a retry with the same parameters
               is queued (it resumes from the checkpoint), and the worker exits 75;
  user error   the trial is failed with the message and the sweep stops with it (exit 2).
"""

import gc
import json
import os
import socket
import time

import jax
import numpy as np
import optuna
from optuna.trial import TrialState

from errors import EXIT_NONFINITE, EXIT_PREEMPTED, EXIT_PRUNED, RunStopped, UserError
from experiments import sweep_space, sweep_study
from train import checkpoint
from train.loop import train
from train.metrics import read_metrics
from train.preemption import Preemption


class TrialFailed(Exception):
  """A trial that ended without a usable metric; the sweep goes on."""


def _say(text: str) -> None:
  print(text, flush=True)


def broadcast(message):
  """`message` (JSON) of process 0 on every process; with one process, itself."""
  if jax.process_count() == 1:
    return message
  from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
  is_source = jax.process_index() == 0
  data = np.frombuffer(json.dumps(message).encode(), np.uint8) if is_source else None
  size = multihost_utils.broadcast_one_to_all(np.int32(data.size if is_source else 0))
  buffer = data if is_source else np.zeros(int(size), np.uint8)
  received = multihost_utils.broadcast_one_to_all(buffer)
  return json.loads(bytes(np.asarray(received, np.uint8)).decode())


def _steps_done(run_dir) -> int:
  records = read_metrics(run_dir, 'train')
  return records[-1]['step'] if records else 0


def _train_trial(sweep, message: dict, on_evaluation) -> dict:
  """Trains the trial of `message` ({'number', 'params'}) in its run directory."""
  name = sweep_study.trial_dir_name(message['number'])
  config = sweep_space.trial_config(sweep.run_config, message['params'], f'{sweep.name}-{name}')
  try:
    return train(config, sweep.directory / name, progress_enabled=False,
                 on_evaluation=on_evaluation)
  finally:
    jax.clear_caches()
    gc.collect()


class _Objective:
  """The function Optuna's `study.optimize` calls with each trial (process 0 only)."""

  def __init__(self, sweep):
    self.sweep = sweep
    self.number = None  # of the trial in hand

  def __call__(self, trial: optuna.Trial) -> float:
    self.number = trial.number
    sweep, study = self.sweep, trial.study
    frozen = next(t for t in study.get_trials(deepcopy=False) if t.number == trial.number)
    if sweep_study.is_superfluous(study, frozen, sweep):
      trial.set_user_attr('reason', sweep_study.SUPERFLUOUS)
      raise TrialFailed(sweep_study.SUPERFLUOUS)
    params = {dim.key: dim.suggest(trial) for dim in sweep.dims}
    number = sweep_study.original_number(frozen)
    run_dir = sweep.directory / sweep_study.trial_dir_name(number)
    resumed_from = (checkpoint.latest_step(checkpoint.checkpoint_dir(run_dir))
                    if checkpoint.checkpoint_dir(run_dir).is_dir() else None)
    trial.set_user_attr('run_dir', run_dir.name)
    trial.set_user_attr('reason', 'running')
    trial.set_user_attr('worker', f'{socket.gethostname()}:{os.getpid()}')
    if resumed_from is not None:
      trial.set_user_attr('resumed_from_step', resumed_from)
    retry = '' if number == trial.number else f' (retry of trial {number})'
    _say(f'trial {trial.number}{retry}: {sweep_space.describe(params)}' +
         (f', resuming from step {resumed_from}' if resumed_from is not None else ''))

    def on_evaluation(step: int, validation_loss: float) -> bool:
      trial.report(validation_loss, step)
      return bool(broadcast(trial.should_prune()))

    broadcast({'number': number, 'params': params})
    start = time.perf_counter()
    try:
      summary = _train_trial(sweep, {'number': number, 'params': params}, on_evaluation)
    except (RunStopped, UserError) as e:
      trial.set_user_attr('reason', str(e))
      trial.set_user_attr('steps', _steps_done(run_dir))
      trial.set_user_attr('wall_s', time.perf_counter() - start)
      if isinstance(e, RunStopped) and e.exit_code == EXIT_PRUNED:
        raise optuna.TrialPruned(str(e)) from None
      if isinstance(e, RunStopped) and e.exit_code == EXIT_NONFINITE:
        raise TrialFailed(str(e)) from None
      raise  # SIGTERM or a user error: the caller hands back or stops
    value = float(summary[sweep.sweep_cfg.metric])
    trial.set_user_attr('steps', int(summary['steps']))
    trial.set_user_attr('wall_s', time.perf_counter() - start)
    if not sweep_space.finite(value):
      trial.set_user_attr('reason', f'{sweep.sweep_cfg.metric} is {value}')
      raise TrialFailed(f'{sweep.sweep_cfg.metric} is {value}')
    trial.set_user_attr('reason', 'complete')
    return value


def _describe_end(study: optuna.Study, number: int) -> str:
  trial = next(t for t in study.get_trials(deepcopy=False) if t.number == number)
  if trial.state == TrialState.COMPLETE:
    return f'trial {number}: complete, {trial.value:.4f}'
  return f'trial {number}: {trial.state.name.lower()}: {trial.user_attrs.get("reason", "")}'


def run_worker(sweep, study: optuna.Study | None) -> None:
  """Runs trials until the sweep has `sweep.trials` finished ones. On several processes every
  process calls this; only process 0 holds the study (the others pass None and follow)."""
  if jax.process_index() != 0:
    _follow(sweep)
    return
  with _StopBetweenTrials() as stop:
    _ask_and_train(sweep, study, stop)
  broadcast(None)  # the other processes stop following (not after an error: they have it too)


class _StopBetweenTrials(Preemption):
  """SIGTERM outside a trial's training (which saves and stops by itself) ends the worker
  before its next trial, with EXIT_PREEMPTED; one process only (a pod syncs its own)."""

  def check(self) -> None:
    if self.requested(0):
      raise RunStopped('SIGTERM between trials: no trial was running; run the same command '
                       'again to continue the sweep', EXIT_PREEMPTED)


def _ask_and_train(sweep, study: optuna.Study, stop: _StopBetweenTrials) -> None:
  objective = _Objective(sweep)
  pause_s = min(float(sweep.sweep_cfg.heartbeat_s), 5.0)
  while True:
    stop.check()
    sweep_study.fail_stale_trials(study)  # retries of trials whose worker vanished
    counts = sweep_study.tally(study)
    if counts.finished >= sweep.trials:
      return
    if counts.finished + counts.running >= sweep.trials and counts.waiting == 0:
      time.sleep(pause_s)  # the last trials run elsewhere; retry them should they go stale
      continue
    objective.number = None
    try:
      study.optimize(objective, n_trials=1, catch=(TrialFailed,))
    except RunStopped as e:
      if e.exit_code == EXIT_PREEMPTED and objective.number is not None:
        sweep_study.hand_back(study, objective.number)
        _say(f'trial {objective.number}: handed back to the study (SIGTERM); it resumes '
             'from its checkpoint in the next worker')
      raise
    if objective.number is not None:
      _say(_describe_end(study, objective.number))
    _say(sweep_study.progress_line(study, sweep.name, sweep.trials))


def _follow(sweep) -> None:
  """Processes other than 0: train each trial process 0 broadcasts, until it says stop."""
  while True:
    message = broadcast(None)
    if message is None:
      return
    try:
      _train_trial(sweep, message, lambda step, loss: bool(broadcast(None)))
    except RunStopped as e:
      if e.exit_code == EXIT_PREEMPTED:
        raise
