"""Causal attention in blocks of queries, head-major, with a hand-written backward pass.

The training path of `model.attention_impl=chunked` (the default). Queries are cut into blocks of
`chunk`; block [start, end) attends to keys 0 .. end-1 only, so the masked upper blocks of the
score matrix are never computed ((C+1)/2C of the square for C blocks). It is exact: every block
is an ordinary masked softmax over all the keys it may see.

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
