"""The study of a sweep in Optuna's relational storage: opened, checked, counted, described.

The store (an SQLite file in the sweep directory by default, or any SQLAlchemy URL such as
PostgreSQL for workers on many machines) is the source of truth for which trials exist and in
which state; each trial's run directory, `<sweep dir>/trial_NNNN/`, holds the rest.

- Heartbeats: a worker records every `sweep.heartbeat_s` that its running trial is alive. A trial
  silent for `sweep.stale_after_s` (its worker was SIGKILLed, crashed, or lost its machine) is
  failed by the next worker that looks, and Optuna's `RetryHeartbeatStaleTrialCallback` (the
  `RetryFailedTrialCallback` of older Optuna) queues a retry with the same parameters. The retry
  names the trial it repeats (`retried_trial_number`), so it trains in that trial's run
  directory and resumes from its checkpoint.
- A grid is queued once, by the worker that creates the study, as one waiting trial per point;
  workers pop waiting trials atomically, so no point runs twice and none is skipped.
- `sweep.trials` counts trials that ended for good: complete, pruned, or failed without a retry.
"""

import dataclasses
import json
import time
import warnings
from pathlib import Path

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from errors import UserError
from experiments import sweep_space
from train.run_dir import config_differences, write_atomically

STUDY_DB = 'study.db'
SWEEP_FILE = 'sweep.json'  # in the sweep directory: the study's name and store, for --summarize
SUPERFLUOUS = 'not run: every trial of the sweep was already handed out'
METRICS = ('validation_loss', 'validation_bits_per_byte', 'train_loss', 'train_bits_per_byte')
_QUEUE_WAIT_S = 120  # how long a worker waits for the study's creator to queue the grid
_OPEN_ATTEMPTS = 5

warnings.filterwarnings('ignore', category=optuna.exceptions.ExperimentalWarning)
optuna.logging.set_verbosity(optuna.logging.ERROR)  # workers print their own lines


def sweep_dir_of(run_config, sweep_cfg) -> Path:
  return Path(run_config.run_root) / 'sweeps' / sweep_name(run_config, sweep_cfg)


def sweep_name(run_config, sweep_cfg) -> str:
  return sweep_cfg.name or run_config.name


def default_storage(sweep_dir: Path) -> str:
  return f'sqlite:///{(Path(sweep_dir) / STUDY_DB).absolute()}'


def open_storage(url: str, sweep_cfg=None) -> optuna.storages.RDBStorage:
  """The relational store at `url`, with heartbeats and stale-trial retries when `sweep_cfg`."""
  engine_kwargs = {'pool_pre_ping': True}
  if url.startswith('sqlite'):
    engine_kwargs = {'connect_args': {'timeout': 120}}  # several local workers wait their turn
  options = {}
  if sweep_cfg is not None:
    options = dict(heartbeat_interval=int(sweep_cfg.heartbeat_s),
                   grace_period=int(sweep_cfg.stale_after_s),
                   heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(
                       max_retry=int(sweep_cfg.max_retries), inherit_intermediate_values=True))
  for attempt in range(_OPEN_ATTEMPTS):
    try:
      with warnings.catch_warnings():
        warnings.simplefilter('ignore', optuna.exceptions.ExperimentalWarning)  # heartbeats
        return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, **options)
    except ImportError as e:
      raise UserError(f'the study store {url} needs a driver that is not installed ({e}); '
                      'install it, e.g. pip install "psycopg[binary]" for PostgreSQL') from None
    except Exception as e:  # pylint: disable=broad-except  # SQLAlchemy: no server, bad URL, ...
      racing = 'IntegrityError' in type(e).__name__ or 'already exists' in str(e)
      if attempt + 1 < _OPEN_ATTEMPTS and racing:
        time.sleep(1 + attempt)  # workers started together raced to create the tables
        continue
      reason = ' '.join(str(e).split())[:200]
      raise UserError(f'cannot open the study store {url} ({type(e).__name__}: {reason}); '
                      'check the URL and that the database server is running') from None


def check_settings(sweep_cfg) -> None:
  """UserError for a sampler, pruner, metric or count that does not exist."""
  choices = {'sampler': ('grid', 'random', 'tpe'), 'pruner': ('none', 'median',
                                                              'successive_halving'),
             'metric': METRICS}
  for name, allowed in choices.items():
    if sweep_cfg[name] not in allowed:
      raise UserError(f'sweep.{name}={sweep_cfg[name]!r} is not one of {", ".join(allowed)}')
  if sweep_cfg.trials < 0 or (sweep_cfg.trials == 0 and sweep_cfg.sampler != 'grid'):
    raise UserError(f'sweep.trials={sweep_cfg.trials}: give the number of trials to run (0 means '
                    'the whole grid, with sweep.sampler=grid only)')
  for name in ('heartbeat_s', 'stale_after_s'):
    if sweep_cfg[name] < 1:
      raise UserError(f'sweep.{name}={sweep_cfg[name]} must be at least 1 (seconds)')
  if sweep_cfg.stale_after_s <= sweep_cfg.heartbeat_s:
    raise UserError(f'sweep.stale_after_s={sweep_cfg.stale_after_s} must exceed '
                    f'sweep.heartbeat_s={sweep_cfg.heartbeat_s}, or live trials look dead')
  if sweep_cfg.max_retries < 0 or sweep_cfg.prune_startup_trials < 0:
    raise UserError('sweep.max_retries and sweep.prune_startup_trials must be zero or positive')


