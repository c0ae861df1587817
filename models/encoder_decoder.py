"""A T5-style encoder-decoder: a bidirectional encoder stack and a causal decoder stack whose
blocks cross-attend to the encoder's output, both built from models/transformer.py.

`EncoderDecoder(cfg)(inputs_BxS, decoder_inputs_BxT) -> logits_BxTxV` (float32). The encoder is
`Transformer` with kind 'encoder' returning its final-norm activations, the decoder `Transformer`
with kind 'decoder' given them as `context_BxSxD` (each block then adds a cross-attention
sublayer). Both stacks have `cfg.n_layers` blocks and their own embedding table; every
parameter carries the same logical axis names as the decoder-only model's, so every rule set in
sharding/rules.py shards it. `encode` and `decode` are the two halves, for decoding one token at
a time.
"""

import dataclasses

import flax.linen as nn
import jax

from models.config import TransformerConfig
from models.transformer import Transformer


class EncoderDecoder(nn.Module):
  cfg: TransformerConfig

  def setup(self):
    self.encoder = Transformer(dataclasses.replace(self.cfg, kind='encoder'))
    self.decoder = Transformer(dataclasses.replace(self.cfg, kind='decoder'))

  def encode(self, inputs_BxS: jax.Array, deterministic: bool = True,
             inputs_mask_BxS: jax.Array | None = None) -> jax.Array:
    """The encoder's final-norm activations [B, S, D]; `inputs_mask_BxS` hides padding."""
    return self.encoder(inputs_BxS, deterministic, mask_BxL=inputs_mask_BxS, hidden=True)

  def decode(self, decoder_inputs_BxT: jax.Array, encoded_BxSxD: jax.Array,
             deterministic: bool = True, inputs_mask_BxS: jax.Array | None = None) -> jax.Array:
    """Next-token logits [B, T, V] of the decoder inputs, cross-attending to `encoded_BxSxD`."""
    return self.decoder(decoder_inputs_BxT, deterministic, context_BxSxD=encoded_BxSxD,
                        context_mask_BxS=inputs_mask_BxS)

  def __call__(self, inputs_BxS: jax.Array, decoder_inputs_BxT: jax.Array,
               deterministic: bool = True, inputs_mask_BxS: jax.Array | None = None):
    encoded_BxSxD = self.encode(inputs_BxS, deterministic, inputs_mask_BxS)
    return self.decode(decoder_inputs_BxT, encoded_BxSxD, deterministic, inputs_mask_BxS)
