"""`launch.py sweep`: run a hyperparameter sweep defined in a config file, or summarize one.

    python launch.py sweep --config configs/sweeps/lr_tiny.py [--config.sweep.trials=8]
    python launch.py sweep --config configs/sweeps/lr_tiny.py --workers 2
    python launch.py sweep --config configs/sweeps/lr_tiny.py --storage postgresql+psycopg://...
    python launch.py sweep --summarize runs/sweeps/lr_tiny        (or the storage URL)

The sweep is checked whole before any trial runs. One worker runs in this process; `--workers N`
starts N worker processes here; the same command on other machines with the same `--storage`
joins the same study. Each worker prints a line per trial and a progress line; at the end the
table, plots and best config are written (experiments/sweep_summary.py). Exit status: 0 when the
sweep is done, 2 on a user error (also one met by a trial), 75 when stopped by SIGTERM (run the
same command again to continue), and the first failing worker's status otherwise.
"""

import argparse
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from errors import EXIT_PREEMPTED, EXIT_USER_ERROR, UserError

ROOT = Path(__file__).resolve().parent.parent


class _Parser(argparse.ArgumentParser):
  def error(self, message):
    raise UserError(f'{self.prog}: {message}; see {self.prog} --help')


def _parser() -> argparse.ArgumentParser:
  parser = _Parser(
      prog='launch.py sweep',
      description='Run the hyperparameter sweep of a sweep config (a run config plus a `sweep` '
                  'section, see configs/sweeps/base.py) on Optuna, or summarize a sweep.',
      epilog='Any config value can be overridden, the sweep section too: '
             "--config.sweep.trials=8 --config.sweep.space.optim.lr='loguniform(1e-4, 1e-2)'.")
  parser.add_argument('--config', default=None, help='sweep config file, e.g. '
                      'configs/sweeps/lr_tiny.py')
  add_worker_arguments(parser, 'sweep.storage, else an SQLite file in the sweep directory',
                       'write the summary')
  parser.add_argument('--summarize', default=None, metavar='DIR_or_URL',
                      help='write and print the summary of a sweep (its directory, or its '
                           'storage URL) and exit')
  parser.add_argument('--study', default=None,
                      help='with --summarize URL: the study, when the store holds several')
  return parser


def add_worker_arguments(parser: argparse.ArgumentParser, default_store: str,
                         end: str) -> None:
  """--workers, --storage and --no_summary, shared by `sweep` and `scaling run`."""
  parser.add_argument('--workers', type=int, default=1,
                      help='worker processes to start on this machine (default 1: this one)')
  parser.add_argument('--storage', default=None,
                      help='study store shared by all workers, an SQLAlchemy URL such as '
                           f'postgresql+psycopg://user@host:5432/db (default: {default_store})')
  parser.add_argument('--no_summary', action='store_true',
                      help=f'do not {end} at the end (extra workers)')


def main(argv: list[str]) -> int:
  from train.config import split_overrides  # pylint: disable=import-outside-toplevel
  overrides, rest = split_overrides(argv)
  args = _parser().parse_args(rest)
  if args.summarize:
    return summarize_command(args.summarize, args.study)
  if not args.config:
    raise UserError('launch.py sweep: pass --config configs/sweeps/<sweep>.py, or --summarize '
                    'DIR_or_URL')
  from train.config import load_config  # pylint: disable=import-outside-toplevel
  from experiments import sweep_study  # pylint: disable=import-outside-toplevel
  sweep = sweep_study.build_sweep(load_config(args.config, overrides), args.storage)
  return run_sweep(sweep, argv, args.workers, args.no_summary)


