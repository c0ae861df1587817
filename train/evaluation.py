"""What a trained model is judged by: validation loss (nats/token, bits/byte) and a text sample.

Shared by the training loop (periodic and final evaluation, the end-of-run sample) and by
`launch.py eval` / `launch.py sample` (tools/trained_run.py), which load a run's latest good
checkpoint.
"""

import math

import jax
import numpy as np

from models.sampling import generate

LN2 = math.log(2.0)


def bits_per_byte(nats_per_token: float, split_counts: dict) -> float:
  """Converts a loss in nats/token to bits per UTF-8 byte of the split's text."""
  return nats_per_token / LN2 * split_counts['tokens'] / max(split_counts['bytes'], 1)


def evaluate(exp, params) -> float:
  """Mean validation loss (nats/token) over the fixed evaluation batches of `exp`."""
  losses = [exp.eval_step(params, batch) for batch in exp.eval_batches()]
  return float(np.mean(jax.device_get(losses)))


def sample_text(exp, params, prompt: str, n_tokens: int, temperature: float, seed: int) -> str:
  """`prompt` continued by `n_tokens` tokens sampled from the model of `exp`."""
  tokenizer = exp.corpus.tokenizer
  ids = generate(params, exp.model, tokenizer.encode(prompt), n_tokens, temperature, seed,
                 window=exp.config.data.seq_len)
  return tokenizer.decode(ids)
