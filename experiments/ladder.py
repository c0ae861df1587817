"""Model ladders: Transformer shapes that hit target non-embedding parameter counts.

The rule, stated once: a shape is (n_layers, d_model) with d_model a multiple of `head_dim`
(n_heads = d_model / head_dim, multi-head attention, d_ff from the model's default: 8/3 d_model
rounded up to 64 for SwiGLU, 4 d_model for GELU). Only shapes whose aspect ratio
d_model / n_layers lies within a factor `ASPECT_TOLERANCE` (2) of `aspect_ratio` are considered
(all shapes, where none does: a target too small for one layer of width `head_dim`). Among them,
those whose non-embedding count (models/counting.py, exact for the base model's norm, MLP and
biases) is within a factor `COUNT_TOLERANCE` (1.1) of the target, the one with the aspect ratio
nearest the aim wins; where none is that close, the count nearest in log wins. `ladder(...)` asks for `sizes` log-spaced targets between two counts.
"""

import dataclasses
import math

from errors import UserError
from models.config import TransformerConfig
from models.counting import non_embedding_param_count, param_count

ASPECT_TOLERANCE = 2.0
COUNT_TOLERANCE = 1.1
MAX_LAYERS = 128


@dataclasses.dataclass(frozen=True)
class Rung:
  target: float  # the non-embedding count asked for
  n_layers: int
  d_model: int
  n_heads: int
  head_dim: int
  d_ff: int
  non_embedding_params: int
  params: int

  def overrides(self) -> dict:
    """Config overrides that give this shape (keys as on the command line, without --config.)."""
    return {'model.n_layers': self.n_layers, 'model.d_model': self.d_model,
            'model.n_heads': self.n_heads, 'model.n_kv_heads': 0,
            'model.head_dim': self.head_dim, 'model.d_ff': 0}


def shape_config(base: TransformerConfig, n_layers: int, d_model: int,
                 head_dim: int) -> TransformerConfig:
  """The base model with this depth and width (multi-head, derived d_ff)."""
  return TransformerConfig(**{**dataclasses.asdict(base), 'n_layers': n_layers,
                              'd_model': d_model, 'n_heads': d_model // head_dim,
                              'n_kv_heads': 0, 'head_dim': head_dim, 'd_ff': 0}).derived()


def _candidates(base: TransformerConfig, target: float, head_dim: int):
  """(n_layers, d_model, non-embedding count) for widths up to a little past the target."""
  out = []
  for n_layers in range(1, MAX_LAYERS + 1):
    d_model = head_dim
    while True:
      count = non_embedding_param_count(shape_config(base, n_layers, d_model, head_dim))
      out.append((n_layers, d_model, count))
      if count > 2 * target:
        break
      d_model += head_dim
    if d_model == head_dim and count > 2 * target:
      break  # deeper shapes only grow
  return out


def fit_shape(base: TransformerConfig, target: float, aspect_ratio: float,
              head_dim: int) -> Rung:
  """The shape the rule assigns to one target non-embedding count."""
  if target <= 0:
    raise UserError(f'target parameter count {target:g} must be positive')
  candidates = _candidates(base, target, head_dim)
  window = [c for c in candidates
            if abs(math.log(c[1] / c[0] / aspect_ratio)) <= math.log(ASPECT_TOLERANCE) + 1e-12]
  pool = window or candidates
  close = [c for c in pool if abs(math.log(c[2] / target)) <= math.log(COUNT_TOLERANCE)]
  if close:
    n_layers, d_model, count = min(close, key=lambda c: abs(math.log(c[1] / c[0] / aspect_ratio)))
  else:
    n_layers, d_model, count = min(pool, key=lambda c: abs(math.log(c[2] / target)))
  cfg = shape_config(base, n_layers, d_model, head_dim)
  return Rung(target=float(target), n_layers=n_layers, d_model=d_model, n_heads=cfg.n_heads,
              head_dim=head_dim, d_ff=cfg.d_ff, non_embedding_params=count,
              params=param_count(cfg))


def log_spaced(sizes: int, low: float, high: float) -> list[float]:
  """`sizes` targets from `low` to `high`, evenly spaced in log."""
  if sizes < 1 or low <= 0 or high < low or (sizes > 1 and high == low):
    raise UserError(f'a ladder needs sizes >= 1 and 0 < min < max (got {sizes} sizes from '
                    f'{low:g} to {high:g}); fix --ladder, --ladder_min or --ladder_max')
  if sizes == 1:
    return [float(low)]
  step = math.log(high / low) / (sizes - 1)
  return [low * math.exp(i * step) for i in range(sizes)]


def ladder(base: TransformerConfig, sizes: int, low: float, high: float, aspect_ratio: float,
           head_dim: int) -> list[Rung]:
  """`sizes` distinct shapes for log-spaced non-embedding targets from `low` to `high`."""
  rungs = [fit_shape(base, target, aspect_ratio, head_dim)
           for target in log_spaced(sizes, low, high)]
  shapes = [(r.n_layers, r.d_model) for r in rungs]
  if len(set(shapes)) < len(shapes):
    raise UserError(f'{sizes} sizes from {low:g} to {high:g} give repeated shapes '
                    f'({", ".join(f"{l}x{d}" for l, d in shapes)}); ask for fewer sizes, a '
                    'wider range or a smaller scaling.ladder_head_dim')
  return rungs


def format_ladder(rungs: list[Rung], rule: str) -> str:
  """A table of the ladder for `launch.py info`."""
  lines = [f'model ladder ({rule}):',
           f'{"target":>10} {"layers":>6} {"d_model":>7} {"heads":>5} {"d_ff":>6} '
           f'{"non-emb params":>14} {"/target":>7} {"params":>12} {"d/L":>6}']
  for r in rungs:
    lines.append(f'{r.target:>10.3g} {r.n_layers:>6} {r.d_model:>7} {r.n_heads:>5} {r.d_ff:>6} '
                 f'{r.non_embedding_params:>14,} {r.non_embedding_params / r.target:>7.3f} '
                 f'{r.params:>12,} {r.d_model / r.n_layers:>6.1f}')
  return '\n'.join(lines)
