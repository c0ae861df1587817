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
