"""`launch.py scaling SUBCOMMAND ...`: run IsoFLOP studies, fit scaling laws, predict from a fit.

  run      an IsoFLOP study of a scaling config (configs/scaling/*.py): plans, trains (through
           the sweep engine: resumable, --workers, --storage) and fits; `scaling --config X`
           is the same
  fit      fit Chinchilla's approaches 1-3 with bootstrap intervals to a points CSV (or to
           finished run directories); writes scaling_fit.json, scaling_report.md and plots
  predict  compute-optimal N, D and the predicted loss for budgets, from a scaling_fit.json

Each sub-command is one function in `SUBCOMMANDS`, taking its own argv and returning the exit
status.
"""

import argparse
import sys
from pathlib import Path

from errors import UserError


class _Parser(argparse.ArgumentParser):
  def error(self, message):
    raise UserError(f'{self.prog}: {message}; see {self.prog} --help')


def cmd_fit(argv: list[str]) -> int:
  parser = _Parser(prog='launch.py scaling fit', description=(
      'Fit approaches 1 (envelope), 2 (IsoFLOP parabolas) and 3 (parametric L(N, D)) of '
      'Hoffmann et al. 2022 with bootstrap intervals; writes scaling_fit.json, scaling_report.md '
      'and plots into --out.'))
  source = parser.add_mutually_exclusive_group(required=True)
  source.add_argument('--points', help='CSV with columns params,tokens,loss (optional flops, '
                      'default 6ND; budget: IsoFLOP curve label)')
  source.add_argument('--runs', nargs='+', help='finished run directories (config.json and '
                      'metrics.jsonl); their points and loss curves are written into --out too')
  parser.add_argument('--curves', help='JSON list of loss curves {params, tokens, flops, loss} '
                      'for approach 1 (default: the Pareto frontier of the points)')
  parser.add_argument('--out', default='scaling_fit', help='output directory (default scaling_fit)')
  parser.add_argument('--flops_convention', default=None,
                      help='with --runs: count FLOPs by this convention (6n, 6n_attention, '
                           "chinchilla; default each run's scaling.flops_convention); with "
                           '--points: the name the report gives the flops column')
  parser.add_argument('--samples', type=int, default=100, help='bootstrap resamples (default 100)')
  parser.add_argument('--confidence', type=float, default=0.95, help='interval (default 0.95)')
  parser.add_argument('--seed', type=int, default=0, help='seed of the resampling (default 0)')
  parser.add_argument('--lbfgs_starts', type=int, default=20,
                      help='approach 3: L-BFGS from this many of the paper\'s 4,500 grid starts, '
                           'those with the lowest objective (0: all of them; default 20)')
  args = parser.parse_args(argv)
  if args.samples < 1 or not 0 < args.confidence < 1 or args.lbfgs_starts < 0:
    raise UserError('--samples must be >= 1, --confidence in (0, 1), --lbfgs_starts >= 0')
  from experiments import scaling_points as sp
  from models.counting import FLOPS_CONVENTION_NAMES
  out = Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  if args.runs:
    if args.flops_convention and args.flops_convention not in FLOPS_CONVENTION_NAMES:
      raise UserError(f'--flops_convention {args.flops_convention!r} is not one of '
                      f'{", ".join(FLOPS_CONVENTION_NAMES)}')
    points, curves = sp.points_from_runs(args.runs, args.flops_convention)
    sp.write_points_csv(points, out / 'points.csv')
    sp.write_curves_json(curves, out / 'curves.json')
    convention = ', '.join(f'{c}: {FLOPS_CONVENTION_NAMES[c]}' for c in points['flops_convention'])
    source = f'{len(args.runs)} run directories'
  else:
    points = sp.read_points_csv(args.points)
    curves = sp.read_curves_json(args.curves) if args.curves else None
    convention = (args.flops_convention or points['flops_source'])
    source = args.points
  fit_and_report(points, curves, out, convention, source, args.samples, args.confidence,
                 args.seed, args.lbfgs_starts)
  return 0


def fit_and_report(points: dict, curves, out: Path, convention: str, source: str,
                   samples: int = 100, confidence: float = 0.95, seed: int = 0,
                   lbfgs_starts: int = 20) -> dict:
  """Fits approaches 1-3 with bootstrap intervals to `points` (and loss `curves`), writes
  scaling_fit.json, scaling_report.md and the plots into `out`, prints the report; the fit."""
  import numpy as np
  from experiments.scaling_bootstrap import fit_all
  from experiments.scaling_fits import group_budgets
  from experiments.scaling_plots import write_plots
  from experiments.scaling_report import fit_document, format_report, write_outputs
  budgets = points['budget'] if 'budget' in points else group_budgets(points['flops'])
  points['budget_label'] = np.asarray(budgets)
  fit = fit_all({**points, 'budget': budgets}, curves, samples, confidence, seed, lbfgs_starts)
  doc = fit_document(fit, convention, source)
  doc['plots'] = write_plots(doc, points, curves, out)
  write_outputs(doc, out)
  print(format_report(doc))
  print(f'wrote {out}/scaling_fit.json, {out}/scaling_report.md and {len(doc["plots"])} plots')
  return doc


def cmd_predict(argv: list[str]) -> int:
  parser = _Parser(prog='launch.py scaling predict', description=(
      'Compute-optimal parameters N_opt, tokens D_opt and the predicted loss for compute '
      'budgets, per approach, from a scaling_fit.json written by `scaling fit`.'))
  parser.add_argument('--fit', required=True, help='a scaling_fit.json')
  parser.add_argument('--flops', type=float, nargs='+', required=True,
                      help='compute budgets in FLOPs, e.g. 1e21')
  args = parser.parse_args(argv)
  import json
  from experiments.scaling_report import format_prediction
  try:
    doc = json.loads(Path(args.fit).read_text())
  except (OSError, ValueError) as e:
    raise UserError(f'cannot read {args.fit} ({type(e).__name__}); pass a scaling_fit.json '
                    'written by `launch.py scaling fit`') from None
  if any(c <= 0 for c in args.flops):
    raise UserError('--flops must be positive')
  print('\n\n'.join(format_prediction(doc, c) for c in args.flops))
  return 0


def cmd_run(argv: list[str]) -> int:
  from experiments.scaling_study import main as run_study  # pylint: disable=import-outside-toplevel
  return run_study(argv)


SUBCOMMANDS = {'run': cmd_run, 'fit': cmd_fit, 'predict': cmd_predict}


def main(argv: list[str]) -> int:
  if not argv or argv[0] in ('-h', '--help'):
    print(__doc__.strip())
    return 0
  if argv[0].startswith('--config'):  # `scaling --config X`: run the study of X
    argv = ['run'] + argv
  if argv[0] not in SUBCOMMANDS:
    raise UserError(f'unknown scaling sub-command {argv[0]!r}; use one of '
                    f'{", ".join(SUBCOMMANDS)} (launch.py scaling --help)')
  return SUBCOMMANDS[argv[0]](argv[1:])


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))
