"""T5's span-corruption objective (Raffel et al. 2020, section 3.1.4), as pure jax functions.

A window of `length` tokens gets `round(length * noise_density)` noise tokens in
`round(noise / mean_span_length)` spans; the window starts with a non-noise span and alternates,
the span lengths drawn as random segmentations (T5's `random_spans_noise_mask`). Then (T5's
`noise_span_to_unique_sentinel`) every noise span of the input becomes one sentinel, and every
non-noise span of the target does:

    tokens  a b c d e f      noise . . x . x x
    inputs  a b <S0> d <S1>              targets <S0> c <S1> e f

Sentinels count down from the top of the model's vocabulary, T5's convention: S0 = vocab - 1,
S1 = vocab - 2, ...; the decoder reads the targets shifted right after T5's start id 0. The
lengths depend only on `length`, so every row of a batch has the same shapes (no padding).
An encoder without a decoder gets the same noise as masked-span prediction: every noise token
replaced by the mask id vocab - 1, the loss on those positions only.
"""

import jax
import jax.numpy as jnp

DECODER_START_ID = 0  # T5 starts decoding from its pad id


def span_counts(length: int, noise_density: float, mean_span_length: float) -> tuple[int, int]:
  """(noise tokens, noise spans) of a window of `length` tokens, as in T5."""
  noise = min(max(int(round(length * noise_density)), 1), length - 1)
  spans = max(int(round(noise / mean_span_length)), 1)
  return noise, min(spans, length - noise)


def encoder_decoder_lengths(length: int, noise_density: float,
                            mean_span_length: float) -> tuple[int, int]:
  """(input length, target length) of a corrupted window of `length` tokens."""
  noise, spans = span_counts(length, noise_density, mean_span_length)
  return length - noise + spans, noise + spans


def random_segmentation(n_items: int, n_segments: int, rng: jax.Array) -> jax.Array:
  """int32 [n_segments]: a random split of n_items into n_segments positive lengths."""
  is_divider = jnp.arange(n_items - 1) < n_segments - 1
  first_in_segment = jnp.pad(jax.random.permutation(rng, is_divider), (1, 0))
  segment_id = jnp.cumsum(first_in_segment)
  return jnp.zeros(n_segments, jnp.int32).at[segment_id].add(1)


def mask_from_spans(nonnoise_lengths: jax.Array, noise_lengths: jax.Array,
                    length: int) -> jax.Array:
  """bool [length]: spans of the given lengths, non-noise first, alternating (True: noise)."""
  interleaved = jnp.stack([nonnoise_lengths, noise_lengths], axis=1).reshape(-1)
  span_starts = jnp.cumsum(interleaved)[:-1]
  span_start = jnp.zeros(length, jnp.int32).at[span_starts].set(1)
  return jnp.cumsum(span_start) % 2 == 1


def noise_mask(length: int, noise_density: float, mean_span_length: float,
               rng: jax.Array) -> jax.Array:
  """bool [length], True on the noise tokens: T5's random_spans_noise_mask."""
  noise, spans = span_counts(length, noise_density, mean_span_length)
  noise_rng, nonnoise_rng = jax.random.split(rng)
  return mask_from_spans(random_segmentation(length - noise, spans, nonnoise_rng),
                         random_segmentation(noise, spans, noise_rng), length)


def replace_spans(tokens_L: jax.Array, span_mask_L: jax.Array, first_sentinel: int,
                  out_length: int) -> jax.Array:
  """tokens_L with each run of span_mask_L replaced by one sentinel (first_sentinel, then one
  less for each later run), the rest kept in order: int32 [out_length]."""
  previous_L = jnp.pad(span_mask_L[:-1], (1, 0))
  starts_L = span_mask_L & ~previous_L
  values_L = jnp.where(starts_L, first_sentinel + 1 - jnp.cumsum(starts_L), tokens_L)
  kept_L = ~span_mask_L | starts_L
  where_L = jnp.where(kept_L, jnp.cumsum(kept_L) - 1, out_length)
  return jnp.zeros(out_length, jnp.int32).at[where_L].set(values_L.astype(jnp.int32),
                                                          mode='drop')


def corrupt(tokens_L: jax.Array, noise_L: jax.Array, vocab_size: int, noise_density: float,
            mean_span_length: float) -> dict:
  """{'inputs', 'decoder_inputs', 'targets', 'weights'} of one window and its noise mask."""
  in_length, target_length = encoder_decoder_lengths(tokens_L.shape[0], noise_density,
                                                     mean_span_length)
  targets_T = replace_spans(tokens_L, ~noise_L, vocab_size - 1, target_length)
  return {'inputs': replace_spans(tokens_L, noise_L, vocab_size - 1, in_length),
          'decoder_inputs': jnp.pad(targets_T[:-1], (1, 0), constant_values=DECODER_START_ID),
          'targets': targets_T, 'weights': jnp.ones(target_length, jnp.float32)}


def mask_spans(tokens_L: jax.Array, noise_L: jax.Array, vocab_size: int) -> dict:
  """Masked-span prediction for an encoder: noise tokens become the mask id vocab - 1."""
  return {'inputs': jnp.where(noise_L, vocab_size - 1, tokens_L).astype(jnp.int32),
          'targets': tokens_L.astype(jnp.int32), 'weights': noise_L.astype(jnp.float32)}


def corrupt_batch(tokens_BxL: jax.Array, rng: jax.Array, vocab_size: int, noise_density: float,
                  mean_span_length: float, encoder_decoder: bool) -> dict:
  """Every row corrupted with its own noise mask (row b's from fold_in(rng, b))."""
  length = tokens_BxL.shape[1]
  row_rngs = jax.vmap(lambda b: jax.random.fold_in(rng, b))(jnp.arange(tokens_BxL.shape[0]))
  noise_BxL = jax.vmap(lambda r: noise_mask(length, noise_density, mean_span_length, r))(row_rngs)
  if encoder_decoder:
    return jax.vmap(lambda t, n: corrupt(t, n, vocab_size, noise_density, mean_span_length))(
        tokens_BxL, noise_BxL)
  return jax.vmap(lambda t, n: mask_spans(t, n, vocab_size))(tokens_BxL, noise_BxL)


def sentinels_needed(length: int, noise_density: float, mean_span_length: float) -> int:
  """How many ids at the top of the vocabulary a window of `length` may use as sentinels."""
  return span_counts(length, noise_density, mean_span_length)[1]
