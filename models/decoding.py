"""Batched text generation with a KV cache: prefill the prompts, then one token per step.

Prompts of different lengths are left-padded to a common length P (a power of two, a "bucket"),
so every row's next token goes into the same cache slot; each row's positions start at its own
first real token (`DecodeSlots.start_B`) and its queries never see the padding. The cache holds
S slots (P + the new tokens, rounded up to a power of two, at most the model's max_len).
`_decode` is one jitted function (prefill, then a `lax.while_loop` of single-token steps that
ends at `n_new` tokens or when every row has produced end-of-text), compiled once per
(batch, P, S, top_k): the number of new tokens, temperature, top-p and seed are traced values.

Used by `launch.py sample` (tools/trained_run.py) and the end-of-run sample
(train/evaluation.py); models/sampling.py is the older uncached sampler, kept as the reference
the tests and benchmarks/sampling.py compare against.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from errors import UserError
from models.attention import DecodeSlots
from models.layers import dtype_of
from models.quantize import dequantize_params
from models.transformer import Transformer

NEG = jnp.finfo(jnp.float32).min


def next_power_of_two(n: int) -> int:
  return 1 << max(int(n) - 1, 0).bit_length()


def filter_logits(logits_BxV: jax.Array, top_k: int, top_p: jax.Array) -> jax.Array:
  """Logits with every token outside the top_k (0: no limit) and outside the smallest set of
  most likely tokens whose probability reaches top_p (1: no limit) set to the float32 minimum.
  The most likely token always stays."""
  if top_k > 0 and top_k < logits_BxV.shape[-1]:
    kth_B = jax.lax.top_k(logits_BxV, top_k)[0][:, -1]
    logits_BxV = jnp.where(logits_BxV >= kth_B[:, None], logits_BxV, NEG)
  sorted_BxV = jnp.sort(logits_BxV, axis=-1)[:, ::-1]
  probs_BxV = jax.nn.softmax(sorted_BxV, axis=-1)
  mass_before_BxV = jnp.cumsum(probs_BxV, axis=-1) - probs_BxV  # of the more likely tokens
  kept_BxV = (mass_before_BxV < top_p).at[:, 0].set(True)
  cutoff_B = jnp.min(jnp.where(kept_BxV, sorted_BxV, jnp.inf), axis=-1)
  return jnp.where(logits_BxV >= cutoff_B[:, None], logits_BxV, NEG)


def choose_tokens(logits_BxV: jax.Array, rng: jax.Array, temperature: jax.Array, top_k: int,
                  top_p: jax.Array) -> jax.Array:
  """Greedy (temperature 0) or a draw from the filtered, temperature-scaled distribution."""
  scaled_BxV = filter_logits(logits_BxV / jnp.maximum(temperature, 1e-6), top_k, top_p)
  sampled_B = jax.random.categorical(rng, scaled_BxV, axis=-1)
  return jnp.where(temperature > 0, sampled_B, jnp.argmax(logits_BxV, axis=-1)).astype(jnp.int32)


def empty_cache(model: Transformer, batch: int, length: int):
  """Zeroed keys and values, (k_NxBxSxKxDh, v_NxBxSxKxDh), in the model's compute dtype."""
  cfg = model.cfg
  shape = (cfg.n_layers, batch, length, cfg.n_kv_heads, cfg.head_dim)
  zeros = jnp.zeros(shape, dtype_of(cfg.dtype))
  return zeros, zeros


@functools.partial(jax.jit, static_argnames=('model', 'cache_len', 'top_k'))
def _decode(params, prompt_BxP, start_B, n_new, rng, temperature, top_p, eot_id, *,
            model: Transformer, cache_len: int, top_k: int):
  batch, prompt_len = prompt_BxP.shape
  params = dequantize_params(params)  # int8 params (models/quantize.py); float ones unchanged
  apply = functools.partial(model.apply, {'params': params})
  logits_BxPxV, cache = apply(prompt_BxP, cache=empty_cache(model, batch, cache_len),
                              slots=DecodeSlots(jnp.int32(0), start_B))
  out_BxN = jnp.zeros((batch, cache_len - prompt_len), jnp.int32)

  def unfinished(carry):
    step, _, _, _, done_B, _ = carry
    return (step < n_new) & ~jnp.all(done_B)

  def one_token(carry):
    step, logits_BxV, cache, out_BxN, done_B, rng = carry
    rng, draw = jax.random.split(rng)
    token_B = choose_tokens(logits_BxV, draw, temperature, top_k, top_p)
    token_B = jnp.where(done_B, jnp.maximum(eot_id, 0), token_B)
    out_BxN = out_BxN.at[:, step].set(token_B)
    done_B = done_B | (token_B == eot_id)
    logits_Bx1xV, cache = apply(token_B[:, None], cache=cache,
                                slots=DecodeSlots(prompt_len + step, start_B))
    return step + 1, logits_Bx1xV[:, 0], cache, out_BxN, done_B, rng

  carry = (jnp.int32(0), logits_BxPxV[:, -1], cache, out_BxN, jnp.zeros((batch,), bool), rng)
  step, _, _, out_BxN, _, _ = jax.lax.while_loop(unfinished, one_token, carry)
  return out_BxN, step


def generate_batch(params, model: Transformer, prompts: list[np.ndarray], n_new: int,
                   temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0, seed: int = 0,
                   eot_id: int | None = None) -> list[np.ndarray]:
  """The new token ids of each prompt (at most n_new; cut before end-of-text `eot_id`).
  A prompt longer than max_len - n_new keeps its last tokens; an empty one starts at token 0
  (or at end-of-text, which the corpus puts between documents)."""
  max_len = model.cfg.max_len
  if not 1 <= n_new < max_len:
    raise UserError(f'{n_new} new tokens do not fit the model\'s context of {max_len} tokens '
                    f'with a prompt; ask for 1 to {max_len - 1}')
  start_token = 0 if eot_id is None else eot_id
  prompts = [np.asarray(p, np.int32)[-(max_len - n_new):] for p in prompts]
  prompts = [p if p.size else np.array([start_token], np.int32) for p in prompts]
  prompt_len = min(next_power_of_two(max(p.size for p in prompts)), max_len - n_new)
  cache_len = min(next_power_of_two(prompt_len + n_new), max_len)
  padded_BxP = np.zeros((len(prompts), prompt_len), np.int32)
  start_B = np.zeros((len(prompts),), np.int32)
  for row, p in enumerate(prompts):
    padded_BxP[row, prompt_len - p.size:] = p
    start_B[row] = prompt_len - p.size
  out_BxN, steps = _decode(params, jnp.asarray(padded_BxP), jnp.asarray(start_B),
                           jnp.int32(n_new), jax.random.PRNGKey(seed), jnp.float32(temperature),
                           jnp.float32(top_p), jnp.int32(-1 if eot_id is None else eot_id),
                           model=model, cache_len=cache_len, top_k=int(top_k))
  out_BxN = np.asarray(out_BxN)[:, :int(steps)]
  results = []
  for row in out_BxN:
    ends = np.flatnonzero(row == eot_id) if eot_id is not None else []
    results.append(row[:ends[0]] if len(ends) else row)
  return results
