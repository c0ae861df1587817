"""Attention against an independent reference: a plain NumPy causal softmax attention."""

import jax
import numpy as np
import pytest

from models.attention import causal_attention


def reference_attention(q_BxLxHxD, k_BxLxKxD, v_BxLxKxD):
  """Per (batch, head) loops, float64: softmax over keys s <= q of q.k, times v."""
  batch, length, heads, _ = q_BxLxHxD.shape
  groups = heads // k_BxLxKxD.shape[2]
  out = np.zeros(q_BxLxHxD.shape)
  for b in range(batch):
    for h in range(heads):
      kv = h // groups
      for t in range(length):
        scores = k_BxLxKxD[b, :t + 1, kv] @ q_BxLxHxD[b, t, h]
        weights = np.exp(scores - scores.max())
        out[b, t, h] = (weights / weights.sum()) @ v_BxLxKxD[b, :t + 1, kv]
  return out


@pytest.mark.parametrize('chunk', [0, 4, 8, 5])  # 5 does not divide 16: one block
@pytest.mark.parametrize('kv_heads', [4, 2, 1])  # multi-head, grouped-query, multi-query
def test_blocked_causal_attention_matches_reference(chunk, kv_heads):
  rng = np.random.default_rng(0)
  batch, length, heads, dim = 2, 16, 4, 8
  q = rng.standard_normal((batch, length, heads, dim)).astype(np.float32)
  k = rng.standard_normal((batch, length, kv_heads, dim)).astype(np.float32)
  v = rng.standard_normal((batch, length, kv_heads, dim)).astype(np.float32)
  q_grouped = q.reshape(batch, length, kv_heads, heads // kv_heads, dim)
  out = jax.jit(causal_attention, static_argnums=3)(q_grouped, k, v, chunk)
  np.testing.assert_allclose(np.asarray(out).reshape(q.shape), reference_attention(q, k, v),
                             rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('kv_heads', [4, 2, 1])
def test_attention_layer_splits_and_merges_heads_like_the_reference(kv_heads):
  """The whole layer (projections, grouping of query heads over K/V heads, merge, output
  projection) against NumPy: query head h reads K/V head h // (H / K)."""
  import flax.linen as nn  # pylint: disable=import-outside-toplevel
  from models.attention import CausalSelfAttention  # pylint: disable=import-outside-toplevel
  from models.config import TransformerConfig  # pylint: disable=import-outside-toplevel
  cfg = TransformerConfig(vocab_size=16, d_model=16, n_layers=1, n_heads=4, n_kv_heads=kv_heads,
                          max_len=8, position='learned', attention_query_chunk=4).derived()
  x = np.random.default_rng(1).standard_normal((2, 8, 16)).astype(np.float32)
  layer = CausalSelfAttention(cfg)
  params = nn.meta.unbox(layer.init(jax.random.PRNGKey(0), x)['params'])
  w = {name: np.asarray(params[name]['kernel'], np.float64)
       for name in ('query', 'key', 'value', 'out')}
  q = np.einsum('bld,dhe->blhe', x, w['query']) / np.sqrt(cfg.head_dim)
  k = np.einsum('bld,dke->blke', x, w['key'])
  v = np.einsum('bld,dke->blke', x, w['value'])
  expected = np.einsum('blhe,hed->bld', reference_attention(q, k, v), w['out'])
  np.testing.assert_allclose(layer.apply({'params': params}, x), expected, rtol=1e-4, atol=1e-5)
