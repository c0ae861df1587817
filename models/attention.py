"""Self- and cross-attention: multi-head, grouped-query or multi-query, with optional rotary positions.

Causal by default (the decoder); `causal=False` is the bidirectional attention of an encoder, a
key mask `mask_BxS` (True: a real token) hides padding, and `context_BxSxD` makes it
cross-attention (keys and values from an encoder's output, no rotary positions).

Query heads are grouped over the K key/value heads (G = H // K queries share one K/V head);
K = H is multi-head attention, K = 1 multi-query. Q/K/V kernels are column parallel (split on
heads), the output kernel row parallel, when a tensor-parallel rule set is in force.

Decoding (models/decoding.py) passes a layer's KV cache `(k_BxSxKxDh, v_BxSxKxDh)` and the
`DecodeSlots` (where the new tokens go in the cache, where each row's tokens start): the new
keys and values are written at `slots.index` and the queries attend over the whole cache, masked
to the row's own filled slots. Without a cache the training path below is unchanged.
"""

import dataclasses
from typing import NamedTuple


import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from einops import rearrange

from errors import UserError
from models import cpu_attention, mup
from models.blocked_attention import grouped_causal_attention
from models.config import TransformerConfig
from models.layers import DenseGeneral, rotary
from models.rope import scaling_of


class DecodeSlots(NamedTuple):
  """Where T new tokens sit in a KV cache of S slots: slots index .. index+T-1 of every row;
  row b's tokens start at slot start_B[b] (left padding), so its positions are slot - start."""
  index: jax.Array  # int32 scalar
  start_B: jax.Array  # int32 [B]

  def positions(self, length: int) -> jax.Array:
    slots_T = self.index + jnp.arange(length, dtype=jnp.int32)
    return jnp.maximum(slots_T[None, :] - self.start_B[:, None], 0)


class CausalSelfAttention(nn.Module):
  cfg: TransformerConfig
  deterministic: bool = True
  causal: bool = True

  @nn.compact
  def __call__(self, x_BxLxD: jax.Array, layer_kv=None, slots: DecodeSlots | None = None,
               mask_BxS: jax.Array | None = None, context_BxSxD: jax.Array | None = None):
    """The attention output; with a cache `layer_kv`, (output, the updated cache)."""
    cfg = self.cfg
    n_heads, n_kv, head_dim = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
    groups = n_heads // n_kv
    d = (cfg.d_model,)
    q_BxLxHxDh = DenseGeneral(cfg, d, (n_heads, head_dim), ('embed', 'heads', 'head_dim'),
                              mup.query_init_scale(cfg), name='query')(x_BxLxD)
    kv_source = x_BxLxD if context_BxSxD is None else context_BxSxD
    k_BxLxKxDh = DenseGeneral(cfg, d, (n_kv, head_dim), ('embed', 'kv_heads', 'head_dim'),
                              name='key')(kv_source)
    v_BxLxKxDh = DenseGeneral(cfg, d, (n_kv, head_dim), ('embed', 'kv_heads', 'head_dim'),
                              name='value')(kv_source)
    q_BxLxHxDh = nn.with_logical_constraint(
        q_BxLxHxDh, ('act_batch', 'act_length', 'act_heads', None))
    if cfg.position == 'rope' and context_BxSxD is None:
      positions_BxL = None if slots is None else slots.positions(x_BxLxD.shape[1])
      q_BxLxHxDh = rotary(q_BxLxHxDh, cfg.rope_theta, positions_BxL, scaling_of(cfg))
      k_BxLxKxDh = rotary(k_BxLxKxDh, cfg.rope_theta, positions_BxL, scaling_of(cfg))

    # Query head h = k * G + g shares key/value head k.
    q_BxLxKxGxDh = rearrange(q_BxLxHxDh, 'b l (k g) d -> b l k g d', k=n_kv, g=groups)
    q_BxLxKxGxDh = q_BxLxKxGxDh * jnp.asarray(mup.attention_scale(cfg), q_BxLxKxGxDh.dtype)
    masked = mask_BxS is not None or context_BxSxD is not None or not self.causal
    if layer_kv is None and masked:
      out_BxLxKxGxDh = masked_attention(q_BxLxKxGxDh, k_BxLxKxDh, v_BxLxKxDh, mask_BxS,
                                        self.causal and context_BxSxD is None)
    elif layer_kv is None:
      out_BxLxKxGxDh = causal_attention(q_BxLxKxGxDh, k_BxLxKxDh, v_BxLxKxDh,
                                        cfg.attention_query_chunk, cfg.attention_impl,
                                        max(cfg.attention_cache_bytes, 0))
    else:
      layer_kv = write_cache(layer_kv, k_BxLxKxDh, v_BxLxKxDh, slots.index)
      out_BxLxKxGxDh = cached_attention(q_BxLxKxGxDh, *layer_kv, slots)
    out_BxLxHxDh = rearrange(out_BxLxKxGxDh, 'b l k g d -> b l (k g) d')
    out_BxLxHxDh = nn.with_logical_constraint(
        out_BxLxHxDh, ('act_batch', 'act_length', 'act_heads', None))
    out_scale = 1.0 / np.sqrt(2 * cfg.n_layers)
    out_BxLxD = DenseGeneral(cfg, (n_heads, head_dim), d, ('heads', 'head_dim', 'embed'),
                             out_scale, name='out')(out_BxLxHxDh)
    return out_BxLxD if layer_kv is None else (out_BxLxD, layer_kv)


