"""`launch.py bench`: throughput of a config's train step on synthetic tokens (tokens/s, step
time, MFU).

No corpus is read: the batch is random token ids of the configured shape, so this measures the
model, optimizer and sharding alone. MFU uses the PaLM FLOP count (models/counting.py, attention
not halved) against the chip's published bf16 peak, or on CPU a matmul peak measured in the
same process (train/hardware.py).
"""

import json
import statistics
import time

import jax
import numpy as np

from models.counting import flops_per_token
from train.hardware import PeakFlops
from train.experiment import build_experiment


def benchmark_step(config, steps: int = 10) -> dict:
  """Times `steps` train steps after one compiling step; returns a dict of measurements."""
  exp = build_experiment(config, with_data=False)
  seq_len, batch = config.data.seq_len, config.train.batch_size
  tokens = np.random.default_rng(0).integers(0, exp.model_cfg.vocab_size, (batch, seq_len + 1))
  state = exp.init_state()
  with exp.mesh_context():
    step = exp.train_step
    batch_array = jax.device_put(tokens.astype(np.int32), exp.batch_sharding)
    start = time.perf_counter()
    state, metrics = step(state, batch_array)
    jax.block_until_ready(metrics)
    compile_s = time.perf_counter() - start
    times = []
    for _ in range(steps):
      start = time.perf_counter()
      state, metrics = step(state, batch_array)
      jax.block_until_ready(metrics)
      times.append(time.perf_counter() - start)
  step_s = statistics.median(times)
  tokens_per_step = batch * seq_len
  peak = PeakFlops()
  flops = flops_per_token(exp.model_cfg, seq_len) * tokens_per_step
  return {'config': config.name, 'devices': jax.device_count(), 'backend': jax.default_backend(),
          'batch': batch, 'seq_len': seq_len, 'compile_s': compile_s, 'step_s': step_s,
          'tokens_per_s': tokens_per_step / step_s, 'model_flops_per_s': flops / step_s,
          'peak_flops_per_s': peak.value, 'mfu': flops / step_s / peak.value,
          'mfu_of': peak.label}


def format_benchmark(result: dict) -> str:
  return (f"{result['config']}: {result['tokens_per_s']:,.0f} tokens/s, step "
          f"{1000 * result['step_s']:.1f} ms (median), MFU {100 * result['mfu']:.1f}% of "
          f"{result['mfu_of']} on {result['devices']} "
          f"{result['backend']} device(s); batch {result['batch']} x {result['seq_len']}, "
          f"compile {result['compile_s']:.1f} s")


def bench(config, steps: int, as_json: bool) -> int:
  """`launch.py bench`: prints the measurements (as JSON if asked)."""
  result = benchmark_step(config, steps=steps)
  print(json.dumps(result) if as_json else format_benchmark(result))
  return 0