def run_sweep(sweep, argv: list[str], workers: int, no_summary: bool,
              verb: tuple[str, ...] = ('sweep',)) -> int:
  """Opens the study of a checked `sweep` and works on it: in this process, or in `workers`
  processes started as `launch.py VERB... argv`; then (process 0) writes the summary."""
  if workers < 1:
    raise UserError(f'--workers={workers} must be at least 1')
  from sharding.distributed import initialize  # pylint: disable=import-outside-toplevel
  initialize(sweep.run_config.distributed)  # a trial spanning several processes
  import jax  # pylint: disable=import-outside-toplevel
  from experiments import sweep_study  # pylint: disable=import-outside-toplevel
  if jax.process_count() > 1 and workers > 1:
    raise UserError('--workers must be 1 when a trial spans several processes (distributed)')
  study = sweep_study.open_study(sweep) if jax.process_index() == 0 else None
  if study is not None:
    print(f'sweep {sweep.name}: {sweep.trials} trials over '
          f'{", ".join(d.key for d in sweep.dims)}; study in {sweep.storage_url}; '
          f'runs in {sweep.directory}/', flush=True)
  if workers > 1:
    code = _run_local_workers(argv, workers, sweep.storage_url, verb)
    if code:
      return code
  else:
    from experiments.sweep_worker import run_worker  # pylint: disable=import-outside-toplevel
    run_worker(sweep, study)
  if study is not None and not no_summary:
    from experiments.sweep_summary import summarize  # pylint: disable=import-outside-toplevel
    print(summarize(study, sweep.directory, sweep.sweep_cfg.best_curves))
    print(sweep_study.progress_line(study, sweep.name, sweep.trials), flush=True)
  return 0


def _without_workers_flag(argv: list[str]) -> list[str]:
  kept, skip = [], False
  for arg in argv:
    if skip:
      skip = False
    elif arg == '--workers':
      skip = True
    elif not arg.startswith('--workers='):
      kept.append(arg)
  return kept


def _run_local_workers(argv: list[str], count: int, storage_url: str,
                       verb: tuple[str, ...] = ('sweep',)) -> int:
  """Starts `count` workers (this command, one worker each) and waits; SIGTERM reaches each."""
  command = [sys.executable, str(ROOT / 'launch.py'), *verb, *_without_workers_flag(argv),
             '--workers', '1', '--no_summary', '--storage', storage_url]
  env = dict(os.environ, PYTHONUNBUFFERED='1')
  workers = [subprocess.Popen(command, env=env) for _ in range(count)]

  def forward(signum, frame):  # pylint: disable=unused-argument
    for worker in workers:
      if worker.poll() is None:
        worker.send_signal(signum)
  previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
  try:
    codes = [worker.wait() for worker in workers]
  finally:
    for sig, handler in previous.items():
      signal.signal(sig, handler)
  for wanted in (EXIT_USER_ERROR, EXIT_PREEMPTED):
    if wanted in codes:
      return wanted
  return next((code if code > 0 else 1 for code in codes if code), 0)


def _locate(target: str, study_name: str | None):
  """(storage URL, study name, directory for the summary) of a sweep directory or a URL."""
  from experiments import sweep_study  # pylint: disable=import-outside-toplevel
  if '://' in target:
    return target, study_name, None
  directory = Path(target)
  sweep_file = directory / sweep_study.SWEEP_FILE
  if sweep_file.is_file():
    recorded = json.loads(sweep_file.read_text())
    return recorded['storage'], study_name or recorded['study'], directory
  if (directory / sweep_study.STUDY_DB).is_file():
    return sweep_study.default_storage(directory), study_name, directory
  raise UserError(f'{target} is neither a sweep directory (with {sweep_study.SWEEP_FILE} or '
                  f'{sweep_study.STUDY_DB}) nor a storage URL; pass runs/sweeps/<name> or the '
                  '--storage URL of the sweep')


def summarize_command(target: str, study_name: str | None) -> int:
  import optuna  # pylint: disable=import-outside-toplevel
  from experiments import sweep_study  # pylint: disable=import-outside-toplevel
  from experiments.sweep_summary import summarize  # pylint: disable=import-outside-toplevel
  url, study_name, directory = _locate(target, study_name)
  storage = sweep_study.open_storage(url)
  names = optuna.study.get_all_study_names(storage)
  if study_name is None:
    if len(names) != 1:
      raise UserError(f'{url} holds {len(names)} studies ({", ".join(names) or "none"}); name '
                      'one with --study')
    study_name = names[0]
  if study_name not in names:
    raise UserError(f'{url} holds no study {study_name!r} (it has: {", ".join(names) or "none"})')
  study = optuna.load_study(study_name=study_name, storage=storage)
  if directory is None:
    recorded = study.user_attrs.get('sweep_dir')
    directory = Path(recorded) if recorded and Path(recorded).is_dir() else (
        Path('runs') / 'sweeps' / study_name)
  print(summarize(study, directory))
  print(sweep_study.progress_line(study, study_name, study.user_attrs.get('trials', 0) or
                                  len(study.trials)))
  return 0
