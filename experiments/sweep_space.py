"""The search space of a sweep: `config.sweep.space` parsed, checked, and turned into trial configs.

A sweep config is a run config plus a `sweep` section (configs/sweeps/base.py). `sweep.space`
mirrors the run config: each leaf is a config key and holds a string saying how to vary it,

  choice(1e-3, 3e-3, 1e-2)              one of these values (the grid sampler takes only choices)
  choice(1e-4, 1e-3, 1e-2, log=True)    the same, plotted on a log axis
  uniform(0.9, 0.999)                   a float in [low, high]
  loguniform(1e-4, 1e-1)                a float, uniform in log space (= uniform(..., log=True))
  int(1, 8)  int(16, 256, log=True)     an integer in [low, high] (also step=, as in Optuna)

so `c.sweep.space.optim.lr = 'loguniform(1e-4, 1e-1)'` sweeps `optim.lr`, and the command line can
change it like any value (`--config.sweep.space.optim.lr='choice(1e-3, 3e-3)'`). Every mistake is
found before any trial runs (`parse_space`): an unknown key, a value of the key's wrong type, an
empty range, a log range reaching zero, a grid over a continuous range, and any point of the
space that makes an invalid run config (checked at every grid point, or at the range ends).
"""

import ast
import dataclasses
import difflib
import itertools
import math
from typing import Any

import ml_collections
import optuna

from errors import UserError
from train.config import flatten, get_value, split_section, set_value, validate

KINDS = ('choice', 'uniform', 'loguniform', 'int')
NOT_SWEEPABLE = ('name', 'run_root')  # the sweep names and places its trials itself
_MAX_CORNERS = 256  # run configs checked per space, at most


@dataclasses.dataclass(frozen=True)
class Dimension:
  """One swept config key: `key` is also the Optuna parameter name."""
  key: str
  kind: str  # choice | uniform | int
  values: tuple = ()  # of a choice
  low: Any = None  # of a range
  high: Any = None
  step: int | None = None  # of an int range
  log: bool = False
  spec: str = ''  # as written in the config

  @property
  def is_choice(self) -> bool:
    return self.kind == 'choice'

  def distribution(self) -> optuna.distributions.BaseDistribution:
    if self.kind == 'choice':
      return optuna.distributions.CategoricalDistribution(self.values)
    if self.kind == 'uniform':
      return optuna.distributions.FloatDistribution(self.low, self.high, log=self.log)
    return optuna.distributions.IntDistribution(self.low, self.high, log=self.log,
                                                step=self.step or 1)

  def suggest(self, trial: optuna.Trial):
    if self.kind == 'choice':
      return trial.suggest_categorical(self.key, self.values)
    if self.kind == 'uniform':
      return trial.suggest_float(self.key, self.low, self.high, log=self.log)
    return trial.suggest_int(self.key, self.low, self.high, step=self.step or 1, log=self.log)

  def corners(self) -> tuple:
    """The values checked before the sweep starts: every choice, or both ends of a range."""
    return self.values if self.is_choice else (self.low, self.high)


def _fail(key: str, spec: str, why: str) -> UserError:
  return UserError(f'sweep.space.{key}={spec!r}: {why}')


def _parse_call(key: str, spec: str) -> tuple[str, list, dict]:
  """'kind(a, b, log=True)' -> ('kind', [a, b], {'log': True}), arguments as Python literals."""
  try:
    call = ast.parse(spec.strip(), mode='eval').body
    if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name)):
      raise ValueError
    args = [ast.literal_eval(arg) for arg in call.args]
    keywords = {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords}
  except (SyntaxError, ValueError, TypeError):
    raise _fail(key, spec, f'write one of {", ".join(k + "(...)" for k in KINDS)} with literal '
                'values, e.g. loguniform(1e-4, 1e-1)') from None
  if call.func.id not in KINDS:
    raise _fail(key, spec, f'unknown kind {call.func.id!r}; use one of {", ".join(KINDS)}')
  return call.func.id, args, keywords


def _is_number(value) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool)


def _fits(value, current) -> bool:
  """Whether `value` can stand where the config holds `current`."""
  if isinstance(current, bool):
    return isinstance(value, bool)
  if isinstance(current, int):
    return isinstance(value, int) and not isinstance(value, bool)
  if isinstance(current, float):
    return _is_number(value)
  if isinstance(current, str):
    return isinstance(value, str)
  return current is None and isinstance(value, (str, int, float, bool))


