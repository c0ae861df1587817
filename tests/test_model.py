"""The Transformer's variants: each runs forward and backward; scan and remat change no number."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models.config import TransformerConfig
from models.layers import add_positions
from models.transformer import Transformer
from train.step import loss_fn

SMALL = dict(vocab_size=97, d_model=32, n_layers=2, n_heads=4, max_len=16)


def init(cfg, seq_len=16):
  return nn.meta.unbox(Transformer(cfg).init(jax.random.PRNGKey(0),
                                             jnp.zeros((1, seq_len), jnp.int32))['params'])


def tokens(batch=2, length=17, vocab=97):
  return jnp.asarray(np.random.default_rng(0).integers(0, vocab, (batch, length)), jnp.int32)


@pytest.mark.parametrize('overrides', [
    dict(),
    dict(norm='layernorm', position='learned', mlp='gelu', use_bias=True, tie_embeddings=False),
    dict(n_kv_heads=2), dict(n_kv_heads=1),
    dict(dtype='bfloat16'), dict(param_dtype='bfloat16', dtype='bfloat16'),
    dict(scan_layers=True, remat='dots'), dict(remat='full'), dict(remat='dots_no_batch'),
    dict(dropout=0.1),
])
def test_variant_trains_one_step_with_finite_loss_and_gradients(overrides):
  cfg = TransformerConfig(**SMALL, **overrides).derived()
  params = init(cfg)
  loss, grads = jax.jit(jax.value_and_grad(loss_fn), static_argnums=(1, 4))(
      params, Transformer(cfg), tokens(), jax.random.PRNGKey(1), cfg.dropout == 0.0)
  assert np.isfinite(float(loss))
  assert all(np.isfinite(np.asarray(g, np.float32)).all() for g in jax.tree.leaves(grads))
  assert abs(float(loss) - np.log(97)) < 1.0  # near uniform at initialisation


def test_logits_are_float32_and_causal():
  cfg = TransformerConfig(**SMALL, dtype='bfloat16').derived()
  params, model = init(cfg), Transformer(cfg)
  x = tokens(1, 16)
  logits = model.apply({'params': params}, x)
  assert logits.dtype == jnp.float32 and logits.shape == (1, 16, 97)
  changed = x.at[0, 10].set((x[0, 10] + 1) % 97)  # a later token cannot change earlier logits
  np.testing.assert_array_equal(logits[0, :10], model.apply({'params': params}, changed)[0, :10])


def test_scan_over_layers_equals_the_unrolled_stack():
  unrolled_cfg = TransformerConfig(**SMALL).derived()
  scanned_cfg = TransformerConfig(**SMALL, scan_layers=True, remat='full').derived()
  unrolled = init(unrolled_cfg)
  layer_names = [f'layer_{i}' for i in range(SMALL['n_layers'])]
  scanned = {k: v for k, v in unrolled.items() if k not in layer_names}
  scanned['layers'] = jax.tree.map(lambda *xs: jnp.stack(xs), *[unrolled[n] for n in layer_names])
  x = tokens(2, 16)
  np.testing.assert_allclose(Transformer(scanned_cfg).apply({'params': scanned}, x),
                             Transformer(unrolled_cfg).apply({'params': unrolled}, x),
                             rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('x_dtype', [jnp.float32, jnp.bfloat16])
def test_add_positions_has_the_gradients_of_a_broadcast_add(x_dtype):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((3, 5, 4)), x_dtype)
  positions = jnp.asarray(rng.standard_normal((5, 4)), jnp.float32)
  weights = jnp.asarray(rng.standard_normal((3, 5, 4)), jnp.float32)
  ours = jax.grad(lambda x, p: jnp.sum(jnp.tanh(add_positions(x, p)) * weights), (0, 1))
  autodiff = jax.grad(lambda x, p: jnp.sum(jnp.tanh(x + p[None]) * weights), (0, 1))
  for got, want in zip(ours(x, positions), autodiff(x, positions)):
    assert got.dtype == want.dtype
    np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want, np.float32),
                               rtol=1e-6, atol=1e-6)
