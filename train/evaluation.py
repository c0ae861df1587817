"""What a trained model is judged by: validation loss (nats/token, bits/byte) and a text sample.

Shared by the training loop (periodic and final evaluation, the end-of-run sample) and by
`launch.py eval` / `launch.py sample` (tools/trained_run.py), which load a run's latest good
checkpoint.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from models.decoding import generate_batch
from models.quantize import dequantize_params

LN2 = math.log(2.0)


def bits_per_byte(nats_per_token: float, split_counts: dict) -> float:
  """Converts a loss in nats/token to bits per UTF-8 byte of the split's text."""
  return nats_per_token / LN2 * split_counts['tokens'] / max(split_counts['bytes'], 1)


def evaluate(exp, params) -> float:
  """Mean validation loss (nats/token) over the fixed evaluation batches of `exp`."""
  losses = [exp.eval_step(params, batch) for batch in exp.eval_batches()]
  return float(np.mean(jax.device_get(losses)))


@functools.partial(jax.jit, static_argnames=('model',))
def _summed_loss(params, tokens_BxLp1, weights_BxL, *, model):
  """(sum of the weighted next-token losses in nats, sum of the weights) of one batch."""
  logits_BxLxV = model.apply({'params': dequantize_params(params)}, tokens_BxLp1[:, :-1])
  log_probs_BxLxV = jax.nn.log_softmax(logits_BxLxV, axis=-1)
  target_BxL = jnp.take_along_axis(log_probs_BxLxV, tokens_BxLp1[:, 1:, None], axis=-1)[..., 0]
  return -jnp.sum(target_BxL * weights_BxL), jnp.sum(weights_BxL)


def stream_loss(model, params, tokens: np.ndarray, seq_len: int, batch_rows: int) -> float:
  """Mean next-token loss (nats/token) over every token of `tokens` after the first: windows of
  seq_len + 1 tokens that overlap by one (each token predicted once, from the tokens before it in
  its window), batch_rows windows a batch, the last one padded and its padding weighted 0."""
  n_targets = tokens.size - 1
  if n_targets < 1:
    raise ValueError('need at least two tokens')
  n_windows = -(-n_targets // seq_len)
  total, count = 0.0, 0.0
  for first in range(0, n_windows, batch_rows):
    rows_BxLp1 = np.zeros((batch_rows, seq_len + 1), np.int32)
    weights_BxL = np.zeros((batch_rows, seq_len), np.float32)
    for row, window in enumerate(range(first, min(first + batch_rows, n_windows))):
      piece = np.asarray(tokens[window * seq_len:window * seq_len + seq_len + 1], np.int32)
      rows_BxLp1[row, :piece.size] = piece
      weights_BxL[row, :piece.size - 1] = 1.0
    loss_sum, weight_sum = _summed_loss(params, jnp.asarray(rows_BxLp1),
                                        jnp.asarray(weights_BxL), model=model)
    total += float(loss_sum)
    count += float(weight_sum)
  return total / count


def sample_text(exp, params, prompt: str, n_tokens: int, temperature: float, seed: int) -> str:
  """`prompt` continued by up to `n_tokens` tokens (fewer if the model's context is shorter, or
  at end-of-text) sampled from the model of `exp` with the KV-cache decoder."""
  tokenizer = exp.corpus.tokenizer
  n_new = min(n_tokens, exp.model_cfg.max_len - 1)
  [new_ids] = generate_batch(params, exp.model, [tokenizer.encode(prompt)], n_new, temperature,
                             seed=seed, eot_id=tokenizer.eot_id)
  return prompt + tokenizer.decode(new_ids)
