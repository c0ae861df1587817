"""Where a train step's time goes, and which model variant is faster, measured in one process.

    python -m benchmarks.step_variants --shape gpt_byte [--reps 5]
    python -m benchmarks.step_variants --shape gpt2_small --reps 3 \
        --variant chunk256:model.attention_query_chunk=256

On a machine shared with other jobs, separate processes measured minutes apart are not
comparable; here every variant's step is compiled in the same process and the variants run
interleaved, one step each in turn, `--reps` times (the order rotated each time), so a change of
load hits them alike. Reported per variant: wall seconds per step (min and median) and the
process's CPU seconds per step (all threads; less sensitive to other jobs than wall time).

Variants are config overrides of the shape (benchmarks/shapes.py, from configs/gpt2_small.py):
by default today's chunked attention (model.attention_query_chunk=128), one block
(chunk 0), 64-query blocks, and `jax.nn.dot_product_attention` (model.attention_impl=xla).
`--parts` also times, for the first variant, the forward loss alone and forward + backward
without the optimizer update, so the step splits into forward, backward and optimizer update.
A key starting with `xla_` is an XLA:CPU option for that variant's compilation alone
(`noxnn:xla_cpu_use_xnnpack=false`), so compiler flags are compared interleaved too.
"""

import argparse
import json
import statistics
import sys
import time

import jax
import numpy as np

from benchmarks.shapes import BASE_CONFIG, SHAPES, shape_overrides
from train.config import load_config
from train.experiment import build_experiment
from train.step import loss_and_grads, loss_fn

DEFAULT_VARIANTS = ('chunk128:model.attention_query_chunk=128',
                    'chunk0:model.attention_query_chunk=0',
                    'chunk64:model.attention_query_chunk=64', 'xla:model.attention_impl=xla')


def parse_variant(text: str) -> tuple[str, list[str], dict]:
  """'name:key=value,key=value' -> (name, ['--config.key=value', ...], XLA compiler options):
  a key starting with xla_ is an XLA option for this variant's compilation alone."""
  name, _, items = text.partition(':')
  overrides, options = [], {}
  for item in filter(None, items.split(',')):
    key, _, value = item.partition('=')
    if key.startswith('xla_'):
      options[key] = {'true': True, 'false': False}.get(value.lower(), value)
    else:
      overrides.append(f'--config.{item}')
  return name, overrides, options


def step_runner(shape: str, batch: int, overrides: list[str], options: dict | None = None):
  """A no-argument function running one compiled train step of the variant (state carried)."""
  config = load_config(BASE_CONFIG, shape_overrides(shape, batch) + overrides)
  exp = build_experiment(config, with_data=False)
  tokens = np.random.default_rng(0).integers(0, exp.model_cfg.vocab_size,
                                             (config.train.batch_size, config.data.seq_len + 1))
  holder = {'state': exp.init_state()}
  with exp.mesh_context():
    batch_array = jax.device_put(tokens.astype(np.int32), exp.batch_sharding)
    step = exp.train_step.lower(holder['state'], batch_array).compile(options or None)

  def run():
    with exp.mesh_context():
      holder['state'], metrics = step(holder['state'], batch_array)
      jax.block_until_ready(metrics)
  return run, exp, batch_array, holder


def part_runners(exp, batch_array, holder) -> dict:
  """Forward loss alone and forward + backward (no update), on the variant's parameters."""
  model = exp.model
  forward = jax.jit(lambda p, b: loss_fn(p, model, b, jax.random.PRNGKey(0), True))
  backward = jax.jit(lambda p, b: loss_and_grads(p, model, b, jax.random.PRNGKey(0), 1))

  def runner(fn):
    def run():
      with exp.mesh_context():
        jax.block_until_ready(fn(holder['state'].params, batch_array))
    return run
  return {'forward': runner(forward), 'forward+backward': runner(backward)}


def interleave(runners: dict, reps: int) -> dict:
  """{name: {'wall': [s, ...], 'cpu': [s, ...]}}, one call of each runner per rep, rotated."""
  names = list(runners)
  for name in names:
    runners[name]()  # the first call of a compiled step: not timed
  times = {name: {'wall': [], 'cpu': []} for name in names}
  for rep in range(reps):
    shift = rep % len(names)
    for name in names[shift:] + names[:shift]:
      wall, cpu = time.perf_counter(), time.process_time()
      runners[name]()
      times[name]['wall'].append(time.perf_counter() - wall)
      times[name]['cpu'].append(time.process_time() - cpu)
  return times


def format_times(times: dict, tokens_per_step: int) -> str:
  lines = [f'{"variant":<18} {"wall min":>9} {"wall med":>9} {"cpu med":>9} {"tok/s (min)":>12}']
  for name, t in times.items():
    lines.append(f'{name:<18} {min(t["wall"]):9.3f} {statistics.median(t["wall"]):9.3f} '
                 f'{statistics.median(t["cpu"]):9.3f} {tokens_per_step / min(t["wall"]):12,.0f}')
  return '\n'.join(lines)


def main(argv: list[str]) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--shape', default='gpt_byte', choices=sorted(SHAPES))
  parser.add_argument('--batch', type=int, default=0, help="batch size (default: the shape's)")
  parser.add_argument('--reps', type=int, default=5, help='timed steps per variant (default 5)')
  parser.add_argument('--variant', action='append', default=None,
                      help="NAME:key=value[,key=value] (repeatable; default: "
                      f"{' '.join(DEFAULT_VARIANTS)})")
  parser.add_argument('--parts', action='store_true',
                      help='also time forward and forward+backward of the first variant')
  parser.add_argument('--json', action='store_true', help='also print the times as JSON')
  args = parser.parse_args(argv)
  runners, first = {}, None
  for text in args.variant or DEFAULT_VARIANTS:
    name, overrides, options = parse_variant(text)
    runners[name], exp, batch_array, holder = step_runner(args.shape, args.batch, overrides,
                                                          options)
    first = first or (exp, batch_array, holder)
  if args.parts:
    runners.update(part_runners(*first))
  times = interleave(runners, args.reps)
  config = first[0].config
  print(f'{args.shape}: batch {config.train.batch_size} x {config.data.seq_len}, {args.reps} '
        'interleaved reps; seconds per step')
  print(format_times(times, config.train.batch_size * config.data.seq_len))
  if args.json:
    print(json.dumps(times))


if __name__ == '__main__':
  main(sys.argv[1:])
