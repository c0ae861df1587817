"""How long a checkpoint save blocks the training loop, for a config's real train state.

    python -m benchmarks.checkpoint_blocking --config configs/tiny.py
    python -m benchmarks.checkpoint_blocking --config configs/gpt2_small.py

Builds the state (params + optimizer state, initialised sharded as in training; no corpus) and
saves it through train/checkpoint.py as the loop does, timing

  blocked   `save()` returning: what the loop waits for (device-to-host copy, directory setup);
  total     until the write is complete on disk (`wait_until_finished`);
  sync      a save with async_save=false, for comparison.

Saves are spaced out, so no save waits for the previous one (the loop's case when
`checkpoint.every` steps take longer than one write). Reports the median of --saves saves.
"""

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import jax

from train import checkpoint
from train.config import load_config
from train.experiment import build_experiment


def state_bytes(state) -> int:
  return sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree.leaves(state))


def time_saves(config, state, directory: Path, saves: int, async_save: bool) -> dict:
  config.checkpoint.async_save, config.checkpoint.keep = async_save, 2
  manager = checkpoint.open_manager(directory, config.checkpoint)
  blocked, total = [], []
  for step in range(1, saves + 1):
    meta = checkpoint.make_meta(config, step, {})
    start = time.perf_counter()
    blocked.append(checkpoint.save(manager, state.replace(step=state.step + step), meta))
    manager.wait_until_finished()
    total.append(time.perf_counter() - start)
  manager.close()
  return {'blocked_s': statistics.median(blocked), 'total_s': statistics.median(total)}


def main(argv: list[str]) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--config', default='configs/tiny.py')
  parser.add_argument('--saves', type=int, default=3, help='saves to time (median reported)')
  parser.add_argument('--dir', default=None, help='where to write (default: a temporary folder)')
  args, overrides = parser.parse_known_args(argv)
  config = load_config(args.config, overrides)
  config.unlock()
  exp = build_experiment(config, with_data=False)
  start = time.perf_counter()
  state = exp.init_state()
  jax.block_until_ready(state)
  init_s = time.perf_counter() - start
  root = Path(args.dir or tempfile.mkdtemp(prefix='checkpoint_blocking_'))
  try:
    result = {'config': args.config, 'device': str(jax.devices()[0].device_kind),
              'devices': jax.device_count(), 'state_gb': state_bytes(state) / 1e9,
              'init_s': init_s, 'saves': args.saves,
              'async': time_saves(config, state, root / 'async', args.saves, True),
              'sync': time_saves(config, state, root / 'sync', args.saves, False)}
  finally:
    if args.dir is None:
      shutil.rmtree(root, ignore_errors=True)
  print(json.dumps(result))


if __name__ == '__main__':
  main(sys.argv[1:])
