"""Tokens/s of batched KV-cache sampling (models/decoding.py) against the uncached sampler
(models/sampling.py, which recomputes the whole window for every token, one prompt at a time).

    python -m benchmarks.sampling --config configs/tiny.py
    python -m benchmarks.sampling --config configs/gpt2_small.py --uncached_prompts 1 --uncached_tokens 50

Random initial parameters of the config's model (speed does not depend on the weights); prompts
of random tokens, lengths spread between --prompt_len / 2 and --prompt_len. Both samplers are
compiled before timing (compile times reported apart); the uncached one runs
--uncached_prompts prompts one after another, each for --uncached_tokens tokens (it is slow
for big models), and its rate is tokens generated / seconds. Runs alternate between the two
samplers --repeats times (the machine may be shared) and the best of each is reported.
"""

import argparse
import json
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from models.config import TransformerConfig
from models.decoding import _decode, next_power_of_two
from models.sampling import _generate
from models.transformer import Transformer, init_params
from train import compile_cache
from train.config import load_config


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--config', default='configs/tiny.py', help='a config file (its model)')
  parser.add_argument('--batch', type=int, default=8, help='prompts decoded together')
  parser.add_argument('--tokens', type=int, default=200, help='new tokens per prompt')
  parser.add_argument('--prompt_len', type=int, default=16, help='longest prompt, in tokens')
  parser.add_argument('--uncached_prompts', type=int, default=8,
                      help='prompts run through the uncached sampler')
  parser.add_argument('--uncached_tokens', type=int, default=200,
                      help='new tokens per prompt for the uncached sampler')
  parser.add_argument('--repeats', type=int, default=2, help='alternating timed runs of each')
  args = parser.parse_args()

  cfg = TransformerConfig.from_dict(load_config(args.config).model)
  model = Transformer(cfg)
  params = nn.meta.unbox(jax.jit(lambda: init_params(cfg, jax.random.PRNGKey(0), 8))())
  rng = np.random.default_rng(0)
  lengths = np.linspace(args.prompt_len // 2, args.prompt_len, args.batch).astype(int)
  prompt_len = next_power_of_two(args.prompt_len)
  cache_len = min(next_power_of_two(prompt_len + args.tokens), cfg.max_len)
  padded = np.zeros((args.batch, prompt_len), np.int32)
  start = (prompt_len - lengths).astype(np.int32)
  for row, n in enumerate(lengths):
    padded[row, prompt_len - n:] = rng.integers(0, cfg.vocab_size, n)
  cached_args = (params, jnp.asarray(padded), jnp.asarray(start), jnp.int32(args.tokens),
                 jax.random.PRNGKey(0), jnp.float32(1.0), jnp.float32(1.0), jnp.int32(-1))
  began = time.perf_counter()
  with compile_cache.uncached():  # the compiler's time, not a load from the compilation cache
    cached = _decode.lower(*cached_args, model=model, cache_len=cache_len, top_k=0).compile()
  cached_compile = time.perf_counter() - began

  n_old = args.uncached_tokens
  old_prompt = jnp.asarray(padded[-1, -args.prompt_len:])
  window = min(cfg.max_len, args.prompt_len + n_old)
  old_args = (params, old_prompt, jax.random.PRNGKey(0), jnp.float32(1.0))
  began = time.perf_counter()
  with compile_cache.uncached():
    uncached = _generate.lower(*old_args, model=model, prompt_len=args.prompt_len, n_new=n_old,
                               window=window).compile()
  uncached_compile = time.perf_counter() - began

  cached_rates, uncached_rates = [], []
  for _ in range(args.repeats):
    began = time.perf_counter()
    out, steps = cached(*cached_args)
    jax.block_until_ready(out)
    cached_rates.append(args.batch * int(steps) / (time.perf_counter() - began))
    began = time.perf_counter()
    for i in range(args.uncached_prompts):
      jax.block_until_ready(uncached(params, old_prompt, jax.random.PRNGKey(i), jnp.float32(1.0)))
    uncached_rates.append(args.uncached_prompts * n_old / (time.perf_counter() - began))
  print(json.dumps({
      'config': args.config, 'device': jax.devices()[0].device_kind, 'batch': args.batch,
      'tokens': args.tokens, 'prompt_len': args.prompt_len, 'cache_len': cache_len,
      'cached_tokens_per_s': round(max(cached_rates), 1),
      'uncached_prompts': args.uncached_prompts, 'uncached_tokens': n_old,
      'uncached_tokens_per_s': round(max(uncached_rates), 1),
      'speedup': round(max(cached_rates) / max(uncached_rates), 1),
      'cached_compile_s': round(cached_compile, 1), 'uncached_compile_s': round(uncached_compile, 1),
  }))


if __name__ == '__main__':
  main()
