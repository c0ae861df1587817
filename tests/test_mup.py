"""muP (models/mup.py, train/mup.py) against hand-worked expectations, and SP left as it was.

Roles are checked against the parameters' names (which the code never reads); the init against
SP's own initial values at the same seed; the first AdamW and SGD updates against their rules
(Adam's first step is lr * g / (|g| + eps), so lr * role multiplier per entry; SGD's is lr *
multiplier * g with g from jax.grad); the readout and attention scales against SP logits; and
muP at its base width must be SP bit for bit. tests/test_mup_sharding.py runs muP on 8 devices,
tests/test_mup_coord_check.py the coordinate check.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from errors import UserError
from models import mup
from models.config import TransformerConfig, problems
from models.transformer import Transformer
from tests.sharding_worker import MODELS, run_job, synthetic_batches, tiny_config
from train.experiment import build_experiment
from train.mup import lr_multipliers, param_roles
from train.state import path_names

MUP = dict(parameterization='mup', mup_base_width=8)  # the test models are d_model 32: m = 4


def _flat(tree) -> dict[str, object]:
  return {'/'.join(path_names(path)): leaf
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _expected_role(name: str) -> str:
  """The role by the parameter's name, as a reader of the model would assign it."""
  last = name.split('/')[-1]
  if last in ('embedding', 'position_embedding'):
    return 'input'
  if name.startswith('lm_head'):
    return 'readout'
  return 'hidden' if last == 'kernel' else 'vector'  # norm scales and biases


@pytest.mark.parametrize('model', ['gpt2', 'llama'])
def test_roles_come_from_logical_axes(model):
  cfg = TransformerConfig.from_dict(dict(MODELS[model], **MUP))
  roles = _flat(param_roles(cfg, 16))
  assert {name: _expected_role(name) for name in roles} == roles
  assert set(roles.values()) == ({'input', 'hidden', 'vector'} if model == 'gpt2'
                                 else {'input', 'hidden', 'vector', 'readout'})
  adam = _flat(lr_multipliers(cfg, 'adamw', 16))
  sgd = _flat(lr_multipliers(cfg, 'momentum', 16))
  for name, role in roles.items():
    assert adam[name] == (0.25 if role == 'hidden' else 1.0), name
    assert sgd[name] == (1.0 if role == 'hidden' else 4.0), name
  assert lr_multipliers(TransformerConfig.from_dict(MODELS[model]), 'adamw', 16) is None


def test_role_of_axes():
  assert mup.role_of(('vocab', 'embed')) == 'input'
  assert mup.role_of(('embed', 'vocab')) == 'readout'
  assert mup.role_of((None, 'embed')) == 'input'
  assert mup.role_of(('layers', 'embed', 'kv_heads', 'head_dim')) == 'hidden'
  assert mup.role_of(('heads', 'head_dim', 'embed')) == 'hidden'
  assert mup.role_of(('layers', 'heads', 'head_dim')) == 'vector'
  assert mup.role_of(('mlp',)) == 'vector'
  with pytest.raises(ValueError, match='experts'):
    mup.role_of(('embed', 'experts'))


def _job(model: str, optim: dict, **model_overrides) -> dict:
  return dict(model=model, rules='dp', mesh=[1, 1, 1], optim=optim,
              model_overrides=model_overrides)


def test_mup_at_its_base_width_is_sp_bit_for_bit():
  """All multipliers are 1 at the base: same losses and parameters, exactly."""
  optim = dict(name='adamw', lr=1e-2)
  devices = jax.devices()[:1]
  sp_losses, sp_params, _, _ = run_job(_job('llama', optim), devices)
  mup_losses, mup_params, _, _ = run_job(
      _job('llama', optim, parameterization='mup', mup_base_width=32), devices)
  assert sp_losses == mup_losses
  assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(sp_params),
                                                   jax.tree.leaves(mup_params)))


def _first_update(model: str, optim: dict, **model_overrides):
  """(initial params, params after one step, the step's gradient) of the one-device run."""
  config = tiny_config(model)
  config.optim.update(dict(optim, clip_norm=0.0, weight_decay=0.0))
  config.model.update(model_overrides)
  exp = build_experiment(config, with_data=False)
  state = exp.init_state()
  initial = jax.tree.map(np.asarray, state.params)
  batch = jnp.asarray(synthetic_batches(config.model.vocab_size, 1)[0])

  def loss(params):
    logits = exp.model.apply({'params': params}, batch[:, :-1])
    return jnp.mean(-jnp.take_along_axis(jax.nn.log_softmax(logits), batch[:, 1:, None], -1))

  grads = jax.tree.map(np.asarray, jax.grad(loss)(state.params))
  with exp.mesh_context():
    state, _ = exp.train_step(state, exp.global_batch(np.asarray(batch)))
  return initial, jax.tree.map(np.asarray, state.params), grads


