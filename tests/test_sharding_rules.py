"""Rule sets, meshes and their errors, on one device: no compilation across devices here.

The multi-device checks live in test_sharding_equivalence.py (numbers), test_sharding_memory.py
(bytes and collectives), test_multihost.py and test_restore_mesh.py.
"""

import types

import numpy as np
import pytest

from errors import UserError
from sharding import mesh as mesh_lib
from sharding.rules import RULE_SETS, batch_axes, fit_rules, make_rules, mesh_axes_of, rules_for

# The table in sharding/rules.py and README.md: (batch axes, 'embed' axes, tensor-parallel axes).
TABLE = {
    'dp': (('data', 'fsdp', 'tensor'), (), ()),
    'fsdp': (('data', 'fsdp', 'tensor'), ('data', 'fsdp', 'tensor'), ()),
    'dp_fsdp': (('data', 'fsdp', 'tensor'), ('fsdp', 'tensor'), ()),
    'tp': (('data', 'fsdp'), (), ('tensor',)),
    'fsdp_tp': (('data', 'fsdp'), ('data', 'fsdp'), ('tensor',)),
    'dp_fsdp_tp': (('data', 'fsdp'), ('fsdp',), ('tensor',)),
}
MESH = {'data': 2, 'fsdp': 2, 'tensor': 2}


@pytest.mark.parametrize('name', list(RULE_SETS))
def test_rule_sets_match_the_documented_table(name):
  rules, notes = rules_for(name)
  batch, embed, tensor = TABLE[name]
  assert batch_axes(rules) == batch and mesh_axes_of(rules, 'embed') == embed
  for logical in ('heads', 'kv_heads', 'mlp', 'vocab', 'act_heads', 'act_mlp', 'act_vocab'):
    assert mesh_axes_of(rules, logical) == tensor
  for logical in ('act_embed', 'act_length', 'head_dim', 'layers'):
    assert mesh_axes_of(rules, logical) == ()
  assert notes == []
  # Every mesh axis does some work: batch, or tensor parallelism.
  assert set(batch) | set(tensor) == set(MESH)


def test_rule_sets_come_from_one_function():
  assert rules_for('fsdp_tp')[0] == make_rules(zero3=True, tensor=True)
  assert rules_for('dp_fsdp_tp')[0] != rules_for('fsdp_tp')[0]


def test_unknown_rule_set_names_the_choices():
  with pytest.raises(UserError, match='is not one of dp, fsdp, dp_fsdp, tp, fsdp_tp, dp_fsdp_tp'):
    rules_for('zero')


def test_vocabulary_and_kv_heads_that_do_not_divide_are_replicated_with_a_note():
  dims = {'vocab': 50257, 'embed': 768, 'heads': 12, 'kv_heads': 2, 'mlp': 3072}
  rules, notes = rules_for('fsdp_tp', {'data': 1, 'fsdp': 2, 'tensor': 4}, dims)
  assert mesh_axes_of(rules, 'vocab') == () and mesh_axes_of(rules, 'act_vocab') == ()
  assert mesh_axes_of(rules, 'kv_heads') == ()
  assert mesh_axes_of(rules, 'heads') == ('tensor',)
  assert len(notes) == 2 and 'vocab_pad_multiple' in notes[0]
  padded, notes = rules_for('fsdp_tp', {'data': 1, 'fsdp': 2, 'tensor': 4},
                            dict(dims, vocab=50304, kv_heads=4))
  assert mesh_axes_of(padded, 'vocab') == ('tensor',) and notes == []


def test_embed_keeps_the_leading_axes_that_divide_it():
  rules, notes = fit_rules(make_rules(zero3=True, tensor=False), MESH, {'embed': 12})
  assert mesh_axes_of(rules, 'embed') == ('data', 'fsdp') and len(notes) == 1


def test_heads_or_mlp_that_do_not_divide_the_tensor_axis_are_an_error():
  with pytest.raises(UserError, match=r'model.n_heads=12 is not divisible by the 8-way split'):
    rules_for('tp', {'data': 1, 'fsdp': 1, 'tensor': 8}, {'heads': 12})
  with pytest.raises(UserError, match=r'model.d_ff=100'):
    rules_for('tp', {'data': 1, 'fsdp': 1, 'tensor': 8}, {'heads': 8, 'mlp': 100})
  # Without tensor parallelism the tensor axis splits the batch, and heads need not divide.
  rules_for('dp', {'data': 1, 'fsdp': 1, 'tensor': 8}, {'heads': 12})


