"""Attention against an independent reference: a plain NumPy causal softmax attention."""

import jax
import numpy as np
import pytest

from models.attention import CPU_CACHE_BYTES, causal_attention, for_platform
from models.blocked_attention import pair_groups
from models.config import TransformerConfig, problems


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


# 512 bytes holds two pairs' scores of a 4-query block (4 x 16 keys x 4 bytes x G query heads)
# when G = 1, none when G > 2: the pairs then run in 4, 2 or 2 sequential groups.
CACHE_BYTES = [0, 512]


@pytest.mark.parametrize('cache_bytes', CACHE_BYTES)
@pytest.mark.parametrize('chunk', [0, 4, 8, 5])  # 5 does not divide 16: one block
@pytest.mark.parametrize('kv_heads', [4, 2, 1])  # multi-head, grouped-query, multi-query
def test_blocked_causal_attention_matches_reference(chunk, kv_heads, cache_bytes):
  rng = np.random.default_rng(0)
  batch, length, heads, dim = 2, 16, 4, 8
  q = rng.standard_normal((batch, length, heads, dim)).astype(np.float32)
  k = rng.standard_normal((batch, length, kv_heads, dim)).astype(np.float32)
  v = rng.standard_normal((batch, length, kv_heads, dim)).astype(np.float32)
  q_grouped = q.reshape(batch, length, kv_heads, heads // kv_heads, dim)
  out = jax.jit(causal_attention, static_argnums=(3, 4, 5))(q_grouped, k, v, chunk, 'chunked',
                                                           cache_bytes)
  np.testing.assert_allclose(np.asarray(out).reshape(q.shape), reference_attention(q, k, v),
                             rtol=1e-5, atol=1e-5)



def reference_attention_grads(q_BxLxHxD, k_BxLxKxD, v_BxLxKxD, dout_BxLxHxD):
  """Gradients of sum(attention * dout) w.r.t. q, k, v, row by row in float64 from the softmax
  derivative: p = softmax(s), o = p V; dV += p dout^T, dp = V dout, ds = p (dp - p.dp),
  dq = K^T ds, dK += ds q^T."""
  batch, length, heads, _ = q_BxLxHxD.shape
  groups = heads // k_BxLxKxD.shape[2]
  dq, dk, dv = (np.zeros(x.shape) for x in (q_BxLxHxD, k_BxLxKxD, v_BxLxKxD))
  for b in range(batch):
    for h in range(heads):
      kv = h // groups
      for t in range(length):
        keys, values = k_BxLxKxD[b, :t + 1, kv].astype(np.float64), v_BxLxKxD[b, :t + 1, kv]
        scores = keys @ q_BxLxHxD[b, t, h]
        probs = np.exp(scores - scores.max())
        probs /= probs.sum()
        dv[b, :t + 1, kv] += np.outer(probs, dout_BxLxHxD[b, t, h])
        dprobs = values @ dout_BxLxHxD[b, t, h]
        dscores = probs * (dprobs - probs @ dprobs)
        dq[b, t, h] = keys.T @ dscores
        dk[b, :t + 1, kv] += np.outer(dscores, q_BxLxHxD[b, t, h])
  return dq, dk, dv


@pytest.mark.parametrize('cache_bytes', CACHE_BYTES)
@pytest.mark.parametrize('chunk', [0, 4, 5])
@pytest.mark.parametrize('kv_heads', [4, 2, 1])
def test_blocked_causal_attention_gradients_match_reference(chunk, kv_heads, cache_bytes):
  """The hand-written backward of the blocked path (models/blocked_attention.py) against the
  float64 softmax derivative."""
  rng = np.random.default_rng(3)
  batch, length, heads, dim = 2, 16, 4, 8
  q = rng.standard_normal((batch, length, heads, dim)).astype(np.float32)
  k = rng.standard_normal((batch, length, kv_heads, dim)).astype(np.float32)
  v = rng.standard_normal((batch, length, kv_heads, dim)).astype(np.float32)
  dout = rng.standard_normal(q.shape).astype(np.float32)
  grouped = (batch, length, kv_heads, heads // kv_heads, dim)

  def weighted(q, k, v):
    out = causal_attention(q.reshape(grouped), k, v, chunk, 'chunked', cache_bytes)
    return (out.reshape(q.shape) * dout).sum()
  grads = jax.jit(jax.grad(weighted, argnums=(0, 1, 2)))(q, k, v)
  for got, expected in zip(grads, reference_attention_grads(q, k, v, dout)):
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)

def test_pair_groups_are_the_fewest_that_fit_the_cache():
  # gpt_byte: 16 x 6 pairs of 128 KiB (one 128-query block of 256 keys): 8 pairs a group.
  assert pair_groups(16, 6, 128 * 256 * 4, 1 << 20) == (4, 3)
  # GPT-2 small at batch 2: 512 KiB a pair, two a group, the batch split first.
  assert pair_groups(2, 12, 128 * 1024 * 4, 1 << 20) == (2, 6)
  assert pair_groups(2, 12, 1, 1 << 20) == (1, 1)  # everything fits: one group
  assert pair_groups(2, 3, 1 << 21, 1 << 20) == (2, 3)  # nothing fits: a pair a group
  assert pair_groups(2, 3, 1 << 21, 0) == (1, 1)  # off


def test_auto_cache_bytes_groups_on_cpus_only():
  cfg = TransformerConfig()
  assert cfg.attention_cache_bytes == -1
  assert for_platform(cfg, 'cpu').attention_cache_bytes == CPU_CACHE_BYTES
  assert for_platform(cfg, 'tpu').attention_cache_bytes == 0
  chosen = TransformerConfig(attention_cache_bytes=4096)
  assert for_platform(chosen, 'tpu').attention_cache_bytes == 4096
  assert any('attention_cache_bytes=-2' in line
             for line in problems({'attention_cache_bytes': -2}))


@pytest.mark.parametrize('platform, model, expected', [
    ('gpu', dict(dtype='bfloat16'), 'cudnn'),
    ('cuda', dict(dtype='float16', d_model=2048, n_heads=16), 'cudnn'),  # head_dim 128
    ('gpu', dict(dtype='float32'), 'chunked'),  # cuDNN has no float32 attention
    ('gpu', dict(dtype='bfloat16', d_model=2048, n_heads=8), 'chunked'),  # head_dim 256
    ('gpu', dict(dtype='bfloat16', d_model=60, n_heads=6), 'chunked'),  # head_dim 10
    ('cpu', dict(dtype='bfloat16'), 'chunked'),
    ('tpu', dict(dtype='bfloat16'), 'chunked'),
])
def test_auto_attention_is_cudnn_on_a_gpu_where_cudnn_applies(platform, model, expected):
  cfg = TransformerConfig(**{**dict(d_model=512, n_heads=8), **model})
  assert cfg.attention_impl == 'auto'
  assert for_platform(cfg.derived(), platform).attention_impl == expected
  chosen = TransformerConfig(attention_impl='xla', dtype='bfloat16').derived()
  assert for_platform(chosen, 'gpu').attention_impl == 'xla'  # an explicit choice is kept


@pytest.mark.skipif(jax.default_backend() != 'gpu', reason='cuDNN attention needs an NVIDIA GPU')
def test_cudnn_attention_equals_the_chunked_path_in_bfloat16():
  """On a GPU: cuDNN's fused attention against the chunked path and the float64 reference, in
  bfloat16 (outputs and gradients within bfloat16 round-off), grouped-query heads included."""
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(5)
  batch, length, kv_heads, groups, dim = 2, 256, 2, 4, 64
  q = rng.standard_normal((batch, length, kv_heads, groups, dim)) / np.sqrt(dim)
  k = rng.standard_normal((batch, length, kv_heads, dim))
  v = rng.standard_normal((batch, length, kv_heads, dim))
  cotangent = rng.standard_normal(q.shape)
  q16, k16, v16, c16 = (jnp.asarray(x, jnp.bfloat16) for x in (q, k, v, cotangent))

  def run(impl):
    def weighted(q, k, v):
      return (causal_attention(q, k, v, 64, impl).astype(jnp.float32) * c16).sum()
    out = jax.jit(causal_attention, static_argnums=(3, 4))(q16, k16, v16, 64, impl)
    grads = jax.jit(jax.grad(weighted, argnums=(0, 1, 2)))(q16, k16, v16)
    return np.asarray(out, np.float32), [np.asarray(g, np.float32) for g in grads]

  cudnn_out, cudnn_grads = run('cudnn')
  chunked_out, chunked_grads = run('chunked')
  expected = reference_attention(np.asarray(q16, np.float64).reshape(batch, length, -1, dim),
                                 np.asarray(k16, np.float64), np.asarray(v16, np.float64))
  np.testing.assert_allclose(cudnn_out.reshape(expected.shape), expected, atol=2e-2)
  np.testing.assert_allclose(cudnn_out, chunked_out, atol=2e-2)
  for fused, chunked in zip(cudnn_grads, chunked_grads):
    scale = np.abs(chunked).max()
    np.testing.assert_allclose(fused / scale, chunked / scale, atol=2e-2)


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


@pytest.mark.parametrize('kv_heads', [4, 2, 1])
def test_dot_product_attention_path_equals_the_chunked_path(kv_heads):
  """attention_impl='xla' (jax.nn.dot_product_attention) against the reference and against
  today's chunked path: outputs and gradients equal to float32 round-off, GQA included."""
  rng = np.random.default_rng(2)
  batch, length, heads, dim = 2, 16, 4, 8
  q = rng.standard_normal((batch, length, kv_heads, heads // kv_heads, dim)).astype(np.float32)
  k = rng.standard_normal((batch, length, kv_heads, dim)).astype(np.float32)
  v = rng.standard_normal((batch, length, kv_heads, dim)).astype(np.float32)
  cotangent = rng.standard_normal(q.shape).astype(np.float32)

  def run(impl):
    def weighted(q, k, v):
      return (causal_attention(q, k, v, 4, impl) * cotangent).sum()
    out = jax.jit(causal_attention, static_argnums=(3, 4))(q, k, v, 4, impl)
    return out, jax.jit(jax.grad(weighted, argnums=(0, 1, 2)))(q, k, v)

  library_out, library_grads = run('xla')
  chunked_out, chunked_grads = run('chunked')
  expected = reference_attention(q.reshape(batch, length, heads, dim), k, v)
  np.testing.assert_allclose(np.asarray(library_out).reshape(expected.shape), expected,
                             rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(library_out, chunked_out, rtol=1e-5, atol=1e-6)
  for library, chunked in zip(library_grads, chunked_grads):
    np.testing.assert_allclose(library, chunked, rtol=1e-4, atol=1e-5)


def test_model_with_dot_product_attention_equals_the_chunked_model():
  """The whole model (rotary, grouped-query) with attention_impl='xla' vs 'chunked', same
  parameters: logits and parameter gradients equal to float32 round-off."""
  import flax.linen as nn  # pylint: disable=import-outside-toplevel
  from models.config import TransformerConfig  # pylint: disable=import-outside-toplevel
  from models.transformer import Transformer  # pylint: disable=import-outside-toplevel
  base = dict(vocab_size=32, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, max_len=32,
              attention_query_chunk=8)
  tokens = np.random.default_rng(3).integers(0, 32, (2, 32))
  chunked = Transformer(TransformerConfig(**base).derived())
  library = Transformer(TransformerConfig(**base, attention_impl='xla').derived())
  params = nn.meta.unbox(jax.jit(chunked.init)(jax.random.PRNGKey(0), tokens)['params'])

  def logits_and_grads(model):
    def loss(params):
      return jax.nn.logsumexp(model.apply({'params': params}, tokens), axis=-1).mean()
    return jax.jit(lambda p: (model.apply({'params': p}, tokens), jax.grad(loss)(p)))(params)

  chunked_logits, chunked_grads = logits_and_grads(chunked)
  library_logits, library_grads = logits_and_grads(library)
  np.testing.assert_allclose(library_logits, chunked_logits, rtol=1e-5, atol=1e-5)
  for a, b in zip(jax.tree.leaves(library_grads), jax.tree.leaves(chunked_grads)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize('overrides, expected', [
    (['--config.model.dtype=bfloat16'], 'model.attention_impl=cudnn needs an NVIDIA GPU but the '
     'devices are cpu; use --config.model.attention_impl=chunked (or xla)'),
    ([], 'model.attention_impl=cudnn needs model.dtype=bfloat16 or float16'),
])
@pytest.mark.skipif(jax.default_backend() == 'gpu', reason='on a GPU cuDNN attention runs')
def test_cudnn_attention_off_a_gpu_is_a_one_line_error(capsys, overrides, expected):
  import launch  # pylint: disable=import-outside-toplevel
  argv = ['bench', '--config', 'configs/tiny.py', '--config.model.attention_impl=cudnn',
          *overrides, '--steps', '1']
  assert launch.main(argv) == 2
  lines = capsys.readouterr().err.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith('error: ') and expected in lines[0], lines
