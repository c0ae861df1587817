"""Config files, command-line overrides and their one-line errors."""

import importlib

import pytest

from errors import UserError
from models.config import TransformerConfig
from models.counting import param_count
from train.config import apply_overrides, load_config


def test_every_config_file_loads_and_names_its_command():
  for name in ('base', 'tiny', 'gpt2_small', 'gpt2_medium', 'llama_1b', 'llama_7b'):
    path = f'configs/{name}.py'
    module = importlib.import_module(f'configs.{name}')
    assert f'launch.py train --config {path}' in module.__doc__, name
    load_config(path)


@pytest.mark.parametrize('name, expected', [
    ('gpt2_small', 124_439_808), ('gpt2_medium', 354_823_168),
    ('llama_1b', 1_235_814_400), ('llama_7b', 6_738_415_616)])
def test_presets_have_the_published_parameter_counts(name, expected):
  config = load_config(f'configs/{name}.py')
  assert param_count(TransformerConfig.from_dict(config.model)) == expected


def test_overrides_are_typed():
  config = load_config('configs/tiny.py', ['--config.optim.lr=3e-3', '--config.train.steps=7',
                                           '--config.model.tie_embeddings=false',
                                           '--config.optim.name=sgd'])
  assert config.optim.lr == 3e-3 and config.train.steps == 7
  assert config.model.tie_embeddings is False and config.optim.name == 'sgd'


@pytest.mark.parametrize('override, message', [
    ('--config.optim.lrr=1', "unknown config key 'optim.lrr'; did you mean 'optim.lr'?"),
    ('--config.train.steps=ten', 'is not a valid integer'),
    ('--config.train.steps=1.5', 'is not a valid integer'),
    ('--config.optim.lr=fast', 'is not a valid number'),
    ('--config.model.tie_embeddings=maybe', 'is not a valid bool'),
    ('--config.optim.lr=-1', 'optim.lr'),
    ('--config.train.batch_size=0', 'train.batch_size=0 must be positive'),
    ('--config.model.norm=batchnorm', "model.norm='batchnorm' is not one of"),
    ('--config.data.seq_len=4096', 'exceeds model.max_len'),
    ('--config.model.n_kv_heads=3', 'must divide model.n_heads'),
    ('--config.train.grad_accum_steps=3', 'not divisible by train.grad_accum_steps'),
    ('--config.train.steps', 'has no value'),
])
def test_bad_overrides_are_one_line_errors(override, message):
  with pytest.raises(UserError) as error:
    load_config('configs/tiny.py', [override])
  assert message in str(error.value)
  assert '\n' not in str(error.value)


def test_missing_config_file():
  with pytest.raises(UserError, match='config file configs/nope.py not found'):
    load_config('configs/nope.py')


def test_override_without_prefix():
  config = load_config('configs/tiny.py')
  config.unlock()
  apply_overrides(config, ['train.steps=3'])
  assert config.train.steps == 3


def test_model_fields_and_defaults_are_those_of_configs_base():
  import dataclasses
  from configs.base import get_config
  base_model = get_config().model.to_dict()
  fields = {f.name: f.default for f in dataclasses.fields(TransformerConfig)}
  assert fields == base_model


def test_model_config_is_strict():
  config = load_config('configs/tiny.py')
  with pytest.raises(UserError, match='model.n_layer is not a model setting'):
    TransformerConfig.from_dict({**config.model, 'n_layer': 2})


def test_a_config_file_that_adds_a_model_key_is_refused(tmp_path):
  path = tmp_path / 'extra.py'
  path.write_text('from configs import base\n\ndef get_config():\n  c = base.get_config()\n'
                  '  c.model.n_experts = 8\n  return c\n')
  with pytest.raises(UserError, match=r'^model.n_experts is not a model setting .*; remove it$'):
    load_config(str(path))


def test_values_are_read_and_set_by_dotted_key():
  from train.config import get_value, set_value
  config = load_config('configs/tiny.py')
  set_value(config, 'optim.lr', 0.5)
  assert get_value(config, 'optim.lr') == 0.5 == config.optim.lr
  for key in ('optim.lrr', 'optim', 'optim.lr.x', 'nope.lr'):
    with pytest.raises(UserError, match=f"unknown config key '{key}'"):
      set_value(config, key, 1.0)


def test_every_problem_is_counted_in_one_line():
  from train.config import problems
  config = load_config('configs/tiny.py')
  config.train.batch_size, config.checkpoint.keep, config.optim.lr = 0, 0, -1.0
  found = problems(config)
  assert found == ['train.batch_size=0 must be positive', 'checkpoint.keep=0 must be at least 1',
                   found[2]] and found[2].startswith('optim.lr=-1.0 must be > 0')
  with pytest.raises(UserError, match=r'^train.batch_size=0 must be positive \(and 2 more '
                     r'problems\)$'):
    load_config('configs/tiny.py', ['--config.train.batch_size=0', '--config.checkpoint.keep=0',
                                    '--config.optim.lr=-1'])


def test_config_argument_is_checked_against_get_configs_signature(tmp_path):
  with pytest.raises(UserError, match=r'get_config\(\) of configs/tiny.py takes no argument'):
    load_config('configs/tiny.py:foo')
  takes_one = tmp_path / 'takes_one.py'
  takes_one.write_text('from configs import base\n\ndef get_config(size):\n'
                       '  c = base.get_config()\n  c.name = size\n  return c\n')
  assert load_config(f'{takes_one}:wide').name == 'wide'
  with pytest.raises(UserError, match='needs an argument; pass it as --config'):
    load_config(str(takes_one))
  broken = tmp_path / 'broken.py'  # a TypeError inside get_config is a bug, not a wrong argument
  broken.write_text('def get_config():\n  return len(3)\n')
  with pytest.raises(TypeError):
    load_config(str(broken))
