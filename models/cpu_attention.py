"""Causal self-attention in float32 on one CPU device, as a C++ kernel (`cpu_attention.cc`).

`model.attention_impl=cpu`, and what `auto` takes where it can run (one CPU device, float32,
the kernels built: `resolve_attention_impl`). Exact causal softmax attention, like the chunked
path (models/blocked_attention.py), computed the way PyTorch's fused CPU attention is: per
(batch, head) pair and block of queries, the scores, their softmax and the value product stay in
one thread's cache, and the backward recomputes the probabilities from the saved row
log-sum-exp instead of storing them. It reads the model's layouts in place (no head-major
copies), and its products are single-threaded OpenBLAS calls on XLA's own thread pool.

Checked against the float64 NumPy reference and the chunked path (tests/test_cpu_attention.py).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from models.cpu_kernels import choose

FORWARD_TARGET, BACKWARD_TARGET = 'cpu_causal_attention_fwd', 'cpu_causal_attention_bwd'


def resolve_attention_impl(requested: str, resolved: str, platform: str, n_devices: int,
                           dtype: str) -> str:
  """`model.attention_impl` for this run, given what the user asked for (`requested`) and what
  the platform's default made of it (`resolved`, models/attention.for_platform): `auto` takes
  this kernel where it can run; an explicit `cpu` that cannot run is an error."""
  if requested not in ('auto', 'cpu'):
    return resolved
  fallback = 'chunked' if resolved == 'cpu' else resolved  # resolved is cpu when asked for
  return choose('attention_impl', requested, 'cpu', fallback, platform, n_devices, dtype,
                'attention uses the chunked XLA path, not the CPU kernel')


def _forward_call(q_BxLxHxDh, k_BxLxKxDh, v_BxLxKxDh, chunk):
  batch, length, heads, _ = q_BxLxHxDh.shape
  call = jax.ffi.ffi_call(FORWARD_TARGET, (
      jax.ShapeDtypeStruct(q_BxLxHxDh.shape, jnp.float32),
      jax.ShapeDtypeStruct((batch, heads, length), jnp.float32)), vmap_method='sequential')
  return call(q_BxLxHxDh, k_BxLxKxDh, v_BxLxKxDh, chunk=np.int32(chunk))


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def causal_attention(q_BxLxHxDh: jax.Array, k_BxLxKxDh: jax.Array, v_BxLxKxDh: jax.Array,
                     chunk: int) -> jax.Array:
  """softmax(q k^T + causal mask) v, [B, L, H, Dh] (q already scaled; query head h uses kv
  head h // (H / K)), in blocks of `chunk` queries (0: one block); float32."""
  return _forward_call(q_BxLxHxDh, k_BxLxKxDh, v_BxLxKxDh, chunk)[0]


def _attention_fwd(q_BxLxHxDh, k_BxLxKxDh, v_BxLxKxDh, chunk):
  out_BxLxHxDh, lse_BxHxL = _forward_call(q_BxLxHxDh, k_BxLxKxDh, v_BxLxKxDh, chunk)
  return out_BxLxHxDh, (q_BxLxHxDh, k_BxLxKxDh, v_BxLxKxDh, out_BxLxHxDh, lse_BxHxL)


def _attention_bwd(chunk, residuals, dout_BxLxHxDh):
  q, k, v, _, _ = residuals
  call = jax.ffi.ffi_call(BACKWARD_TARGET, (
      jax.ShapeDtypeStruct(q.shape, jnp.float32), jax.ShapeDtypeStruct(k.shape, jnp.float32),
      jax.ShapeDtypeStruct(v.shape, jnp.float32)), vmap_method='sequential')
  return call(*residuals, dout_BxLxHxDh.astype(jnp.float32), chunk=np.int32(chunk))


causal_attention.defvjp(_attention_fwd, _attention_bwd)
