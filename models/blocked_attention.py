"""Causal attention in blocks of queries, head-major, with a hand-written backward pass.

The training path of `model.attention_impl=chunked` (what the default, auto, uses on CPUs and
TPUs). Queries are cut into blocks of `chunk`; block [start, end) attends to keys 0 .. end-1
only, so the masked upper blocks of the score matrix are never computed ((C+1)/2C of the square
for C blocks). It is exact: every block is an ordinary masked softmax over all the keys it may
see.

What makes it fast on a CPU, where the score tensors [B, K, G, C, S] are memory-bound and the
matrix products small:
- head-major operands: q [B, K, G, L, Dh], k and v [B, K, L, Dh], so every product is a batched
  matrix product over (B, K) with the grouped query heads G folded into its rows, and nothing
  between them is transposed;
- the softmax is normalised after the value product (o = (e v) / l with e = exp(s - max), l = sum
  e): a division over [C, Dh] instead of over [C, S];
- `jax.custom_vjp` with the textbook backward: from the saved e and l,
    dv = e^T (do / l),   dp = do v^T,   ds = e (dp - rowsum(do o)) / l,   dq = ds k,   dk = ds^T q,
  one elementwise pass over the scores (ds) where automatic differentiation of where/softmax/
  divide makes several.
Checked against a float64 NumPy reference, forward and gradients (tests/test_attention.py).

`grouped_causal_attention` runs the (batch, kv-head) pairs in sequential groups (`jax.lax.map`),
each small enough that one query block of its scores, and what the softmax and its backward make
of them, stays in the cache (`cache_bytes`, about a core's L2): on this 2-core CPU a GPT-2-small
attention layer's forward and backward take ~10% less time than with every pair at once. The
groups split the batch and head axes on their inner side (pair (b, k) goes to group
(b mod gb, k mod gk)), so a batch or head axis sharded over devices stays sharded in every group.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np


def query_blocks(length: int, chunk: int) -> list[tuple[int, int]]:
  """[(start, end), ...] of the query blocks; chunk 0 (or one that does not divide the length):
  one block."""
  chunk = chunk if 0 < chunk < length and length % chunk == 0 else length
  return [(start, start + chunk) for start in range(0, length, chunk)]


def pair_groups(batch: int, kv_heads: int, pair_bytes: int, cache_bytes: int) -> tuple[int, int]:
  """(gb, gk): run the batch x kv-head pairs in gb * gk sequential groups of [batch / gb,
  kv_heads / gk] pairs, the fewest groups whose scores (`pair_bytes` a pair) fit `cache_bytes`
  (one pair a group when none fits; batch split before heads). cache_bytes 0: (1, 1)."""
  if cache_bytes <= 0:
    return 1, 1
  splits = [(gb, gk) for gb in range(1, batch + 1) if batch % gb == 0
            for gk in range(1, kv_heads + 1) if kv_heads % gk == 0]
  fitting = [(gb * gk, gk, gb) for gb, gk in splits
             if (batch // gb) * (kv_heads // gk) * pair_bytes <= cache_bytes]
  _, gk, gb = min(fitting) if fitting else (0, kv_heads, batch)
  return gb, gk


def grouped_causal_attention(q_BxLxKxGxDh: jax.Array, k_BxLxKxDh: jax.Array,
                             v_BxLxKxDh: jax.Array, chunk: int, cache_bytes: int) -> jax.Array:
  """`blocked_causal_attention` on the model's layout [B, L, K, G, Dh] (one transpose in, one
  out), over sequential groups of (batch, kv-head) pairs that fit `cache_bytes` (0: one group)."""
  batch, length, kv_heads, groups, head_dim = q_BxLxKxGxDh.shape
  block = query_blocks(length, chunk)[0]
  pair_bytes = groups * (block[1] - block[0]) * length * 4  # float32 scores of one query block
  gb, gk = pair_groups(batch, kv_heads, pair_bytes, cache_bytes)
  inner = (batch // gb, kv_heads // gk)

  def split(x_BxLxKx_Dh):  # -> [gb * gk, B / gb, K / gk, (G,) L, Dh]
    x = x_BxLxKx_Dh.reshape(inner[0], gb, length, inner[1], gk, *x_BxLxKx_Dh.shape[3:])
    order = (1, 4, 0, 3, *range(5, x.ndim - 1), 2, x.ndim - 1)
    return jnp.transpose(x, order).reshape(gb * gk, *inner, *x.shape[5:-1], length, head_dim)

  q, k, v = split(q_BxLxKxGxDh), split(k_BxLxKxDh), split(v_BxLxKxDh)
  if gb * gk == 1:
    out = blocked_causal_attention(q[0], k[0], v[0], chunk)[None]
  else:
    out = jax.lax.map(lambda qkv: blocked_causal_attention(*qkv, chunk), (q, k, v))
  out = out.reshape(gb, gk, *inner, groups, length, head_dim)  # [gb, gk, B/gb, K/gk, G, L, Dh]
  out = jnp.transpose(out, (2, 0, 5, 3, 1, 4, 6))  # [B/gb, gb, L, K/gk, gk, G, Dh]
  return out.reshape(batch, length, kv_heads, groups, head_dim)


def _block_scores(q_BxKxGxCxDh: jax.Array, k_BxKxLxDh: jax.Array, start: int,
                  end: int) -> jax.Array:
  """q k^T of one block against keys 0 .. end-1, -inf above the diagonal (float32)."""
  scores = jnp.einsum('bkgqd,bksd->bkgqs', q_BxKxGxCxDh, k_BxKxLxDh[:, :, :end],
                      preferred_element_type=jnp.float32)
  return jnp.where(np.tril(np.ones((end - start, end), dtype=bool), k=start), scores, -jnp.inf)


def _concat_queries(blocks: list[jax.Array]) -> jax.Array:
  return blocks[0] if len(blocks) == 1 else jnp.concatenate(blocks, axis=3)


def _forward(q_BxKxGxLxDh, k_BxKxLxDh, v_BxKxLxDh, chunk):
  """(output, per block exp(s - max) as v's dtype, row sums [B, K, G, L, 1] float32)."""
  outputs, exps, sums = [], [], []
  for start, end in query_blocks(q_BxKxGxLxDh.shape[3], chunk):
    scores = _block_scores(q_BxKxGxLxDh[:, :, :, start:end], k_BxKxLxDh, start, end)
    exp = jnp.exp(scores - jnp.max(scores, axis=-1, keepdims=True))
    total = jnp.sum(exp, axis=-1, keepdims=True)
    exp = exp.astype(v_BxKxLxDh.dtype)
    out = jnp.einsum('bkgqs,bksd->bkgqd', exp, v_BxKxLxDh[:, :, :end],
                     preferred_element_type=jnp.float32)
    outputs.append((out / total).astype(v_BxKxLxDh.dtype))
    exps.append(exp)
    sums.append(total)
  return _concat_queries(outputs), exps, _concat_queries(sums)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def blocked_causal_attention(q_BxKxGxLxDh: jax.Array, k_BxKxLxDh: jax.Array,
                             v_BxKxLxDh: jax.Array, chunk: int) -> jax.Array:
  """softmax(q k^T + causal mask) v, head-major (q already scaled): [B, K, G, L, Dh]."""
  return _forward(q_BxKxGxLxDh, k_BxKxLxDh, v_BxKxLxDh, chunk)[0]


def _attention_fwd(q_BxKxGxLxDh, k_BxKxLxDh, v_BxKxLxDh, chunk):
  out, exps, sums = _forward(q_BxKxGxLxDh, k_BxKxLxDh, v_BxKxLxDh, chunk)
  return out, (q_BxKxGxLxDh, k_BxKxLxDh, v_BxKxLxDh, out, exps, sums)


def _attention_bwd(chunk, residuals, dout_BxKxGxLxDh):
  q, k, v, out, exps, sums = residuals
  f32, length = jnp.float32, q.shape[3]
  inverse_sums = 1.0 / sums
  dout = dout_BxKxGxLxDh.astype(f32)
  row_dot = jnp.einsum('bkgqd,bkgqd->bkgq', dout, out.astype(f32))[..., None]  # = rowsum(p dp)
  dout_normalised = (dout * inverse_sums).astype(v.dtype)
  dq_blocks, dk, dv = [], jnp.zeros(k.shape, f32), jnp.zeros(v.shape, f32)
  for (start, end), exp in zip(query_blocks(length, chunk), exps):
    rows = slice(start, end)
    dv_block = jnp.einsum('bkgqs,bkgqd->bksd', exp, dout_normalised[:, :, :, rows],
                          preferred_element_type=f32)
    dprobs = jnp.einsum('bkgqd,bksd->bkgqs', dout_BxKxGxLxDh[:, :, :, rows], v[:, :, :end],
                        preferred_element_type=f32)
    dscores = (exp.astype(f32) * ((dprobs - row_dot[:, :, :, rows]) * inverse_sums[:, :, :, rows])
               ).astype(q.dtype)
    dq_blocks.append(jnp.einsum('bkgqs,bksd->bkgqd', dscores, k[:, :, :end],
                                preferred_element_type=f32))
    dk_block = jnp.einsum('bkgqs,bkgqd->bksd', dscores, q[:, :, :, rows],
                          preferred_element_type=f32)
    keys_after = [(0, 0), (0, 0), (0, length - end), (0, 0)]
    dv = dv + jnp.pad(dv_block, keys_after)
    dk = dk + jnp.pad(dk_block, keys_after)
  return (_concat_queries(dq_blocks).astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype))


blocked_causal_attention.defvjp(_attention_fwd, _attention_bwd)
