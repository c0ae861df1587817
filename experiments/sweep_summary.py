"""Reading a sweep: a table of its trials, plots, and the best trial's config as a file.

`summarize(study, directory)` writes into the sweep directory
  trials.csv, trials.md    every trial, best first: metric, parameters, state, steps, wall time
  metric_vs_<key>.png      the metric against each swept parameter (log axis for a log space),
                           one line per value of the other parameter when there are two
  history.png              the optimisation history (optuna.visualization.matplotlib)
  curves.png               validation and train loss of the best trials on one axis
  importance.png           parameter importances (Optuna's PED-ANOVA: what it takes to be among
                           the best 30%), with two or more parameters and at least
                           MIN_TRIALS_FOR_IMPORTANCE complete trials
  best_config.py           the best trial's full run config: `launch.py train --config` it
and returns the table as console text. It reads only the study and the run directories.
"""

import csv
import functools
import io
import math
import pprint
import warnings
from pathlib import Path

import matplotlib
import ml_collections

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
import optuna  # noqa: E402
from optuna.trial import TrialState  # noqa: E402
from optuna.visualization import matplotlib as optuna_plots  # noqa: E402

from experiments import sweep_space, sweep_study  # noqa: E402
from train.metrics import read_metrics  # noqa: E402
from train.progress import format_seconds  # noqa: E402

MIN_TRIALS_FOR_IMPORTANCE = 8
IMPORTANCE_QUANTILE = 0.3  # importance for reaching the best 30% of trials (Optuna's PED-ANOVA)
_STATE_ORDER = {'complete': 0, 'pruned': 1, 'failed': 2, 'retried': 3, 'running': 4,
                'waiting': 5}


def _state(trial, retried: set[int]) -> str:
  if trial.state == TrialState.FAIL and trial.number in retried:
    return 'retried'
  return {TrialState.COMPLETE: 'complete', TrialState.PRUNED: 'pruned', TrialState.FAIL: 'failed',
          TrialState.RUNNING: 'running', TrialState.WAITING: 'waiting'}[trial.state]


def _note(trial, state: str) -> str:
  reason = trial.user_attrs.get('reason', '')
  if state in ('retried', 'failed') and reason in ('running', ''):
    return 'worker lost (no heartbeat)'
  if state == 'complete':
    resumed = trial.user_attrs.get('resumed_from_step')
    return f'resumed from step {resumed}' if resumed is not None else ''
  return reason if state in ('failed', 'retried', 'pruned') else ''


def trial_rows(study: optuna.Study, dims: list) -> list[dict]:
  """One dict per trial, best first (complete by metric, then pruned, failed, ...)."""
  trials = study.get_trials(deepcopy=False)
  retried = sweep_study.retried_numbers(trials)
  rows = []
  for trial in trials:
    if trial.user_attrs.get('reason') == sweep_study.SUPERFLUOUS:
      continue
    state = _state(trial, retried)
    wall = trial.user_attrs.get('wall_s')
    row = {'trial': trial.number, 'state': state,
           'metric': trial.value if trial.state in (TrialState.COMPLETE, TrialState.PRUNED)
           else None}
    for dim in dims:
      row[dim.key] = trial.params.get(dim.key)
    row.update(steps=trial.user_attrs.get('steps'), wall_s=wall,
               run_dir=trial.user_attrs.get('run_dir', ''), note=_note(trial, state))
    rows.append(row)
  def order(row):
    value = row['metric']
    return (_STATE_ORDER[row['state']], value if sweep_space.finite(value) else math.inf,
            row['trial'])
  return sorted(rows, key=order)


def _cell(key: str, value) -> str:
  if value is None:
    return '-'
  if key == 'wall_s':
    return format_seconds(value)
  if isinstance(value, float):
    return f'{value:.4f}' if key == 'metric' else f'{value:.4g}'
  return str(value)


def _columns(rows: list[dict], metric: str) -> list[tuple[str, str]]:
  keys = list(rows[0]) if rows else ['trial', 'state', 'metric']
  return [(key, metric if key == 'metric' else 'wall' if key == 'wall_s' else key)
          for key in keys]


