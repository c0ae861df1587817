"""The decoder-only Transformer: embeddings, a stack of pre-norm blocks, final norm, logits.

`Transformer(cfg)(tokens_BxL, deterministic=True) -> logits_BxLxV` (float32 logits).
With a KV cache (`cache=(k_NxBxSxKxDh, v_NxBxSxKxDh)` for the N layers, and the `DecodeSlots`
of the new tokens; see models/decoding.py) it returns `(logits_BxTxV, updated cache)`.
The block stack is either unrolled or an `nn.scan` over a leading 'layers' parameter axis;
each block can be rematerialised with a named policy (`models/remat.py`).

`model.kind='encoder'` makes the attention bidirectional (an encoder stack); `mask_BxL` hides
padding tokens from attention, `context_BxSxD` (an encoder's output) adds a cross-attention
sublayer to every block (the decoder of models/encoder_decoder.py), and `hidden=True` returns
the final-norm activations [B, L, D] instead of logits (models/classifier.py pools them).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
from einops import rearrange

from models import mup
from models.attention import CausalSelfAttention, DecodeSlots
from models.config import TransformerConfig
from models.layers import (DenseGeneral, Mlp, Norm, add_positions, dtype_of, matmul_2d,
                           param_with_axes)
from models.remat import remat_policy

RESIDUAL_AXES = ('act_batch', 'act_length', 'act_embed')


class Block(nn.Module):
  """x + Attn(Norm(x)), [x + CrossAttn(Norm(x), context)], then x + Mlp(Norm(x)); activations
  pinned after each sublayer."""
  cfg: TransformerConfig
  deterministic: bool = True
  causal: bool = True

  @nn.compact
  def __call__(self, x_BxLxD: jax.Array, layer_kv=None, slots: DecodeSlots | None = None,
               mask_BxL=None, context_BxSxD=None, context_mask_BxS=None):
    cfg = self.cfg
    drop = nn.Dropout(cfg.dropout, deterministic=self.deterministic)
    attn = CausalSelfAttention(cfg, self.deterministic, self.causal, name='attn')
    h = attn(Norm(cfg, name='attn_norm')(x_BxLxD), layer_kv, slots, mask_BxL)
    if layer_kv is not None:
      h, layer_kv = h
    x_BxLxD = nn.with_logical_constraint(x_BxLxD + drop(h), RESIDUAL_AXES)
    if context_BxSxD is not None:
      cross = CausalSelfAttention(cfg, self.deterministic, False, name='cross_attn')
      h = cross(Norm(cfg, name='cross_norm')(x_BxLxD), mask_BxS=context_mask_BxS,
                context_BxSxD=context_BxSxD)
      x_BxLxD = nn.with_logical_constraint(x_BxLxD + drop(h), RESIDUAL_AXES)
    h = Mlp(cfg, name='mlp')(Norm(cfg, name='mlp_norm')(x_BxLxD))
    x_BxLxD = nn.with_logical_constraint(x_BxLxD + drop(h), RESIDUAL_AXES)
    return x_BxLxD, layer_kv


class Transformer(nn.Module):
  cfg: TransformerConfig

  @nn.compact
  def __call__(self, tokens_BxL: jax.Array, deterministic: bool = True, cache=None,
               slots: DecodeSlots | None = None, mask_BxL=None, context_BxSxD=None,
               context_mask_BxS=None, hidden: bool = False):
    cfg = self.cfg
    causal = cfg.kind != 'encoder'
    embed_init = nn.initializers.normal(cfg.init_std)
    table_VxD = param_with_axes(self, 'embedding', embed_init, (cfg.padded_vocab, cfg.d_model),
                                ('vocab', 'embed'), cfg)
    # Look up in a table whole along 'embed' (as FSDP gathers any weight before use): a table
    # split on both dims makes the SPMD partitioner replicate the looked-up activations.
    lookup_VxD = nn.with_logical_constraint(table_VxD, ('vocab', None))
    x_BxLxD = jnp.take(lookup_VxD, tokens_BxL, axis=0)
    if cfg.position == 'learned':
      positions_LxD = param_with_axes(self, 'position_embedding', embed_init,
                                      (cfg.max_len, cfg.d_model), (None, 'embed'), cfg)
      if slots is None:
        x_BxLxD = add_positions(x_BxLxD, positions_LxD[:tokens_BxL.shape[1]])
      else:
        x_BxLxD = x_BxLxD + jnp.take(positions_LxD, slots.positions(tokens_BxL.shape[1]), axis=0)
    x_BxLxD = nn.Dropout(cfg.dropout, deterministic=deterministic)(x_BxLxD)
    x_BxLxD = nn.with_logical_constraint(x_BxLxD, RESIDUAL_AXES)
    self.sow('intermediates', 'embedding', x_BxLxD)  # kept only when asked (coordinate check)

    block = Block
    if cfg.remat != 'none':
      block = nn.remat(Block, policy=remat_policy(cfg.remat), prevent_cse=not cfg.scan_layers)
    if cache is not None:  # decoding: no gradients, so no remat
      x_BxLxD, cache = _cached_stack(cfg, x_BxLxD, cache, slots)
    elif cfg.scan_layers:
      stack = nn.scan(block, variable_axes={'params': 0}, split_rngs={'params': True,
                                                                        'dropout': True},
                      in_axes=nn.broadcast, length=cfg.n_layers,
                      metadata_params={nn.PARTITION_NAME: 'layers'})
      x_BxLxD, _ = stack(cfg, deterministic, causal, name='layers')(
          x_BxLxD, None, None, mask_BxL, context_BxSxD, context_mask_BxS)
    else:
      for i in range(cfg.n_layers):
        x_BxLxD, _ = block(cfg, deterministic, causal, name=f'layer_{i}')(
            x_BxLxD, None, None, mask_BxL, context_BxSxD, context_mask_BxS)

    x_BxLxD = Norm(cfg, name='final_norm')(x_BxLxD)
    if hidden:
      return x_BxLxD
    if cfg.tie_embeddings:
      x_NxD = rearrange(x_BxLxD, 'b l d -> (b l) d')  # 2-D matmul: faster on XLA:CPU
      logits_NxV = matmul_2d(x_NxD, table_VxD.astype(x_NxD.dtype), cfg, transpose_w=True)
      logits_BxLxV = rearrange(logits_NxV, '(b l) v -> b l v', b=tokens_BxL.shape[0])
    else:
      logits_BxLxV = DenseGeneral(cfg, (cfg.d_model,), (cfg.padded_vocab,), ('embed', 'vocab'),
                                  name='lm_head')(x_BxLxD)
    logits_BxLxV = nn.with_logical_constraint(logits_BxLxV, ('act_batch', 'act_length', 'act_vocab'))
    logits_BxLxV = logits_BxLxV.astype(jnp.float32)
    if cfg.parameterization == 'mup':  # the readout's 1/m output multiplier (models/mup.py)
      logits_BxLxV = logits_BxLxV * mup.readout_multiplier(cfg)
    if cfg.padded_vocab > cfg.vocab_size:  # padding rows never win: the loss is unchanged
      is_real_V = jnp.arange(cfg.padded_vocab) < cfg.vocab_size
      logits_BxLxV = jnp.where(is_real_V, logits_BxLxV, jnp.finfo(jnp.float32).min)
    return logits_BxLxV if cache is None else (logits_BxLxV, cache)


def _cached_stack(cfg: TransformerConfig, x_BxTxD: jax.Array, cache, slots: DecodeSlots):
  """The block stack over T new tokens, reading and writing the layers' KV caches (called
  inside Transformer.__call__, so the blocks are its submodules with the training names)."""
  if cfg.scan_layers:
    stack = nn.scan(Block, variable_axes={'params': 0}, split_rngs={'params': True},
                    in_axes=(0, nn.broadcast), length=cfg.n_layers,
                    metadata_params={nn.PARTITION_NAME: 'layers'})
    return stack(cfg, True, name='layers')(x_BxTxD, cache, slots)
  k_NxBxSxKxDh, v_NxBxSxKxDh = cache
  new_k, new_v = [], []
  for i in range(cfg.n_layers):
    x_BxTxD, (k, v) = Block(cfg, True, name=f'layer_{i}')(
        x_BxTxD, (k_NxBxSxKxDh[i], v_NxBxSxKxDh[i]), slots)
    new_k.append(k)
    new_v.append(v)
  return x_BxTxD, (jnp.stack(new_k), jnp.stack(new_v))


def init_params(cfg: TransformerConfig, rng: jax.Array, seq_len: int):
  """Initial (boxed, logically annotated) parameters for a [1, seq_len] token input."""
  tokens = jnp.zeros((1, seq_len), jnp.int32)
  return Transformer(cfg).init({'params': rng}, tokens)['params']


__all__ = ['Transformer', 'Block', 'init_params', 'dtype_of']
