"""Loading a run config: the config file, `--config.key=value` overrides, and validation.

`load_config('configs/tiny.py', ['--config.optim.lr=3e-3'])` imports the file, calls its
`get_config()` (or `get_config(arg)` for `file.py:arg`), applies the overrides with the type of
the existing value, and checks the whole config. Every mistake is a `UserError` in one line.
"""

import difflib
import importlib.util
import pathlib

import ml_collections

from errors import UserError
from models.config import TransformerConfig
from models.counting import FLOPS_CONVENTIONS
from train.optim import validate_optim_config

_TRUE = {'true', '1', 'yes', 'on'}
_FALSE = {'false', '0', 'no', 'off'}


def _import_config_file(spec: str) -> ml_collections.ConfigDict:
  path_text, _, arg = spec.partition(':')
  path = pathlib.Path(path_text)
  if not path.is_file():
    raise UserError(f'config file {path_text} not found; pass an existing file like configs/tiny.py')
  module_spec = importlib.util.spec_from_file_location(f'_config_{path.stem}', path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  if not hasattr(module, 'get_config'):
    raise UserError(f'config file {path_text} has no get_config(); define one returning a ConfigDict')
  return module.get_config(arg) if arg else module.get_config()


def flatten(tree, prefix: str = '') -> dict:
  """{dotted key: value} of every leaf of a nested config (ConfigDict or plain dicts)."""
  flat = {}
  for name, value in tree.items():
    if isinstance(value, (dict, ml_collections.ConfigDict)):
      flat.update(flatten(value, f'{prefix}{name}.'))
    else:
      flat[prefix + name] = value
  return flat


def parse_value(key: str, text: str, current):
  """Parses `text` as the type of `current`; a one-line UserError if it does not fit."""
  def wrong(kind):
    return UserError(f'--config.{key}={text!r} is not a valid {kind} (current value {current!r})')
  if isinstance(current, bool):
    if text.lower() in _TRUE:
      return True
    if text.lower() in _FALSE:
      return False
    raise wrong('bool; use true or false')
  if isinstance(current, int):
    try:
      return int(text)
    except ValueError:
      raise wrong('integer') from None
  if isinstance(current, float):
    try:
      return float(text)
    except ValueError:
      raise wrong('number') from None
  if isinstance(current, str) or current is None:
    return text
  raise UserError(f'--config.{key} has type {type(current).__name__}, which cannot be set '
                  'from the command line; edit the config file')


def apply_overrides(config: ml_collections.ConfigDict, overrides: list[str]) -> None:
  """Applies ['--config.a.b=v', ...] (or 'a.b=v') in place."""
  known = list(flatten(config))
  for item in overrides:
    text = item[len('--config.'):] if item.startswith('--config.') else item
    key, sep, value = text.partition('=')
    if not sep:
      raise UserError(f'override {item!r} has no value; write it as --config.{key}=VALUE')
    if key not in known:
      close = difflib.get_close_matches(key, known, n=1)
      hint = f"; did you mean '{close[0]}'?" if close else '; see configs/base.py for every key'
      raise UserError(f"unknown config key '{key}'{hint}")
    parent = config
    *path, leaf = key.split('.')
    for part in path:
      parent = parent[part]
    parent[leaf] = parse_value(key, value, parent[leaf])


def config_problems(config: ml_collections.ConfigDict) -> list[str]:
  """Cross-field checks that do not need devices or data."""
  model = TransformerConfig.from_dict(config.model)
  problems = model.problems()
  t, d = config.train, config.data
  for name in ('steps', 'batch_size', 'grad_accum_steps', 'log_every', 'eval_batches'):
    if t[name] <= 0:
      problems.append(f'train.{name}={t[name]} must be positive')
  for name in ('eval_every', 'patience', 'sample_tokens', 'max_consecutive_bad_steps'):
    if t[name] < 0:
      problems.append(f'train.{name}={t[name]} must be zero or positive')
  if 'checkpoint' in config:
    if config.checkpoint.every < 0:
      problems.append(f'checkpoint.every={config.checkpoint.every} must be zero (only at the '
                      'end) or positive')
    if config.checkpoint.keep < 1:
      problems.append(f'checkpoint.keep={config.checkpoint.keep} must be at least 1')
  if t.batch_size > 0 and t.grad_accum_steps > 0 and t.batch_size % t.grad_accum_steps:
    problems.append(f'train.batch_size={t.batch_size} is not divisible by '
                    f'train.grad_accum_steps={t.grad_accum_steps}')
  if d.seq_len <= 0:
    problems.append(f'data.seq_len={d.seq_len} must be positive')
  elif d.seq_len > config.model.max_len:
    problems.append(f'data.seq_len={d.seq_len} exceeds model.max_len={config.model.max_len}; '
                    'raise model.max_len or lower data.seq_len')
  if not 0.0 < d.validation_fraction < 1.0:
    problems.append(f'data.validation_fraction={d.validation_fraction} must be in (0, 1)')
  if t.sample_temperature < 0:
    problems.append(f'train.sample_temperature={t.sample_temperature} must be >= 0')
  if 'scaling' in config:
    problems += scaling_problems(config.scaling)
  return problems


def scaling_problems(scaling: ml_collections.ConfigDict) -> list[str]:
  """Checks of the `scaling` section (FLOPs convention, model ladder rule)."""
  problems = []
  if scaling.flops_convention not in FLOPS_CONVENTIONS:
    problems.append(f'scaling.flops_convention={scaling.flops_convention!r} is not one of '
                    f'{", ".join(FLOPS_CONVENTIONS)}')
  if scaling.ladder_aspect_ratio <= 0:
    problems.append(f'scaling.ladder_aspect_ratio={scaling.ladder_aspect_ratio} must be positive')
  if scaling.ladder_head_dim <= 0 or scaling.ladder_head_dim % 2:
    problems.append(f'scaling.ladder_head_dim={scaling.ladder_head_dim} must be positive and even')
  return problems


def validate(config: ml_collections.ConfigDict) -> None:
  problems = config_problems(config)
  if problems:
    more = f' (and {len(problems) - 1} more problems)' if len(problems) > 1 else ''
    raise UserError(problems[0] + more)
  validate_optim_config(config.optim)


def load_config(spec: str, overrides: list[str] = ()) -> ml_collections.ConfigDict:
  """The validated, locked config of a run."""
  config = _import_config_file(spec)
  config.lock()  # no new keys
  apply_overrides(config, list(overrides))
  validate(config)
  return config
