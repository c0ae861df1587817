"""The points table the fits read: from a CSV, or from finished run directories.

A points CSV has columns params, tokens, loss and optionally flops (default 6 N D), budget
(IsoFLOP curve label; default: FLOP counts grouped within 10%), non_embedding_params and name.
From run directories (`points_from_runs`): each run's config.json (model shape, batch, seq_len,
scaling.flops_convention) and metrics.jsonl ('train' records per logged step: the loss curve;
the last 'eval' record: the final validation loss) give one point (params counts every
parameter, as Chinchilla does) and one loss curve (tokens = step x batch x seq_len).
"""

import csv
import json
from pathlib import Path

import numpy as np

from errors import UserError
from models.config import TransformerConfig
from models.counting import non_embedding_param_count, param_count, training_flops_per_token
from train.metrics import read_metrics
from train.run_dir import read_config_json

REQUIRED = ('params', 'tokens', 'loss')
OPTIONAL = ('flops', 'budget', 'non_embedding_params')


def read_points_csv(path) -> dict:
  """Arrays per column; flops = 6 N D where the column is missing (`flops_source` says which)."""
  path = Path(path)
  if not path.exists():
    raise UserError(f'{path} does not exist; pass a CSV with columns params,tokens,loss[,flops]')
  with open(path, newline='') as f:
    rows = list(csv.DictReader(f))
  if not rows or any(c not in rows[0] for c in REQUIRED):
    raise UserError(f'{path} needs a header with columns params,tokens,loss (optional flops, '
                    'budget); found ' + ', '.join(rows[0] if rows else ['no rows']))
  points = {}
  try:
    for column in REQUIRED + OPTIONAL:
      if column in rows[0] and all(r[column] not in ('', None) for r in rows):
        points[column] = np.array([float(r[column]) for r in rows])
  except ValueError as e:
    raise UserError(f'{path}: a value is not a number ({e}); fix the CSV') from None
  if any((points[c] <= 0).any() for c in REQUIRED):
    raise UserError(f'{path}: params, tokens and loss must all be positive')
  if 'name' in rows[0]:
    points['name'] = [r['name'] for r in rows]
  points['flops_source'] = 'flops column' if 'flops' in points else '6 N D'
  if 'flops' not in points:
    points['flops'] = 6 * points['params'] * points['tokens']
  return points


def write_points_csv(points: dict, path) -> None:
  columns = [c for c in REQUIRED + OPTIONAL + ('name',) if c in points]
  with open(path, 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(columns)
    for i in range(len(points['params'])):
      writer.writerow([points[c][i] if c == 'name' else f'{float(points[c][i]):.8g}'
                       for c in columns])


def read_curves_json(path) -> list[dict]:
  """Loss curves: a JSON list of {params, tokens: [...], flops: [...], loss: [...]}."""
  try:
    raw = json.loads(Path(path).read_text())
    return [{'params': float(c['params']), **{k: np.asarray(c[k], float)
                                              for k in ('tokens', 'flops', 'loss')}} for c in raw]
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise UserError(f'{path} is not a loss-curves JSON ({type(e).__name__}: {e}); write a list '
                    'of {"params", "tokens", "flops", "loss"} objects') from None


def write_curves_json(curves: list[dict], path) -> None:
  Path(path).write_text(json.dumps([{k: (np.asarray(v).tolist() if k != 'params' else v)
                                     for k, v in c.items()} for c in curves]))


def run_point(run_dir, convention: str | None = None) -> tuple[dict, dict]:
  """(point, curve) of one finished run; `convention` overrides the run's own."""
  config = read_config_json(run_dir)
  evals = read_metrics(run_dir, 'eval')
  if config is None or not evals:
    raise UserError(f'{run_dir} has no config.json or no eval record; is it a finished run?')
  model = TransformerConfig.from_dict(config['model'])
  seq_len, batch = config['data']['seq_len'], config['train']['batch_size']
  convention = convention or config.get('scaling', {}).get('flops_convention', 'chinchilla')
  per_token = training_flops_per_token(model, seq_len, convention)
  final = max(evals, key=lambda r: r['step'])
  tokens = final['step'] * batch * seq_len
  point = {'name': Path(run_dir).name, 'params': param_count(model),
           'non_embedding_params': non_embedding_param_count(model), 'tokens': tokens,
           'flops': per_token * tokens, 'loss': float(final['loss']),
           'flops_convention': convention}
  train = sorted(read_metrics(run_dir, 'train'), key=lambda r: r['step'])
  curve_tokens = np.array([r['step'] * batch * seq_len for r in train], float)
  curve = {'params': point['params'], 'tokens': curve_tokens, 'flops': per_token * curve_tokens,
           'loss': np.array([float(r['loss']) for r in train])}
  return point, curve


def points_from_runs(run_dirs, convention: str | None = None) -> tuple[dict, list[dict]]:
  """The points table (arrays per column, plus names) and the loss curves of finished runs."""
  rows, curves = zip(*(run_point(d, convention) for d in run_dirs)) if run_dirs else ((), ())
  if not rows:
    raise UserError('no finished runs to read points from')
  points = {k: np.array([r[k] for r in rows], float)
            for k in ('params', 'non_embedding_params', 'tokens', 'flops', 'loss')}
  points['name'] = [r['name'] for r in rows]
  points['flops_convention'] = sorted({r['flops_convention'] for r in rows})
  return points, list(curves)