def format_table(rows: list[dict], metric: str, markdown: bool = False) -> str:
  columns = _columns(rows, metric)
  cells = [[_cell(key, row[key]) for key, _ in columns] for row in rows]
  headers = [title for _, title in columns]
  if markdown:
    lines = ['| ' + ' | '.join(headers) + ' |', '|' + '|'.join('---' for _ in headers) + '|']
    return '\n'.join(lines + ['| ' + ' | '.join(row) + ' |' for row in cells]) + '\n'
  widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h)
            for i, h in enumerate(headers)]
  lines = ['  '.join(h.ljust(w) for h, w in zip(headers, widths))]
  lines += ['  '.join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
  return '\n'.join(lines)


def _write_csv(rows: list[dict], metric: str, path: Path) -> None:
  out = io.StringIO()
  columns = [(key, metric if key == 'metric' else key) for key, _ in _columns(rows, metric)]
  writer = csv.writer(out)
  writer.writerow([title for _, title in columns])  # raw values: wall_s in seconds
  for row in rows:
    writer.writerow(['' if row[key] is None else row[key] for key, _ in columns])
  path.write_text(out.getvalue())


def _plot_metric_vs_params(rows: list[dict], dims: list, metric: str, directory: Path):
  done = [r for r in rows if r['state'] == 'complete' and sweep_space.finite(r['metric'])]
  dims = [d for d in dims if not d.is_choice or len(d.values) > 1]  # a constant says nothing
  paths = []
  for dim in dims:
    others = [d for d in dims if d is not dim]
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    groups = {None: done}
    if len(others) == 1 and others[0].is_choice and len(others[0].values) <= 8:
      other = others[0]
      groups = {v: [r for r in done if r[other.key] == v] for v in other.values}
    for value, group in groups.items():
      group = sorted(group, key=lambda r: r[dim.key])
      label = None if value is None else f'{others[0].key}={value:g}' if isinstance(
          value, float) else f'{others[0].key}={value}'
      style = 'o' if value is None else 'o-'
      ax.plot([str(r[dim.key]) if isinstance(r[dim.key], str) else r[dim.key] for r in group],
              [r['metric'] for r in group], style, label=label)
    if done:
      best = done[0]
      ax.plot([best[dim.key]], [best['metric']], '*', color='black', ms=14, label='best')
    if dim.log:
      ax.set_xscale('log')
    ax.set_xlabel(dim.key + (' (log)' if dim.log else ''))
    ax.set_ylabel(metric)
    ax.set_title(f'{metric} against {dim.key}')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = directory / f'metric_vs_{dim.key}.png'
    fig.savefig(path)
    plt.close(fig)
    paths.append(path)
  return paths


def _plot_curves(rows: list[dict], directory: Path, count: int) -> Path | None:
  best = [r for r in rows if r['state'] == 'complete' and r['run_dir']][:count]
  if not best:
    return None
  fig, ax = plt.subplots(figsize=(7, 4.4), dpi=110)
  for index, row in enumerate(best):
    run_dir = directory / row['run_dir']
    color = f'C{index}'
    train = read_metrics(run_dir, 'train')
    evals = read_metrics(run_dir, 'eval')
    label = f"trial {row['trial']}: " + ', '.join(
        f"{k.split('.')[-1]}={_cell(k, row[k])}" for k in row if '.' in k)
    ax.plot([r['step'] for r in train], [r['loss'] for r in train], color=color, lw=0.8,
            alpha=0.45)
    ax.plot([r['step'] for r in evals], [r['loss'] for r in evals], 'o-', color=color, lw=1.5,
            ms=3, label=label)
  ax.set_xlabel('step')
  ax.set_ylabel('loss (nats/token): validation (dots), train (thin)')
  ax.set_title(f'the {len(best)} best trials')
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7)
  fig.tight_layout()
  path = directory / 'curves.png'
  fig.savefig(path)
  plt.close(fig)
  return path


def _save_optuna_plot(plot, study: optuna.Study, path: Path) -> Path:
  with warnings.catch_warnings(), matplotlib.rc_context():  # optuna switches to its own style
    warnings.simplefilter('ignore')
    ax = plot(study)
    figure = ax.figure if hasattr(ax, 'figure') else ax.flat[0].figure
    figure.set_size_inches(7, 4.4)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
  return path


def write_best_config(study: optuna.Study, best, directory: Path) -> Path:
  """best_config.py: the run config of trial `best`, runnable with `launch.py train --config`."""
  run_config = ml_collections.ConfigDict(study.user_attrs['run_config'])
  name = f'{study.study_name}-best'
  config = sweep_space.trial_config(run_config, best.params, name).to_dict()
  path = directory / 'best_config.py'
  path.write_text(
      f'"""The best trial ({sweep_study.original_number(best)}) of the sweep '
      f'{study.study_name}: {study.user_attrs.get("metric", "metric")} {best.value:.4f} with '
      f'{sweep_space.describe(best.params)}.\n\nTrain it again (into '
      f'<run_root>/{name}/):\n\n    python launch.py train --config {path}\n"""\n\n'
      'import ml_collections\n\n'
      f'CONFIG = {pprint.pformat(config, width=100, sort_dicts=False)}\n\n\n'
      'def get_config():\n  return ml_collections.ConfigDict(CONFIG)\n')
  return path


def summarize(study: optuna.Study, directory: Path, best_curves: int = 5) -> str:
  """Writes the tables, plots and best config into `directory`; returns the console text."""
  directory = Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  space = study.user_attrs.get('space', {})
  dims = [sweep_space.parse_dimension(key, spec, _example(spec)) for key, spec in space.items()]
  metric = study.user_attrs.get('metric', 'value')
  rows = trial_rows(study, dims)
  table = format_table(rows, metric)
  _write_csv(rows, metric, directory / 'trials.csv')
  (directory / 'trials.md').write_text(format_table(rows, metric, markdown=True))
  written = ['trials.csv', 'trials.md']
  complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
              if sweep_space.finite(t.value)]
  if complete:
    written += [p.name for p in _plot_metric_vs_params(rows, dims, metric, directory)]
    written.append(_save_optuna_plot(optuna_plots.plot_optimization_history, study,
                                     directory / 'history.png').name)
    curves = _plot_curves(rows, directory, best_curves)
    written += [curves.name] if curves else []
    if len(dims) >= 2 and len(complete) >= MIN_TRIALS_FOR_IMPORTANCE:
      evaluator = optuna.importance.PedAnovaImportanceEvaluator(
          target_quantile=IMPORTANCE_QUANTILE)
      written.append(_save_optuna_plot(
          functools.partial(optuna_plots.plot_param_importances, evaluator=evaluator), study,
          directory / 'importance.png').name)
    best = min(complete, key=lambda t: t.value)
    if 'run_config' in study.user_attrs:
      written.append(write_best_config(study, best, directory).name)
  return f'{table}\nwritten to {directory}: {", ".join(written)}'


def _example(spec: str):
  """A config value of the type a stored spec was checked against (for re-parsing it)."""
  kind = spec.strip().split('(')[0]
  if kind == 'int':
    return 0
  if kind in ('uniform', 'loguniform'):
    return 0.0
  return None  # a choice: any literal fits