def test_init_and_first_updates_follow_the_roles():
  lr = 1e-2
  sp_init, _, _ = _first_update('llama', dict(name='adamw', lr=lr))
  init, after, _ = _first_update('llama', dict(name='adamw', lr=lr), **MUP)
  roles = _flat(param_roles(TransformerConfig.from_dict(dict(MODELS['llama'], **MUP)), 16))
  sp_init, init, after = _flat(sp_init), _flat(init), _flat(after)
  for name, role in roles.items():
    # Same draws as SP, hidden matrices scaled by 1/sqrt(m) = 1/2.
    np.testing.assert_allclose(init[name], sp_init[name] * (0.5 if role == 'hidden' else 1.0),
                               rtol=1e-6, err_msg=name)
    # Adam's first step moves every entry with a gradient by lr x multiplier (up to eps: a key
    # kernel's gradients are tiny).
    step = np.abs(after[name] - init[name])
    np.testing.assert_allclose(step.max(), lr * (0.25 if role == "hidden" else 1.0), rtol=1e-2,
                               err_msg=name)
  init, after, grads = _first_update('gpt2', dict(name='sgd', lr=0.1), **MUP)
  roles = _flat(param_roles(TransformerConfig.from_dict(dict(MODELS['gpt2'], **MUP)), 16))
  init, after, grads = _flat(init), _flat(after), _flat(grads)
  for name, role in roles.items():
    expected = init[name] - 0.1 * (1.0 if role == 'hidden' else 4.0) * grads[name]
    np.testing.assert_allclose(after[name], expected, rtol=1e-4, atol=1e-7, err_msg=name)


def test_readout_and_attention_scales():
  """With the SP attention scale kept (mup_base_head_dim = head_dim), muP's logits are SP's
  over m on the same parameters; with head_dim scaled, attention uses sqrt(base)/head_dim."""
  sp_cfg = TransformerConfig.from_dict(MODELS['gpt2'])  # tied; head_dim 4
  mup_cfg = TransformerConfig.from_dict(dict(MODELS['gpt2'], **MUP, mup_base_head_dim=4))
  tokens = jnp.asarray(synthetic_batches(100, 1)[0][:, :-1])
  params = Transformer(sp_cfg).init(jax.random.PRNGKey(0), tokens)['params']
  sp_logits = Transformer(sp_cfg).apply({'params': params}, tokens)
  mup_logits = Transformer(mup_cfg).apply({'params': params}, tokens)
  real = slice(0, 100)  # the padded vocabulary rows are -inf in both
  np.testing.assert_allclose(mup_logits[..., real], sp_logits[..., real] / 4, rtol=1e-5,
                             atol=1e-6)
  assert mup.attention_scale(sp_cfg) == 1 / np.sqrt(4)
  assert mup.attention_scale(mup_cfg) == 1 / np.sqrt(4)
  derived = TransformerConfig.from_dict(dict(MODELS['gpt2'], **MUP))  # head_dim 4 at m = 4
  assert mup.attention_scale(derived) == pytest.approx(np.sqrt(1) / 4)


def test_zero_initialised_query_and_readout():
  init, _, _ = _first_update('llama', dict(name='adamw', lr=1e-2), mup_zero_query=True,
                             mup_zero_readout=True, **MUP)
  flat = _flat(init)
  assert not np.any(flat['lm_head/kernel']) and not np.any(flat['layers/attn/query/kernel'])
  assert np.all(flat['layers/attn/key/kernel'] != 0)


def test_bad_mup_settings_are_one_line_errors():
  base = dict(MODELS['gpt2'])
  assert problems(dict(base, parameterization='mup'))[0].startswith(
      'model.parameterization=mup needs model.mup_base_width > 0')
  assert 'tie_embeddings' in problems(dict(base, **MUP, mup_zero_readout=True))[0]
  assert "model.parameterization='mu' is not one of sp, mup" in problems(
      dict(base, parameterization='mu'))[0]
  with pytest.raises(UserError):
    TransformerConfig.from_dict(dict(base, bogus=1))
