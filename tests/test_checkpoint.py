"""train/checkpoint.py: exact round trips, what is kept, damaged checkpoints, refusals, no pickle.

Uses a tiny model's real TrainState (params, Adam moments, step, RNG), built once per module.
"""

import pickle
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.tiny import get_config
from errors import UserError
from train import checkpoint
from train.experiment import build_experiment


def tiny_config(d_model: int = 32):
  config = get_config()
  config.model.d_model, config.model.n_layers, config.model.n_heads = d_model, 2, 2
  config.model.max_len = config.data.seq_len = 32
  config.train.batch_size = 8
  config.checkpoint.keep = 2
  return config


def _layout_and_state(config):
  exp = build_experiment(config, with_data=False)
  return exp.init_state(), exp.abstract_state


@pytest.fixture(scope='module')
def tiny():
  config = tiny_config()
  state, abstract = _layout_and_state(config)
  return config, state, abstract


def at_step(state, step: int):
  """The state with its step counter set and its params nudged, so steps are distinguishable."""
  params = jax.tree.map(lambda p: p + step, state.params)
  return state.replace(step=jnp.asarray(step, jnp.int32), params=params)


def save_steps(directory: Path, config, state, steps, losses=None):
  manager = checkpoint.open_manager(directory, config.checkpoint)
  for i, step in enumerate(steps):
    meta = checkpoint.make_meta(config, step, {'bad_evals': 0})
    checkpoint.save(manager, at_step(state, step), meta, None if losses is None else losses[i])
  manager.wait_until_finished()
  return manager


def assert_same(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    assert x.dtype == y.dtype and np.array_equal(np.asarray(x), np.asarray(y))


def test_round_trip_is_exact_and_meta_is_auditable(tiny, tmp_path):
  config, state, abstract = tiny
  manager = save_steps(tmp_path / 'ckpt', config, state, [10, 20])
  restored, step, message = checkpoint.restore_latest(manager, abstract)
  assert step == 20 and message is None
  assert_same(restored, at_step(state, 20))
  assert restored.params['embedding'].sharding == abstract.params['embedding'].sharding
  meta = checkpoint.read_meta(tmp_path / 'ckpt', 20)
  assert meta['step'] == meta['data_position'] == 20 and meta['loop'] == {'bad_evals': 0}
  assert meta['config']['model']['d_model'] == 32
  (tmp_path / 'empty').mkdir()
  assert checkpoint.restore_latest(tmp_path / 'empty', abstract) == (None, None, None)
  with pytest.raises(UserError, match='holds no checkpoints'):
    checkpoint.restore_latest(tmp_path / 'missing', abstract)


def test_nothing_is_unpickled_on_restore(tiny, tmp_path, monkeypatch):
  config, state, abstract = tiny
  save_steps(tmp_path / 'ckpt', config, state, [5])

  def refuse(*args, **kwargs):
    raise AssertionError('a checkpoint must never be unpickled')

  for name in ('load', 'loads', 'Unpickler'):
    monkeypatch.setattr(pickle, name, refuse)
  monkeypatch.setattr(np, 'load', refuse)
  restored, step, _ = checkpoint.restore_latest(tmp_path / 'ckpt', abstract)
  assert step == 5
  assert_same(restored, at_step(state, 5))


def test_keeps_the_newest_n_and_the_best(tiny, tmp_path):
  config, state, _ = tiny
  config = config.copy_and_resolve_references()
  config.checkpoint.keep, config.checkpoint.keep_best = 2, True
  manager = save_steps(tmp_path / 'ckpt', config, state, [1, 2, 3, 4, 5], [5.0, 1.0, 4.0, 3.0, 2.0])
  assert manager.all_steps() == [2, 4, 5]
  assert checkpoint.open_manager(tmp_path / 'ckpt', read_only=True).all_steps() == [2, 4, 5]


def _largest_file(folder: Path) -> Path:
  return max((p for p in folder.rglob('*') if p.is_file()), key=lambda p: p.stat().st_size)


@pytest.mark.parametrize('damage', ['half_written', 'truncated', 'deleted', 'metadata_deleted'])
def test_damaged_latest_falls_back_to_the_newest_good_one(tiny, tmp_path, damage):
  config, state, abstract = tiny
  directory = tmp_path / 'run' / 'checkpoints'
  save_steps(directory, config, state, [10, 20])
  if damage == 'half_written':  # what a save killed mid-write leaves behind
    shutil.copytree(directory / '20', directory / '30.orbax-checkpoint-tmp-1234')
  elif damage == 'truncated':
    victim = _largest_file(directory / '20')
    victim.write_bytes(victim.read_bytes()[:victim.stat().st_size // 2])
  elif damage == 'deleted':
    _largest_file(directory / '20').unlink()
  else:
    (directory / '20' / 'state' / '_METADATA').unlink()

  # Read-only (eval, sample): skips, changes nothing.
  _, step, message = checkpoint.restore_latest(directory, abstract)
  expected = 20 if damage == 'half_written' else 10
  assert step == expected and '\n' not in message

  # Training: the same fallback, and the damage is cleared out of the way of later saves.
  manager = checkpoint.open_manager(directory, config.checkpoint)
  restored, step, message = checkpoint.restore_latest(manager, abstract, move_damaged=True)
  assert step == expected and '\n' not in message
  assert_same(restored, at_step(state, expected))
  if damage == 'half_written':
    assert 'half-written' in message and not list(directory.glob('*tmp*'))
  else:
    assert 'step 20 does not restore' in message and f'resumed from checkpoint step 10' in message
    assert (tmp_path / 'run' / 'damaged_checkpoints' / '20').is_dir()
    meta = checkpoint.make_meta(config, 20, {})
    checkpoint.save(manager, at_step(state, 20), meta)  # the step number is free again
    manager.wait_until_finished()
    assert manager.all_steps() == [10, 20]


def test_all_damaged_is_a_user_error_and_moves_nothing(tiny, tmp_path):
  config, state, abstract = tiny
  directory = tmp_path / 'checkpoints'
  save_steps(directory, config, state, [10])
  _largest_file(directory / '10').unlink()
  manager = checkpoint.open_manager(directory, config.checkpoint)
  with pytest.raises(UserError, match='no checkpoint in .* restores cleanly'):
    checkpoint.restore_latest(manager, abstract, move_damaged=True)
  assert (directory / '10').is_dir()


def test_a_checkpoint_of_another_model_is_refused(tiny, tmp_path):
  config, state, _ = tiny
  save_steps(tmp_path / 'ckpt', config, state, [10])
  wider_config = tiny_config(d_model=64)
  wider = build_experiment(wider_config, with_data=False).abstract_state
  with pytest.raises(UserError, match='another model .*embedding'):
    checkpoint.restore_latest(tmp_path / 'ckpt', wider)
  assert (tmp_path / 'ckpt' / '10').is_dir()