def make_sampler(sweep_cfg) -> optuna.samplers.BaseSampler:
  if sweep_cfg.sampler == 'tpe':
    return optuna.samplers.TPESampler(seed=sweep_cfg.seed)
  return optuna.samplers.RandomSampler(seed=sweep_cfg.seed)  # a grid is queued, never sampled


def make_pruner(sweep_cfg) -> optuna.pruners.BasePruner:
  if sweep_cfg.pruner == 'median':
    return optuna.pruners.MedianPruner(n_startup_trials=sweep_cfg.prune_startup_trials,
                                       n_warmup_steps=sweep_cfg.prune_warmup_steps)
  if sweep_cfg.pruner == 'successive_halving':
    return optuna.pruners.SuccessiveHalvingPruner()
  return optuna.pruners.NopPruner()


@dataclasses.dataclass
class Sweep:
  """What every worker of one sweep shares: its configs, space, directory and store."""
  run_config: object
  sweep_cfg: object
  dims: list
  directory: Path
  storage_url: str
  points: tuple | None = None  # explicit grid points (a scaling study's runs), else the product

  @property
  def name(self) -> str:
    return sweep_name(self.run_config, self.sweep_cfg)

  def grid(self) -> list[dict]:
    """The points a grid sweep queues: the explicit ones, else every combination of choices."""
    return list(self.points) if self.points is not None else sweep_space.grid_points(self.dims)

  @property
  def trials(self) -> int:
    if self.sweep_cfg.sampler == 'grid':
      return self.sweep_cfg.trials or len(self.grid())
    return self.sweep_cfg.trials

  def study_attrs(self) -> dict:
    """What makes two runs of the sweep command the same sweep (checked when joining)."""
    return {'space': {d.key: d.spec for d in self.dims}, 'sampler': self.sweep_cfg.sampler,
            'metric': self.sweep_cfg.metric, 'sweep_dir': str(self.directory),
            'run_config': json.loads(self.run_config.to_json_best_effort())}


def build_sweep(config, storage_url: str | None = None) -> Sweep:
  """The checked sweep of a loaded sweep config; every input mistake is a UserError here."""
  run_config, sweep_cfg = sweep_space.split_sweep_config(config)
  check_settings(sweep_cfg)
  dims = sweep_space.parse_space(sweep_cfg.space, run_config, sweep_cfg.sampler)
  if sweep_cfg.sampler == 'grid':
    size = len(sweep_space.grid_points(dims))
    if sweep_cfg.trials > size:
      raise UserError(f'sweep.trials={sweep_cfg.trials} exceeds the {size} points of the grid; '
                      'lower it, add choices, or use sweep.sampler=random or tpe')
  directory = sweep_dir_of(run_config, sweep_cfg)
  url = storage_url or sweep_cfg.storage or default_storage(directory)
  return Sweep(run_config, sweep_cfg, dims, directory, url)


def open_study(sweep: Sweep) -> optuna.Study:
  """Creates the sweep's study (queueing a grid) or joins it, checking it is the same sweep."""
  sweep.directory.mkdir(parents=True, exist_ok=True)
  storage = open_storage(sweep.storage_url, sweep.sweep_cfg)
  common = dict(study_name=sweep.name, storage=storage, sampler=make_sampler(sweep.sweep_cfg),
                pruner=make_pruner(sweep.sweep_cfg))
  attrs = sweep.study_attrs()
  try:
    study = optuna.create_study(direction='minimize', **common)
  except optuna.exceptions.DuplicatedStudyError:
    study = optuna.load_study(**common)
    _check_same_sweep(study, attrs, sweep)
    _wait_for_queue(study)
  else:
    for key, value in attrs.items():
      study.set_user_attr(key, value)
    if sweep.sweep_cfg.sampler == 'grid':
      for params in sweep.grid():
        study.enqueue_trial(params)
    study.set_user_attr('queued', True)
  study.set_user_attr('trials', sweep.trials)
  write_atomically(sweep.directory / SWEEP_FILE, json.dumps(
      {'study': sweep.name, 'storage': sweep.storage_url}, indent=2) + '\n')
  return study


