"""Causal self-attention: multi-head, grouped-query or multi-query, with optional rotary positions.

Query heads are grouped over the K key/value heads (G = H // K queries share one K/V head);
K = H is multi-head attention, K = 1 multi-query. Q/K/V kernels are column parallel (split on
heads), the output kernel row parallel, when a tensor-parallel rule set is in force.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from einops import rearrange

from models.config import TransformerConfig
from models.layers import DenseGeneral, rotary


class CausalSelfAttention(nn.Module):
  cfg: TransformerConfig
  deterministic: bool = True

  @nn.compact
  def __call__(self, x_BxLxD: jax.Array) -> jax.Array:
    cfg = self.cfg
    n_heads, n_kv, head_dim = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
    groups = n_heads // n_kv
    d = (cfg.d_model,)
    q_BxLxHxDh = DenseGeneral(cfg, d, (n_heads, head_dim), ('embed', 'heads', 'head_dim'),
                              name='query')(x_BxLxD)
    k_BxLxKxDh = DenseGeneral(cfg, d, (n_kv, head_dim), ('embed', 'kv_heads', 'head_dim'),
                              name='key')(x_BxLxD)
    v_BxLxKxDh = DenseGeneral(cfg, d, (n_kv, head_dim), ('embed', 'kv_heads', 'head_dim'),
                              name='value')(x_BxLxD)
    q_BxLxHxDh = nn.with_logical_constraint(
        q_BxLxHxDh, ('act_batch', 'act_length', 'act_heads', None))
    if cfg.position == 'rope':
      q_BxLxHxDh = rotary(q_BxLxHxDh, cfg.rope_theta)
      k_BxLxKxDh = rotary(k_BxLxKxDh, cfg.rope_theta)

    # Query head h = k * G + g shares key/value head k.
    q_BxLxKxGxDh = rearrange(q_BxLxHxDh, 'b l (k g) d -> b l k g d', k=n_kv, g=groups)
    q_BxLxKxGxDh = q_BxLxKxGxDh * jnp.asarray(1.0 / np.sqrt(head_dim), q_BxLxKxGxDh.dtype)
    out_BxLxKxGxDh = causal_attention(q_BxLxKxGxDh, k_BxLxKxDh, v_BxLxKxDh,
                                      cfg.attention_query_chunk)
    out_BxLxHxDh = rearrange(out_BxLxKxGxDh, 'b l k g d -> b l (k g) d')
    out_BxLxHxDh = nn.with_logical_constraint(
        out_BxLxHxDh, ('act_batch', 'act_length', 'act_heads', None))
    out_scale = 1.0 / np.sqrt(2 * cfg.n_layers)
    return DenseGeneral(cfg, (n_heads, head_dim), d, ('heads', 'head_dim', 'embed'), out_scale,
                        name='out')(out_BxLxHxDh)


def causal_attention(q_BxLxKxGxDh: jax.Array, k_BxLxKxDh: jax.Array, v_BxLxKxDh: jax.Array,
                     query_chunk: int) -> jax.Array:
  """softmax(q k^T + causal mask) v, over blocks of `query_chunk` queries (0: one block).

  Queries in block c only attend to keys 0 .. (c+1)*chunk - 1, so the masked-out upper blocks
  are never computed: with C blocks the work is (C+1)/2C of the full square. Exact, not an
  approximation: every block is an ordinary masked softmax over all the keys it can see.
  """
  length = q_BxLxKxGxDh.shape[1]
  chunk = query_chunk if 0 < query_chunk < length and length % query_chunk == 0 else length
  outputs = []
  for start in range(0, length, chunk):
    end = start + chunk
    scores_BxKxGxCxS = jnp.einsum('bqkgd,bskd->bkgqs', q_BxLxKxGxDh[:, start:end],
                                  k_BxLxKxDh[:, :end], preferred_element_type=jnp.float32)
    causal_CxS = np.tril(np.ones((chunk, end), dtype=bool), k=start)
    scores_BxKxGxCxS = jnp.where(causal_CxS, scores_BxKxGxCxS, jnp.finfo(jnp.float32).min)
    probs_BxKxGxCxS = jax.nn.softmax(scores_BxKxGxCxS, axis=-1).astype(v_BxLxKxDh.dtype)
    outputs.append(jnp.einsum('bkgqs,bskd->bqkgd', probs_BxKxGxCxS, v_BxLxKxDh[:, :end]))
  return outputs[0] if len(outputs) == 1 else jnp.concatenate(outputs, axis=1)