def write_cache(layer_kv, k_BxTxKxDh: jax.Array, v_BxTxKxDh: jax.Array, index: jax.Array):
  """The cache (k_BxSxKxDh, v_BxSxKxDh) with the T new keys/values written at slot `index`."""
  k_BxSxKxDh, v_BxSxKxDh = layer_kv
  at = (0, index, 0, 0)
  return (jax.lax.dynamic_update_slice(k_BxSxKxDh, k_BxTxKxDh.astype(k_BxSxKxDh.dtype), at),
          jax.lax.dynamic_update_slice(v_BxSxKxDh, v_BxTxKxDh.astype(v_BxSxKxDh.dtype), at))


def cached_attention(q_BxTxKxGxDh: jax.Array, k_BxSxKxDh: jax.Array, v_BxSxKxDh: jax.Array,
                     slots: DecodeSlots) -> jax.Array:
  """softmax(q k^T) v over the whole cache, each query seeing its row's slots start .. itself."""
  length = q_BxTxKxGxDh.shape[1]
  scores_BxKxGxTxS = jnp.einsum('bqkgd,bskd->bkgqs', q_BxTxKxGxDh, k_BxSxKxDh,
                                preferred_element_type=jnp.float32)
  slot_S = jnp.arange(k_BxSxKxDh.shape[1], dtype=jnp.int32)
  query_slot_T = slots.index + jnp.arange(length, dtype=jnp.int32)
  visible_BxTxS = ((slot_S[None, None, :] <= query_slot_T[None, :, None])
                   & (slot_S[None, None, :] >= slots.start_B[:, None, None]))
  scores_BxKxGxTxS = jnp.where(visible_BxTxS[:, None, None], scores_BxKxGxTxS,
                               jnp.finfo(jnp.float32).min)
  probs_BxKxGxTxS = jax.nn.softmax(scores_BxKxGxTxS, axis=-1).astype(v_BxSxKxDh.dtype)
  return jnp.einsum('bkgqs,bskd->bqkgd', probs_BxKxGxTxS, v_BxSxKxDh)


def causal_attention(q_BxLxKxGxDh: jax.Array, k_BxLxKxDh: jax.Array, v_BxLxKxDh: jax.Array,
                     query_chunk: int, impl: str = 'chunked', cache_bytes: int = 0) -> jax.Array:
  """softmax(q k^T + causal mask) v (q already scaled), computed as `impl` says:

  cpu      a C++ kernel for one CPU device in float32 (models/cpu_attention.py): the same
           blocks, each block's scores and softmax kept in a thread's cache, nothing of size
           [L, L] stored for the backward (it recomputes the probabilities).
  chunked  over blocks of `query_chunk` queries (0: one block), head-major, with a hand-written
           backward (models/blocked_attention.py). Queries in block c only attend to keys
           0 .. (c+1)*chunk - 1, so the masked-out upper blocks are never computed: with C blocks
           the work is (C+1)/2C of the full square. Exact, not an approximation. With
           `cache_bytes` > 0 the (batch, kv-head) pairs run in sequential groups that fit it.
  xla      `jax.nn.dot_product_attention(implementation='xla')`: the full square, masked.
  cudnn    the same call with implementation='cudnn': cuDNN's fused (flash) attention on an
           NVIDIA GPU, bfloat16 or float16 only (`check_attention_platform` says so up front).
  auto     resolved per platform by `for_platform` and `resolve_attention_impl` (train/
           experiment.py); a model built without them (a coordinate check, a test) computes the
           chunked path.
  """
  if impl not in ('chunked', 'auto'):
    # Head h = k * G + g, as jax.nn.dot_product_attention and the CPU kernel group them.
    q_BxLxHxDh = rearrange(q_BxLxKxGxDh, 'b l k g d -> b l (k g) d')
    if impl == 'cpu':
      out_BxLxHxDh = cpu_attention.causal_attention(q_BxLxHxDh, k_BxLxKxDh, v_BxLxKxDh,
                                                    query_chunk)
    else:
      out_BxLxHxDh = jax.nn.dot_product_attention(
          q_BxLxHxDh, k_BxLxKxDh, v_BxLxKxDh, scale=1.0, is_causal=True, implementation=impl)
    return rearrange(out_BxLxHxDh, 'b l (k g) d -> b l k g d', k=k_BxLxKxDh.shape[2])
  return grouped_causal_attention(q_BxLxKxGxDh, k_BxLxKxDh, v_BxLxKxDh, query_chunk,
                                  cache_bytes)


