"""A sequence classifier: a Transformer backbone, pooled, then a linear head over the classes.

`Classifier(cfg, n_classes, pooling)(tokens_BxL, mask_BxL) -> logits_BxC` (float32). The
backbone is `Transformer` (models/transformer.py) returning its final-norm activations: an
encoder (`cfg.kind='encoder'`, bidirectional, padding hidden by `mask_BxL`) or a decoder (causal,
e.g. a pretrained language model; right padding never reaches a real token). Pooling:
  mean   the mean over the real tokens (mask_BxL True);
  first  the first token (an encoder's; a causal decoder's first token sees only itself);
  last   the last real token (the one that has seen the whole text in a decoder).
The head (kernel ('embed', None) and a bias: classes replicated) is the only new parameter.
"""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from models.config import TransformerConfig
from models.layers import DenseGeneral
from models.transformer import Transformer

POOLINGS = ('mean', 'first', 'last')


def pool(hidden_BxLxD: jax.Array, mask_BxL: jax.Array, pooling: str) -> jax.Array:
  """[B, D] summary of each row's real tokens (`mask_BxL` True), per POOLINGS."""
  mask_BxL = mask_BxL.astype(hidden_BxLxD.dtype)
  if pooling == 'mean':
    total_BxD = jnp.einsum('bld,bl->bd', hidden_BxLxD, mask_BxL)
    return total_BxD / jnp.maximum(jnp.sum(mask_BxL, axis=1, keepdims=True), 1.0)
  if pooling == 'first':
    return hidden_BxLxD[:, 0]
  if pooling == 'last':
    last_B = jnp.maximum(jnp.sum(mask_BxL, axis=1).astype(jnp.int32) - 1, 0)
    return jnp.take_along_axis(hidden_BxLxD, last_B[:, None, None], axis=1)[:, 0]
  raise ValueError(f'unknown pooling {pooling!r}; pick one of {", ".join(POOLINGS)}')


class Classifier(nn.Module):
  cfg: TransformerConfig
  n_classes: int
  pooling: str = 'mean'

  @nn.compact
  def __call__(self, tokens_BxL: jax.Array, mask_BxL: jax.Array,
               deterministic: bool = True) -> jax.Array:
    cfg = self.cfg
    attention_mask_BxL = mask_BxL if cfg.kind == 'encoder' else None
    hidden_BxLxD = Transformer(cfg, name='backbone')(tokens_BxL, deterministic,
                                                     mask_BxL=attention_mask_BxL, hidden=True)
    pooled_BxD = pool(hidden_BxLxD, mask_BxL, self.pooling)
    pooled_BxD = nn.with_logical_constraint(pooled_BxD, ('act_batch', 'act_embed'))
    head_cfg = dataclasses.replace(cfg, use_bias=True)  # class priors, even if the backbone
    logits_BxC = DenseGeneral(head_cfg, (cfg.d_model,), (self.n_classes,), ('embed', None),
                              name='head')(pooled_BxD)  # has no biases
    return logits_BxC.astype(jnp.float32)
