"""The encoder, the encoder-decoder and the classifier's pooling: who sees which token, checked
by changing tokens and watching which outputs move, and against the decoder's own attention."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models.attention import causal_attention, masked_attention
from models.classifier import pool
from models.config import TransformerConfig
from models.encoder_decoder import EncoderDecoder
from models.transformer import Transformer

CFG = TransformerConfig(vocab_size=50, d_model=32, n_layers=2, n_heads=4, max_len=16).derived()


def test_masked_attention_without_a_mask_is_the_decoders_causal_attention():
  q, k, v = (jax.random.normal(jax.random.PRNGKey(i), shape) for i, shape in
             enumerate([(2, 8, 2, 2, 4), (2, 8, 2, 4), (2, 8, 2, 4)]))
  masked = jax.jit(masked_attention, static_argnums=(3, 4))(q, k, v, None, True)
  causal = jax.jit(causal_attention, static_argnums=(3,))(q, k, v, 4)
  np.testing.assert_allclose(masked, causal, rtol=1e-5, atol=1e-6)


def _hidden(cfg, tokens, mask=None):
  model = Transformer(cfg)
  params = model.init(jax.random.PRNGKey(0), tokens)['params']
  return np.asarray(model.apply({'params': params}, tokens, mask_BxL=mask, hidden=True))


def test_an_encoder_sees_later_tokens_a_decoder_does_not():
  tokens = jnp.arange(1, 9)[None]
  changed = tokens.at[0, 6].set(40)
  for kind, sees_later in (('encoder', True), ('decoder', False)):
    cfg = dataclasses.replace(CFG, kind=kind)
    before, after = _hidden(cfg, tokens), _hidden(cfg, changed)
    assert (np.abs(before[0, :6] - after[0, :6]).max() > 1e-4) == sees_later, kind


def test_padding_is_invisible_to_the_encoder():
  cfg = dataclasses.replace(CFG, kind='encoder')
  mask = jnp.asarray([[True] * 5 + [False] * 3])
  tokens = jnp.arange(1, 9)[None]
  noisy = tokens.at[0, 5:].set(jnp.asarray([33, 44, 11]))
  np.testing.assert_allclose(_hidden(cfg, tokens, mask)[0, :5], _hidden(cfg, noisy, mask)[0, :5],
                             rtol=1e-5, atol=1e-6)


def test_the_decoder_reads_every_input_and_only_earlier_targets():
  model = EncoderDecoder(CFG)
  inputs, decoder_inputs = jnp.arange(1, 11)[None], jnp.arange(20, 26)[None]
  params = jax.jit(model.init)(jax.random.PRNGKey(0), inputs, decoder_inputs)['params']
  apply = jax.jit(lambda i, d: model.apply({'params': params}, i, d))
  assert set(params) == {'encoder', 'decoder'}
  assert 'cross_attn' in params['decoder']['layer_0'] and 'cross_attn' not in params['encoder'][
      'layer_0']
  logits = apply(inputs, decoder_inputs)
  assert logits.shape == (1, 6, CFG.vocab_size)
  later_target = apply(inputs, decoder_inputs.at[0, 4].set(3))
  np.testing.assert_allclose(logits[0, :4], later_target[0, :4], rtol=1e-5, atol=1e-6)
  last_input = apply(inputs.at[0, 9].set(3), decoder_inputs)
  assert np.abs(logits[0, 0] - last_input[0, 0]).max() > 1e-5


@pytest.mark.parametrize('pooling, expected', [
    ('mean', [[2.0, 20.0], [5.0, 50.0]]),  # rows 1..3 of the first, row 5 of the second
    ('first', [[1.0, 10.0], [5.0, 50.0]]),
    ('last', [[3.0, 30.0], [5.0, 50.0]])])
def test_pooling_by_hand(pooling, expected):
  hidden = jnp.asarray([[[1, 10], [2, 20], [3, 30], [9, 90]],
                        [[5, 50], [7, 70], [7, 70], [7, 70]]], jnp.float32)
  mask = jnp.asarray([[True, True, True, False], [True, False, False, False]])
  np.testing.assert_allclose(pool(hidden, mask, pooling), expected)
