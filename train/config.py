"""Loading a run config: the config file, `--config.key=value` overrides, and validation.

`load_config('configs/tiny.py', ['--config.optim.lr=3e-3'])` imports the file, calls its
`get_config()` (or `get_config(arg)` for `file.py:arg`), applies the overrides with the type of
the existing value, and checks the whole config. Every mistake is a `UserError` in one line.

Two conventions hold for every part of a config:
- a value is read and written by its dotted key with `get_value` / `set_value` (overrides here,
  sweeps that set a sampled value);
- a section reports its mistakes as `problems(section) -> list[str]` (one line each, naming the
  fix); `validate(config)` gathers every section's and raises the first, with a count.
"""

import difflib
import importlib.util
import inspect
import pathlib

import ml_collections

from errors import UserError
from models import config as model_config
from models.counting import FLOPS_CONVENTIONS
from train import objectives, optim, pruning

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
  _check_config_argument(module.get_config, path_text, arg)
  return module.get_config(arg) if arg else module.get_config()


def _check_config_argument(get_config, path_text: str, arg: str) -> None:
  """UserError unless `get_config` can be called with (`arg`) or without ('') an argument.

  Decided from the signature, so that a TypeError raised inside get_config is not mistaken for
  a wrong argument (it stays a traceback: a bug in the config file)."""
  try:
    inspect.signature(get_config).bind(*([arg] if arg else []))
  except TypeError:
    if arg:
      raise UserError(f'get_config() of {path_text} takes no argument, but --config '
                      f'{path_text}:{arg} passes {arg!r}; drop ":{arg}"') from None
    raise UserError(f'get_config() of {path_text} needs an argument; pass it as --config '
                    f'{path_text}:ARG') from None


def flatten(tree, prefix: str = '') -> dict:
  """{dotted key: value} of every leaf of a nested config (ConfigDict or plain dicts)."""
  flat = {}
  for name, value in tree.items():
    if isinstance(value, (dict, ml_collections.ConfigDict)):
      flat.update(flatten(value, f'{prefix}{name}.'))
    else:
      flat[prefix + name] = value
  return flat


