"""Text generation from a trained model: temperature sampling over a sliding context window.

It lives next to the model because it is inference on it alone (parameters in, token ids out).
The KV-cache decoder (models/decoding.py) has replaced it everywhere; it stays as the simple
reference that tests/test_decoding.py and benchmarks/sampling.py compare that decoder against.

The whole generation is one jitted `lax.fori_loop`: at each position the model reads the last
`window` tokens (fixed shape, so it compiles once) and the next token is drawn from the logits
at the last filled position. No KV cache: this is for short samples at the end of a run.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from models.transformer import Transformer


@functools.partial(jax.jit, static_argnames=('model', 'prompt_len', 'n_new', 'window'))
def _generate(params, prompt_ids, rng, temperature, *, model: Transformer, prompt_len: int,
              n_new: int, window: int):
  buffer = jnp.zeros((prompt_len + n_new,), jnp.int32).at[:prompt_len].set(prompt_ids)

  def next_token(position, carry):
    buffer, rng = carry
    start = jnp.maximum(position - window, 0)
    context = jax.lax.dynamic_slice(buffer, (start,), (window,))
    logits = model.apply({'params': params}, context[None, :])[0, position - start - 1]
    rng, draw = jax.random.split(rng)
    greedy = jnp.argmax(logits)
    sampled = jax.random.categorical(draw, logits / jnp.maximum(temperature, 1e-6))
    token = jnp.where(temperature > 0, sampled, greedy).astype(jnp.int32)
    return buffer.at[position].set(token), rng

  buffer, _ = jax.lax.fori_loop(prompt_len, prompt_len + n_new, next_token, (buffer, rng))
  return buffer


def generate(params, model: Transformer, prompt_ids: np.ndarray, n_new: int, temperature: float,
             seed: int = 0, window: int | None = None) -> np.ndarray:
  """prompt + n_new sampled token ids (temperature 0 is greedy)."""
  prompt_ids = np.asarray(prompt_ids, np.int32)
  if prompt_ids.size == 0:
    prompt_ids = np.zeros((1,), np.int32)
  window = min(window or model.cfg.max_len, model.cfg.max_len, prompt_ids.size + n_new)
  out = _generate(params, jnp.asarray(prompt_ids), jax.random.PRNGKey(seed),
                  jnp.float32(temperature), model=model, prompt_len=int(prompt_ids.size),
                  n_new=int(n_new), window=int(window))
  return np.asarray(out)
