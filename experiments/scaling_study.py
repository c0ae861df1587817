"""`launch.py scaling run`: an IsoFLOP study run end to end, through the sweep engine.

The study config (configs/scaling/base.py) names budgets and a model ladder. The runs are
planned (experiments/isoflop_plan.py: for each budget C and each rung N, D = C / FLOPs per
token, a cosine schedule as long as the run), queued as the explicit points of a grid sweep
(experiments/sweep_study.py), and trained by its workers: so a study resumes where it stopped,
reuses finished runs, spreads over `--workers N` here or over hosts sharing `--storage URL`,
and retries a run whose worker died from that run's checkpoint. Each run is an ordinary run
directory under `<run_root>/scaling/<name>/`. When every run has ended, the points and loss
curves of the complete runs are fitted (experiments/scaling_cli.py `fit_and_report`) into
`<run_root>/scaling/<name>/fit/`: scaling_fit.json, scaling_report.md and the plots.
"""

import argparse
from pathlib import Path

import ml_collections

from configs.sweeps.base import sweep_section
from errors import UserError
from experiments import sweep_space, sweep_study
from experiments.isoflop_plan import PlannedRun, format_plan, plan_study
from train.config import split_section, validate

FIT_DIR = 'fit'


def parse_budgets(text: str) -> list[float]:
  """'1e12,3e12' -> [1e12, 3e12]; UserError naming the fix on anything else."""
  try:
    budgets = [float(part) for part in str(text).split(',') if part.strip()]
  except ValueError:
    budgets = []
  if not budgets or any(b <= 0 for b in budgets):
    raise UserError(f'study.budgets={text!r} must be positive FLOP counts separated by commas, '
                    'e.g. --config.study.budgets=1e12,3e12,1e13')
  return budgets


def split_study_config(config: ml_collections.ConfigDict):
  """(run config without `study`, the study section) of a scaling config."""
  return split_section(config, 'study', 'configs/scaling/tiny_isoflop.py '
                       '(configs/scaling/base.py lists its keys)')


def plan(config) -> tuple[ml_collections.ConfigDict, ml_collections.ConfigDict,
                          list[PlannedRun], list[str]]:
  """(run config, study section, planned runs, skipped points) of a loaded scaling config."""
  run_config, study = split_study_config(config)
  if study.sizes < 2 or not 0 < study.min_params < study.max_params or study.min_steps < 1:
    raise UserError('study.sizes must be >= 2, 0 < study.min_params < study.max_params, and '
                    'study.min_steps >= 1')
  runs, skipped = plan_study(run_config, parse_budgets(study.budgets), study.sizes,
                             study.min_params, study.max_params, study.min_steps)
  if len(runs) < 3:
    raise UserError(f'the study plans only {len(runs)} runs; raise study.budgets or lower '
                    'study.min_steps (launch.py scaling run --dry_run shows the plan)')
  return run_config, study, runs, skipped


def build_study_sweep(run_config, study, runs: list[PlannedRun], storage_url: str | None):
  """The grid sweep whose points are the planned runs (their config overrides)."""
  sweep_cfg = sweep_section()
  sweep_cfg.name = run_config.name
  sweep_cfg.sampler = 'grid'
  points = [{k: v for k, v in run.overrides.items() if k != 'name'} for run in runs]
  dims = sweep_space.point_dimensions(points)
  for point in points:  # every run must be a valid config before any trains
    validate(sweep_space.trial_config(run_config, point))
  directory = Path(run_config.run_root) / 'scaling' / run_config.name
  url = storage_url or study.storage or sweep_study.default_storage(directory)
  return sweep_study.Sweep(run_config, sweep_cfg, dims, directory, url, points=tuple(points))


def complete_run_dirs(sweep) -> list[Path]:
  """The run directories of the study's complete trials (one per planned point at most)."""
  import optuna  # pylint: disable=import-outside-toplevel
  from optuna.trial import TrialState  # pylint: disable=import-outside-toplevel
  study = optuna.load_study(study_name=sweep.name,
                            storage=sweep_study.open_storage(sweep.storage_url))
  names = {t.user_attrs['run_dir'] for t in study.get_trials(deepcopy=False)
           if t.state == TrialState.COMPLETE and 'run_dir' in t.user_attrs}
  return [sweep.directory / name for name in sorted(names)]


def fit_study(sweep, study) -> dict:
  """Fits the complete runs of the study into <study dir>/fit/ (points, curves, report, plots)."""
  from experiments import scaling_points  # pylint: disable=import-outside-toplevel
  from experiments.scaling_cli import fit_and_report  # pylint: disable=import-outside-toplevel
  from models.counting import FLOPS_CONVENTION_NAMES  # pylint: disable=import-outside-toplevel
  run_dirs = complete_run_dirs(sweep)
  if len(run_dirs) < 3:
    raise UserError(f'only {len(run_dirs)} runs of the study completed; fits need at least 3 '
                    '(see the trials table for why the others did not)')
  out = sweep.directory / FIT_DIR
  out.mkdir(parents=True, exist_ok=True)
  points, curves = scaling_points.points_from_runs(run_dirs)
  scaling_points.write_points_csv(points, out / 'points.csv')
  scaling_points.write_curves_json(curves, out / 'curves.json')
  convention = sweep.run_config.scaling.flops_convention
  return fit_and_report(points, curves, out, f'{convention}: {FLOPS_CONVENTION_NAMES[convention]}',
                        f'{len(run_dirs)} runs of the study {sweep.name}', study.samples,
                        seed=sweep.run_config.seed, lbfgs_starts=study.lbfgs_starts)


def _parser() -> argparse.ArgumentParser:
  from experiments.scaling_cli import _Parser  # pylint: disable=import-outside-toplevel
  from experiments.sweep_cli import add_worker_arguments  # pylint: disable=import-outside-toplevel
  parser = _Parser(prog='launch.py scaling run', description=(
      'Run an IsoFLOP study: plan (budget, size) runs from the config\'s study section, train '
      'them through the sweep engine (resumable; --workers, --storage) and fit the scaling laws '
      'into <run_root>/scaling/<name>/fit/.'),
      epilog='Any config value can be overridden: --config.study.budgets=1e12,3e12 '
             '--config.study.sizes=5 (configs/scaling/base.py lists the study keys).')
  parser.add_argument('--config', required=True, help='scaling config, e.g. '
                      'configs/scaling/tiny_isoflop.py')
  add_worker_arguments(parser, 'study.storage, else an SQLite file in the study directory',
                       'summarize and fit')
  parser.add_argument('--dry_run', action='store_true', help='print the plan, train nothing')
  return parser


def main(argv: list[str]) -> int:
  """`launch.py scaling run ...` (also `launch.py scaling --config ...`)."""
  from experiments.sweep_cli import run_sweep  # pylint: disable=import-outside-toplevel
  from train.config import load_config, split_overrides  # pylint: disable=import-outside-toplevel
  overrides, rest = split_overrides(argv)
  args = _parser().parse_args(rest)
  run_config, study, runs, skipped = plan(load_config(args.config, overrides))
  print(format_plan(runs, skipped, run_config.scaling.flops_convention), flush=True)
  if args.dry_run:
    return 0
  sweep = build_study_sweep(run_config, study, runs, args.storage)
  code = run_sweep(sweep, argv, args.workers, args.no_summary, verb=('scaling', 'run'))
  import jax  # pylint: disable=import-outside-toplevel
  if code or args.no_summary or jax.process_index() != 0:
    return code
  fit_study(sweep, study)
  return 0