def _parent_and_leaf(config, key: str):
  """(the section holding `key`, its last name); UserError naming the closest key if unknown."""
  *path, leaf = key.split('.')
  parent = config
  for part in path:
    parent = parent.get(part) if isinstance(parent, (dict, ml_collections.ConfigDict)) else None
  if not isinstance(parent, (dict, ml_collections.ConfigDict)) or leaf not in parent or isinstance(
      parent[leaf], (dict, ml_collections.ConfigDict)):
    known = list(flatten(config))
    close = difflib.get_close_matches(key, known, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else '; see configs/base.py for every key'
    raise UserError(f"unknown config key '{key}'{hint}")
  return parent, leaf


def get_value(config, key: str):
  """The value at dotted `key` ('optim.lr'); UserError if there is no such key."""
  parent, leaf = _parent_and_leaf(config, key)
  return parent[leaf]


def set_value(config, key: str, value) -> None:
  """Sets the existing value at dotted `key` in place; UserError if there is no such key."""
  parent, leaf = _parent_and_leaf(config, key)
  parent[leaf] = value


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


def split_overrides(argv: list[str]) -> tuple[list[str], list[str]]:
  """(--config.key=value overrides, the other arguments) of a command line; `--config.key value`
  is taken as `--config.key=value`."""
  overrides, rest = [], []
  args_iter = iter(argv)
  for arg in args_iter:
    if arg.startswith('--config.'):
      if '=' not in arg:
        value = next(args_iter, None)
        if value is None:
          raise UserError(f'{arg} has no value; write it as {arg}=VALUE')
        arg = f'{arg}={value}'
      overrides.append(arg)
    else:
      rest.append(arg)
  return overrides, rest


def split_section(config: ml_collections.ConfigDict, section: str, example: str):
  """(a copy of `config` without `section`, that section): the run config of a sweep or study
  config and its own part. UserError naming `example` when the section is missing."""
  if section not in config:
    raise UserError(f'this config has no {section} section; use one such as {example}')
  whole = config.to_dict()
  part = ml_collections.ConfigDict(whole.pop(section))
  return ml_collections.ConfigDict(whole), part


def apply_overrides(config: ml_collections.ConfigDict, overrides: list[str]) -> None:
  """Applies ['--config.a.b=v', ...] (or 'a.b=v') in place."""
  for item in overrides:
    text = item[len('--config.'):] if item.startswith('--config.') else item
    key, sep, value = text.partition('=')
    if not sep:
      raise UserError(f'override {item!r} has no value; write it as --config.{key}=VALUE')
    set_value(config, key, parse_value(key, value, get_value(config, key)))


def train_problems(t) -> list[str]:
  """The `train` section."""
  problems = []
  for name in ('steps', 'batch_size', 'grad_accum_steps', 'log_every', 'eval_batches'):
    if t[name] <= 0:
      problems.append(f'train.{name}={t[name]} must be positive')
  for name in ('eval_every', 'patience', 'sample_tokens', 'max_consecutive_bad_steps'):
    if t[name] < 0:
      problems.append(f'train.{name}={t[name]} must be zero or positive')
  if t.batch_size > 0 and t.grad_accum_steps > 0 and t.batch_size % t.grad_accum_steps:
    problems.append(f'train.batch_size={t.batch_size} is not divisible by '
                    f'train.grad_accum_steps={t.grad_accum_steps}')
  if t.sample_temperature < 0:
    problems.append(f'train.sample_temperature={t.sample_temperature} must be >= 0')
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


def checkpoint_problems(k) -> list[str]:
  """The `checkpoint` section."""
  problems = []
  if k.every < 0:
    problems.append(f'checkpoint.every={k.every} must be zero (only at the end) or positive')
  if k.keep < 1:
    problems.append(f'checkpoint.keep={k.keep} must be at least 1')
  return problems


def data_problems(d) -> list[str]:
  """The `data` section (its length against the model's is in `cross_section_problems`)."""
  problems = []
  if d.seq_len <= 0:
    problems.append(f'data.seq_len={d.seq_len} must be positive')
  if not 0.0 < d.validation_fraction < 1.0:
    problems.append(f'data.validation_fraction={d.validation_fraction} must be in (0, 1)')
  return problems


def optim_problems(o) -> list[str]:
  """The `optim` section (train/optim.py knows its values)."""
  return optim.problems(o)


def cross_section_problems(config) -> list[str]:
  """Checks between sections."""
  if 0 < config.data.seq_len and config.data.seq_len > config.model.max_len:
    return [f'data.seq_len={config.data.seq_len} exceeds model.max_len={config.model.max_len}; '
            'raise model.max_len or lower data.seq_len']
  return []


def problems(config: ml_collections.ConfigDict) -> list[str]:
  """Every problem of every section, one line each; checks that need no devices or data."""
  found = model_config.problems(config.model) + train_problems(config.train)
  if 'checkpoint' in config:
    found += checkpoint_problems(config.checkpoint)
  if 'scaling' in config:
    found += scaling_problems(config.scaling)
  if 'prune' in config:
    found += pruning.problems(config.prune, config.train.steps)
  if 'task' in config:
    found += objectives.problems(config)
  return (found + data_problems(config.data) + cross_section_problems(config) +
          optim_problems(config.optim))


def validate(config: ml_collections.ConfigDict) -> None:
  """UserError with the first problem of `config` (and how many more there are)."""
  found = problems(config)
  if found:
    more = f' (and {len(found) - 1} more problems)' if len(found) > 1 else ''
    raise UserError(found[0] + more)


def load_config(spec: str, overrides: list[str] = ()) -> ml_collections.ConfigDict:
  """The validated, locked config of a run."""
  config = _import_config_file(spec)
  config.lock()  # no new keys
  apply_overrides(config, list(overrides))
  validate(config)
  return config
