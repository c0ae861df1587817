"""What depth costs at compile time, and what each remat policy costs in memory and step time.

    python -m benchmarks.compile_depth [--config configs/tiny.py] [--depths 4,48] [--steps 3]

Compile table: for each depth, with and without `model.scan_layers`, the seconds to trace and
lower the config's train step and to compile it (train/experiment.py `compile_train_step`:
abstract shapes, no weights allocated), plus the compiled step's temporary bytes.
Remat table (the config's own depth, scan as configured): for each `model.remat` policy, the
compiled step's temporary bytes (`compiled.memory_analysis()`, as `launch.py memory`) and the
median time of `--steps` steps on random tokens. Extra `--config.key=value` arguments override
the config.
"""

import argparse
import json
import statistics
import sys
import time

import jax
import numpy as np

from models.config import REMAT_POLICIES
from sharding import report
from train import compile_cache
from train.config import load_config
from train.experiment import build_experiment


def compile_seconds(config) -> dict:
  """Trace+lower and compile times of the train step, and its temporary bytes."""
  exp = build_experiment(config, with_data=False)
  batch = jax.ShapeDtypeStruct((config.train.batch_size, config.data.seq_len + 1), np.int32,
                               sharding=exp.batch_sharding)
  with exp.mesh_context():
    start = time.perf_counter()
    lowered = exp.train_step.lower(exp.abstract_state, batch)
    lower_s = time.perf_counter() - start
    with compile_cache.uncached():  # the compiler's time, not a load from the cache
      compiled = lowered.compile()
    compile_s = time.perf_counter() - start - lower_s
  return {'lower_s': lower_s, 'compile_s': compile_s,
          'temp_bytes': report.memory(compiled)['temp'], 'compiled': compiled, 'exp': exp}


def step_seconds(measured: dict, config, steps: int) -> list[float]:
  """Times `steps` runs of the compiled step (after one untimed) on random tokens."""
  exp, step = measured['exp'], measured['compiled']
  tokens = np.random.default_rng(0).integers(
      0, config.model.vocab_size, (config.train.batch_size, config.data.seq_len + 1))
  state = exp.init_state()
  times = []
  with exp.mesh_context():
    batch = jax.device_put(tokens.astype(np.int32), exp.batch_sharding)
    for index in range(steps + 1):
      start = time.perf_counter()
      state, metrics = step(state, batch)
      jax.block_until_ready(metrics)
      if index:
        times.append(time.perf_counter() - start)
  return times


def with_model(config, **values):
  copy = config.copy_and_resolve_references()
  copy.unlock()
  for key, value in values.items():
    setattr(copy.model, key, value)
  return copy


def compile_table(config, depths: list[int]) -> list[dict]:
  rows = []
  for depth in depths:
    for scan in (False, True):
      measured = compile_seconds(with_model(config, n_layers=depth, scan_layers=scan))
      rows.append({'layers': depth, 'scan_layers': scan, 'lower_s': measured['lower_s'],
                   'compile_s': measured['compile_s'], 'temp_bytes': measured['temp_bytes']})
      print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
  return rows


def remat_table(config, steps: int) -> list[dict]:
  rows = []
  for policy in REMAT_POLICIES:
    variant = with_model(config, remat=policy)
    measured = compile_seconds(variant)
    times = step_seconds(measured, variant, steps)
    rows.append({'remat': policy, 'temp_bytes': measured['temp_bytes'],
                 'compile_s': measured['compile_s'], 'step_s': statistics.median(times),
                 'step_s_min': min(times), 'step_s_max': max(times)})
    print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
  return rows


def format_tables(config, compile_rows: list[dict], remat_rows: list[dict]) -> str:
  m = config.model
  lines = [f'{config.name}: d {m.d_model}, batch {config.train.batch_size} x '
           f'{config.data.seq_len}; {jax.device_count()} {jax.default_backend()} device(s)']
  if compile_rows:
    lines += ['', '| layers | scan_layers | trace+lower | compile | total | temp memory |',
              '|---|---|---|---|---|---|']
    lines += [f"| {r['layers']} | {r['scan_layers']} | {r['lower_s']:.1f} s | "
              f"{r['compile_s']:.1f} s | {r['lower_s'] + r['compile_s']:.1f} s | "
              f"{r['temp_bytes'] / 2**20:,.0f} MiB |" for r in compile_rows]
  if remat_rows:
    lines += ['', f'remat policies ({m.n_layers} layers, scan_layers={m.scan_layers}):', '',
              '| remat | temp memory | step (median; min-max) | compile |', '|---|---|---|---|']
    lines += [f"| {r['remat']} | {r['temp_bytes'] / 2**20:,.0f} MiB | "
              f"{1000 * r['step_s']:,.0f} ms ({1000 * r['step_s_min']:,.0f}-"
              f"{1000 * r['step_s_max']:,.0f}) | {r['compile_s']:.1f} s |" for r in remat_rows]
  return '\n'.join(lines)


def main(argv: list[str]) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--config', default='configs/tiny.py')
  parser.add_argument('--depths', default='4,48', help='layer counts to compile (default 4,48)')
  parser.add_argument('--steps', type=int, default=3, help='timed steps per remat policy')
  parser.add_argument('--only', choices=('compile', 'remat'), default=None,
                      help='measure one table only')
  parser.add_argument('--json', action='store_true', help='also print the rows as JSON')
  args, overrides = parser.parse_known_args(argv)
  config = load_config(args.config, overrides)
  depths = [int(d) for d in args.depths.split(',') if d]
  compile_rows = compile_table(config, depths) if args.only != 'remat' else []
  remat_rows = remat_table(config, args.steps) if args.only != 'compile' else []
  print(format_tables(config, compile_rows, remat_rows))
  if args.json:
    print(json.dumps({'compile': compile_rows, 'remat': remat_rows}))


if __name__ == '__main__':
  main(sys.argv[1:])
