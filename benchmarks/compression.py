"""The compression table: loss, memory and speed of a trained run with float32 weights, int8
weights (models/quantize.py), and magnitude-pruned weights (train/pruning.py), one shot or from
a run trained with gradual pruning.

    python -m benchmarks.compression --run_dir runs/tiny --pruned_run runs/tiny_gradual50

For each variant: validation loss (nats/token) on the run's fixed evaluation batches (the
numbers `launch.py eval` prints), the bytes the params take in memory, the argument and temp
bytes of the compiled eval step (XLA's memory analysis), and the speed of evaluation (tokens/s
through the eval step) and of greedy KV-cache decoding (new tokens/s, --batch prompts at once).
Timed runs alternate between the variants --repeats times (the machine may be shared) and the
best of each is kept. Prints a Markdown table and writes it as JSON with --json_out.
"""

import argparse
import functools
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from models.decoding import generate_batch
from models.quantize import params_bytes, quantize_params
from tools.trained_run import load_run
from train.pruning import prune_params, sparsity_of
from train.step import eval_step


def measure_memory(step_fn, params, batch) -> dict:
  analysis = step_fn.lower(params, batch).compile().memory_analysis()
  return {'argument_bytes': analysis.argument_size_in_bytes,
          'temp_bytes': analysis.temp_size_in_bytes}


def timed(fn) -> float:
  start = time.perf_counter()
  jax.block_until_ready(fn())
  return time.perf_counter() - start


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--run_dir', default='runs/tiny', help='a trained run (dense)')
  parser.add_argument('--pruned_run', default=None, help='a run trained with gradual pruning')
  parser.add_argument('--sparsity', type=float, nargs='*', default=[0.5],
                      help='one-shot pruning sparsities of --run_dir to measure')
  parser.add_argument('--batch', type=int, default=8, help='prompts decoded together')
  parser.add_argument('--tokens', type=int, default=128, help='new tokens per prompt')
  parser.add_argument('--repeats', type=int, default=3, help='alternating timed runs')
  parser.add_argument('--json_out', default=None, help='write the rows here as JSON')
  args = parser.parse_args()

  run = load_run(args.run_dir)
  exp = run.exp
  dense = run.state.params
  variants = {'float32': dense, 'int8': quantize_params(dense)}
  for s in args.sparsity:
    pruned = jax.jit(prune_params)(dense, s)
    variants[f'pruned {s:.0%} one-shot'] = pruned
    variants[f'pruned {s:.0%} one-shot + int8'] = quantize_params(pruned)
  if args.pruned_run:
    gradual = load_run(args.pruned_run).state.params
    variants[f'pruned {sparsity_of(gradual):.0%} gradual'] = gradual
    variants[f'pruned {sparsity_of(gradual):.0%} gradual + int8'] = quantize_params(gradual)

  step_fn = jax.jit(functools.partial(eval_step, model=exp.model))
  batches = list(exp.eval_batches())
  validation = exp.corpus.validation_tokens
  prompts = [np.asarray(validation[i * 500:i * 500 + 40], np.int32) for i in range(args.batch)]
  rows = {}
  with exp.mesh_context():
    for name, params in variants.items():
      losses = [step_fn(params, b) for b in batches]
      rows[name] = {'loss': float(np.mean(jax.device_get(losses))),
                    'params_bytes': params_bytes(params),
                    **measure_memory(step_fn, params, batches[0]),
                    'eval_s': [], 'decode_s': []}
      generate_batch(params, exp.model, prompts, args.tokens)  # compile
    for _ in range(args.repeats):
      for name, params in variants.items():
        rows[name]['eval_s'].append(timed(lambda: [step_fn(params, b) for b in batches]))
        rows[name]['decode_s'].append(timed(lambda: generate_batch(
            params, exp.model, prompts, args.tokens)))
  eval_tokens = sum(b.shape[0] * (b.shape[1] - 1) for b in batches)
  base = rows['float32']
  print(f'run {args.run_dir} step {run.step}; eval over {eval_tokens:,} tokens, decode '
        f'{args.batch} x {args.tokens} new tokens; best of {args.repeats}\n')
  print('| weights | val. loss (nats/token) | Δ loss | params in memory | compiled eval: '
        'arguments / temp | eval tokens/s | decode tokens/s |')
  print('|---|---|---|---|---|---|---|')
  for name, row in rows.items():
    row['eval_tokens_per_s'] = eval_tokens / min(row.pop('eval_s'))
    row['decode_tokens_per_s'] = args.batch * args.tokens / min(row.pop('decode_s'))
    mb = lambda n: f'{n / 2**20:.2f} MiB'  # noqa: E731
    print(f"| {name} | {row['loss']:.4f} | {row['loss'] - base['loss']:+.4f} | "
          f"{mb(row['params_bytes'])} | {mb(row['argument_bytes'])} / {mb(row['temp_bytes'])} | "
          f"{row['eval_tokens_per_s']:,.0f} | {row['decode_tokens_per_s']:,.0f} |")
  if args.json_out:
    with open(args.json_out, 'w', encoding='utf-8') as f:
      json.dump(rows, f, indent=2)


if __name__ == '__main__':
  jnp.zeros(())  # initialise the backend before timing anything
  main()