CPU_CACHE_BYTES = 1 << 20  # about one core's L2 cache: the group size that measured fastest
CUDNN_MAX_HEAD_DIM = 128  # cuDNN's fused attention: head_dim a multiple of 8, at most this


def auto_attention_impl(cfg: TransformerConfig, platform: str) -> str:
  """What model.attention_impl=auto means on `platform`: cuDNN's fused attention on an NVIDIA
  GPU when the model computes in bfloat16/float16 and its head_dim suits cuDNN (on an H100 it
  made llama_1b's step 2.4x faster than XLA's attention and 1.7x faster than the chunked one),
  else the chunked path (CPU, TPU, float32, odd head sizes)."""
  on_nvidia_gpu = platform in ('gpu', 'cuda')
  suits_cudnn = (cfg.dtype in ('bfloat16', 'float16') and cfg.head_dim % 8 == 0
                 and cfg.head_dim <= CUDNN_MAX_HEAD_DIM)
  return 'cudnn' if on_nvidia_gpu and suits_cudnn else 'chunked'


def for_platform(cfg: TransformerConfig, platform: str) -> TransformerConfig:
  """`cfg` with its automatic attention settings resolved for the devices' platform:
  model.attention_impl=auto (`auto_attention_impl`) and model.attention_cache_bytes=-1
  (CPU_CACHE_BYTES on CPUs, 0 = every pair at once on accelerators)."""
  if cfg.attention_impl == 'auto':
    cfg = dataclasses.replace(cfg, attention_impl=auto_attention_impl(cfg, platform))
  if cfg.attention_cache_bytes < 0:
    cache_bytes = CPU_CACHE_BYTES if platform == 'cpu' else 0
    cfg = dataclasses.replace(cfg, attention_cache_bytes=cache_bytes)
  return cfg


def check_attention_platform(impl: str, platform: str) -> None:
  """UserError unless `impl` (model.attention_impl) runs on `platform` (cpu, gpu, tpu)."""
  if impl == 'cudnn' and platform not in ('gpu', 'cuda'):
    raise UserError(f'model.attention_impl=cudnn needs an NVIDIA GPU but the devices are '
                    f'{platform}; use --config.model.attention_impl=chunked (or xla)')


def masked_attention(q_BxLxKxGxDh: jax.Array, k_BxSxKxDh: jax.Array, v_BxSxKxDh: jax.Array,
                     mask_BxS: jax.Array | None, causal: bool) -> jax.Array:
  """softmax(q k^T) v where query i sees key j if mask_BxS[b, j] (None: every key) and, when
  `causal`, j <= i: an encoder's bidirectional attention, cross-attention, padded decoders."""
  length, keys = q_BxLxKxGxDh.shape[1], k_BxSxKxDh.shape[1]
  scores_BxKxGxLxS = jnp.einsum('bqkgd,bskd->bkgqs', q_BxLxKxGxDh, k_BxSxKxDh,
                                preferred_element_type=jnp.float32)
  visible_BxLxS = jnp.ones((1, length, keys), bool)
  if mask_BxS is not None:
    visible_BxLxS = visible_BxLxS & mask_BxS[:, None, :].astype(bool)
  if causal:
    visible_BxLxS = visible_BxLxS & np.tril(np.ones((length, keys), dtype=bool))[None]
  scores_BxKxGxLxS = jnp.where(visible_BxLxS[:, None, None], scores_BxKxGxLxS,
                               jnp.finfo(jnp.float32).min)
  probs_BxKxGxLxS = jax.nn.softmax(scores_BxKxGxLxS, axis=-1).astype(v_BxSxKxDh.dtype)
  return jnp.einsum('bkgqs,bskd->bqkgd', probs_BxKxGxLxS, v_BxSxKxDh)