def _mesh_cfg(data, fsdp, tensor, dcn_data=1):
  return dict(data=data, fsdp=fsdp, tensor=tensor, dcn_data=dcn_data)


@pytest.mark.parametrize('cfg, devices, shape', [
    (_mesh_cfg(-1, 1, 1), 8, (8, 1, 1)),
    (_mesh_cfg(1, -1, 4), 8, (1, 2, 4)),
    (_mesh_cfg(2, 2, 2), 8, (2, 2, 2)),
    (_mesh_cfg(-1, 2, 2, dcn_data=2), 16, (2, 2, 2)),  # per slice; the mesh is (4, 2, 2)
])
def test_mesh_shapes(cfg, devices, shape):
  assert mesh_lib.resolve_mesh_shape(cfg, devices) == shape


@pytest.mark.parametrize('cfg, devices, message', [
    (_mesh_cfg(3, 1, 1), 8, 'needs 3 devices but 8 are present'),
    (_mesh_cfg(-1, -1, 1), 8, 'more than one -1'),
    (_mesh_cfg(-1, 3, 1), 8, '3 does not divide 8'),
    (_mesh_cfg(0, 1, 1), 8, 'not positive or -1'),
    (_mesh_cfg(-1, 1, 1, dcn_data=3), 8, 'dcn_data must be a positive divisor'),
])
def test_mesh_mistakes_are_one_clear_line(cfg, devices, message):
  with pytest.raises(UserError, match=message) as error:
    mesh_lib.resolve_mesh_shape(cfg, devices)
  assert '\n' not in str(error.value) and 'config.mesh' in str(error.value)


def _fake_devices(processes, per_process):
  return [types.SimpleNamespace(id=p * per_process + i, process_index=p, platform='cpu',
                                device_kind='cpu')
          for p in range(processes) for i in range(per_process)]


def test_two_level_mesh_puts_each_slice_on_its_own_data_rows():
  devices = _fake_devices(2, 4)
  grid = mesh_lib.device_grid((1, 2, 2), devices, dcn_data=2)
  assert grid.shape == (2, 2, 2)
  for row in (0, 1):
    assert {d.process_index for d in grid[row].flat} == {row}
  with pytest.raises(UserError, match='do not form 4 slices'):
    mesh_lib.device_grid((1, 1, 2), devices, dcn_data=4)


def test_two_level_mesh_prefers_tpu_slices_to_processes():
  devices = _fake_devices(4, 2)  # 4 processes (hosts), 2 per TPU slice
  for device in devices:
    device.slice_index = device.process_index // 2
  grid = mesh_lib.device_grid((2, 2, 1), devices, dcn_data=2)
  assert grid.shape == (4, 2, 1)
  for rows, slice_index in ((slice(0, 2), 0), (slice(2, 4), 1)):
    assert {d.slice_index for d in grid[rows].flat} == {slice_index}


def test_one_device_mesh_builds():
  built = mesh_lib.build_mesh(_mesh_cfg(1, 1, -1))
  assert dict(built.shape) == {'data': 1, 'fsdp': 1, 'tensor': 1}
  assert 'data=1 fsdp=1 tensor=1' in mesh_lib.mesh_shape_text(built)


def test_padded_vocabulary_changes_nothing_but_the_table():
  import flax.linen as nn
  import jax
  import jax.numpy as jnp
  from models.config import TransformerConfig
  from models.transformer import Transformer
  small = dict(vocab_size=10, d_model=16, n_layers=1, n_heads=2, max_len=8)
  plain = TransformerConfig(**small).derived()
  padded = TransformerConfig(**small, vocab_pad_multiple=8).derived()
  assert padded.padded_vocab == 16 and plain.padded_vocab == 10
  tokens = jnp.arange(8).reshape(1, 8) % 10
  params = nn.meta.unbox(Transformer(padded).init(jax.random.PRNGKey(0), tokens)['params'])
  logits = Transformer(padded).apply({'params': params}, tokens)
  assert logits.shape == (1, 8, 16) and bool(jnp.all(logits[..., 10:] < -1e30))
  plain_params = dict(params, embedding=params['embedding'][:10])
  expected = Transformer(plain).apply({'params': plain_params}, tokens)
  np.testing.assert_allclose(logits[..., :10], expected, rtol=1e-6)