def parse_dimension(key: str, spec, current) -> Dimension:
  """The dimension `spec` of config key `key` whose current value is `current`."""
  if not isinstance(spec, str):
    raise _fail(key, spec, 'must be a string such as "choice(1, 2)" or "uniform(0.0, 1.0)"')
  kind, args, keywords = _parse_call(key, spec)
  allowed = {'choice': {'log'}, 'uniform': {'log'}, 'loguniform': set(), 'int': {'log', 'step'}}
  unknown = set(keywords) - allowed[kind]
  if unknown:
    raise _fail(key, spec, f'{kind}() takes no argument {sorted(unknown)[0]!r}')
  log = keywords.get('log', kind == 'loguniform')
  if not isinstance(log, bool):
    raise _fail(key, spec, 'log= must be True or False')
  type_name = type(current).__name__
  if kind == 'choice':
    if not args:
      raise _fail(key, spec, 'an empty choice; list at least one value')
    bad = next((v for v in args if not _fits(v, current)), None)
    if bad is not None:
      raise _fail(key, spec, f'{bad!r} is not a {type_name} like the config value {current!r}')
    values = tuple(float(v) for v in args) if isinstance(current, float) else tuple(args)
    if len(set(values)) != len(values):
      raise _fail(key, spec, 'a value is listed twice')
    if log and not all(_is_number(v) and v > 0 for v in values):
      raise _fail(key, spec, 'a log axis needs positive numbers')
    return Dimension(key, 'choice', values=values, log=log, spec=spec)
  if len(args) != 2 or not all(_is_number(v) for v in args):
    raise _fail(key, spec, f'{kind}() takes two numbers, low and high')
  low, high = args
  if kind == 'int':
    if not (isinstance(current, int) and not isinstance(current, bool)):
      raise _fail(key, spec, f'int() needs an integer key, but {key} is a {type_name} '
                  f'({current!r}); use ' + ('uniform()' if isinstance(current, float) else
                                            'choice()'))
    step = keywords.get('step', 1)
    if not all(isinstance(v, int) for v in (low, high, step)) or step < 1:
      raise _fail(key, spec, 'int() takes integer bounds and a positive integer step')
    if log and step != 1:
      raise _fail(key, spec, 'int(..., log=True) cannot have a step')
  elif not isinstance(current, float):
    raise _fail(key, spec, f'{kind}() needs a float key, but {key} is a {type_name} '
                f'({current!r}); use ' + ('int()' if isinstance(current, int) else 'choice()'))
  if not low < high:
    raise _fail(key, spec, f'an empty range (low {low} is not below high {high})')
  if log and low <= 0:
    raise _fail(key, spec, f'a log range must stay above zero (low is {low})')
  if kind == 'int':
    return Dimension(key, 'int', low=low, high=high, step=keywords.get('step', 1), log=log,
                     spec=spec)
  return Dimension(key, 'uniform', low=float(low), high=float(high), log=log, spec=spec)


def parse_space(space, run_config: ml_collections.ConfigDict, sampler: str) -> list[Dimension]:
  """The checked dimensions of `sweep.space` over `run_config`; UserError on any mistake."""
  specs = flatten(space)
  if not specs:
    raise UserError('sweep.space is empty; add at least one key, e.g. '
                    "c.sweep.space.optim.lr = 'loguniform(1e-4, 1e-1)'")
  known = flatten(run_config)
  dims = []
  for key, spec in specs.items():
    if key not in known:
      close = difflib.get_close_matches(key, list(known), n=1)
      hint = f"; did you mean '{close[0]}'?" if close else '; see configs/base.py for every key'
      raise UserError(f"sweep.space.{key}: unknown config key '{key}'{hint}")
    if key in NOT_SWEEPABLE or isinstance(known[key], (list, tuple, dict)):
      raise UserError(f'sweep.space.{key}: {key} cannot be swept; sweep a model, data, training '
                      'or optimizer value')
    dims.append(parse_dimension(key, spec, known[key]))
  if sampler == 'grid':
    continuous = next((d for d in dims if not d.is_choice), None)
    if continuous is not None:
      raise UserError(f'sweep.space.{continuous.key}={continuous.spec!r} is a range, and a grid '
                      'needs a finite list; write choice(...) or set sweep.sampler=random or tpe')
  _check_corners(dims, run_config)
  return dims


def grid_points(dims: list[Dimension]) -> list[dict]:
  """Every combination of the choices, in the order written (the last key varies fastest)."""
  return [dict(zip((d.key for d in dims), values))
          for values in itertools.product(*(d.values for d in dims))]


def point_dimensions(points: list[dict]) -> list[Dimension]:
  """Choice dimensions that hold explicit grid points (every key's values, in order of first
  appearance), so Optuna can record each queued point's parameters."""
  keys = list(dict.fromkeys(key for point in points for key in point))
  if any(set(point) != set(keys) for point in points):
    raise ValueError('every explicit grid point must set the same keys')
  values = {key: tuple(dict.fromkeys(point[key] for point in points)) for key in keys}
  return [Dimension(key, 'choice', values=values[key],
                    spec='choice(' + ', '.join(map(repr, values[key])) + ')') for key in keys]


def _check_corners(dims: list[Dimension], run_config) -> None:
  """Every grid point, or every combination of range ends, makes a valid run config."""
  for values in itertools.islice(itertools.product(*(d.corners() for d in dims)), _MAX_CORNERS):
    params = dict(zip((d.key for d in dims), values))
    try:
      validate(trial_config(run_config, params))
    except UserError as e:
      shown = ', '.join(f'{k}={v!r}' for k, v in params.items())
      raise UserError(f'the sweep point {shown} makes an invalid run: {e}') from None


def trial_config(run_config: ml_collections.ConfigDict, params: dict,
                 name: str | None = None) -> ml_collections.ConfigDict:
  """A copy of `run_config` with `params` ({dotted key: value}) set, and `name` if given."""
  config = ml_collections.ConfigDict(run_config.to_dict())
  for key, value in params.items():
    set_value(config, key, float(value) if isinstance(get_value(config, key), float) else value)
  if name is not None:
    config.name = name
  config.lock()
  return config


def split_sweep_config(config: ml_collections.ConfigDict):
  """(run config without the `sweep` section, the sweep section) of a sweep config."""
  return split_section(config, 'sweep', 'configs/sweeps/lr_tiny.py (configs/sweeps/base.py '
                       'lists its keys)')


def describe(params: dict) -> str:
  """'optim.lr=0.003, optim.warmup_steps=10' with short numbers."""
  return ', '.join(f'{k}={v:.4g}' if isinstance(v, float) else f'{k}={v}'
                   for k, v in params.items())


def finite(value) -> bool:
  return isinstance(value, (int, float)) and math.isfinite(value)