def _check_same_sweep(study: optuna.Study, attrs: dict, sweep: Sweep) -> None:
  stored = study.user_attrs
  fix = (f'use another --config.sweep.name, or delete the study {sweep.name!r} '
         f'(in {sweep.storage_url}) to start over')
  for key in ('space', 'sampler', 'metric'):
    if key in stored and stored[key] != attrs[key]:
      raise UserError(f'the study {sweep.name!r} was made with another sweep.{key} '
                      f'({stored[key]!r} there, {attrs[key]!r} now); {fix}')
  if 'run_config' in stored:
    differences = config_differences(stored['run_config'], attrs['run_config'])
    if differences:
      raise UserError(f'the study {sweep.name!r} was made with another run config (differs at '
                      f'{", ".join(differences[:3])}); {fix}')


def _wait_for_queue(study: optuna.Study) -> None:
  deadline = time.monotonic() + _QUEUE_WAIT_S
  while not study.user_attrs.get('queued'):
    if time.monotonic() > deadline:
      raise UserError(f'the study {study.study_name!r} was created but its trials were never '
                      'queued (its first worker died while creating it); delete the study and '
                      'start again')
    time.sleep(1)


def retried_trial_number(trial) -> int | None:
  """The number of the trial that `trial` retries, or None (Optuna's, without its warning)."""
  with warnings.catch_warnings():
    warnings.simplefilter('ignore', optuna.exceptions.ExperimentalWarning)
    return RetryHeartbeatStaleTrialCallback.retried_trial_number(trial)


def retried_numbers(trials) -> set[int]:
  """Numbers of the trials that a later trial repeats."""
  numbers = set()
  with warnings.catch_warnings():
    warnings.simplefilter('ignore', optuna.exceptions.ExperimentalWarning)
    for trial in trials:
      numbers.update(RetryHeartbeatStaleTrialCallback.retry_history(trial))
  return numbers


def original_number(trial) -> int:
  """The number of the trial whose run directory `trial` trains in (itself, or the retried)."""
  retried = retried_trial_number(trial)
  return trial.number if retried is None else retried


def trial_dir_name(number: int) -> str:
  return f'trial_{number:04d}'


@dataclasses.dataclass
class Tally:
  complete: int = 0
  pruned: int = 0
  failed: int = 0  # for good: not retried
  running: int = 0
  waiting: int = 0
  best: object = None  # the complete trial with the lowest finite value

  @property
  def finished(self) -> int:
    return self.complete + self.pruned + self.failed


def tally(study: optuna.Study) -> Tally:
  trials = study.get_trials(deepcopy=False)
  retried = retried_numbers(trials)
  counts = Tally()
  for trial in trials:
    if trial.state == TrialState.COMPLETE:
      counts.complete += 1
      if sweep_space.finite(trial.value) and (counts.best is None or
                                              trial.value < counts.best.value):
        counts.best = trial
    elif trial.state == TrialState.PRUNED:
      counts.pruned += 1
    elif trial.state == TrialState.FAIL:
      if trial.number not in retried and trial.user_attrs.get('reason') != SUPERFLUOUS:
        counts.failed += 1
    elif trial.state == TrialState.RUNNING:
      counts.running += 1
    elif trial.state == TrialState.WAITING:
      counts.waiting += 1
  return counts


def is_superfluous(study: optuna.Study, trial, sweep: Sweep) -> bool:
  """A fresh trial beyond the sweep's count (two workers asked for the last one at once)."""
  if retried_trial_number(trial) is not None:
    return False
  if sweep.sweep_cfg.sampler == 'grid':
    return 'fixed_params' not in trial.system_attrs  # every grid point was queued
  trials = study.get_trials(deepcopy=False)
  fresh_before = sum(1 for t in trials if t.number < trial.number
                     and retried_trial_number(t) is None
                     and t.user_attrs.get('reason') != SUPERFLUOUS)
  return fresh_before >= sweep.trials


def fail_stale_trials(study: optuna.Study) -> None:
  """Fails the trials whose heartbeats stopped, queueing their retries (Optuna's)."""
  with warnings.catch_warnings():
    warnings.simplefilter('ignore', optuna.exceptions.ExperimentalWarning)
    optuna.storages.fail_stale_trials(study)


def hand_back(study: optuna.Study, number: int) -> None:
  """Queues a retry of the (failed) trial `number` with its parameters: it resumes there."""
  trial = next(t for t in study.get_trials(deepcopy=False) if t.number == number)
  with warnings.catch_warnings():
    warnings.simplefilter('ignore', optuna.exceptions.ExperimentalWarning)
    RetryHeartbeatStaleTrialCallback(inherit_intermediate_values=True)(study, trial)


def progress_line(study: optuna.Study, name: str, total: int) -> str:
  counts = tally(study)
  line = (f'sweep {name}: {counts.finished}/{total} done ({counts.complete} complete, '
          f'{counts.pruned} pruned, {counts.failed} failed), {counts.running} running')
  if counts.best is not None:
    line += (f' | best {counts.best.value:.4f} (trial {original_number(counts.best)}: '
             f'{sweep_space.describe(counts.best.params)})')
  return line

