"""Throughput of a config's train step on synthetic tokens: tokens/s, step time, MFU.

No corpus is read: the batch is random token ids of the configured shape, so this measures the
model, optimizer and sharding alone. MFU uses the PaLM FLOP count (models/counting.py, attention
not halved) against the chip's published bf16 peak, or on CPU a matmul peak measured in the
same process (train/hardware.py).
"""

import statistics
import time

import jax
import numpy as np

from models.counting import flops_per_token
from train.hardware import PeakFlops
from train.parallel import build_layout, jit_train_step
from train.state import create_state


def benchmark_step(config, steps: int = 10) -> dict:
  """Times `steps` train steps after one compiling step; returns a dict of measurements."""
  layout = build_layout(config)
  seq_len, batch = config.data.seq_len, config.train.batch_size
  tokens = np.random.default_rng(0).integers(0, layout.model_cfg.vocab_size, (batch, seq_len + 1))
  with layout.context():
    state, shardings = create_state(layout.model_cfg, layout.tx, config.seed, seq_len,
                                    layout.mesh, layout.rules)
    step = jit_train_step(layout, shardings, config.train.grad_accum_steps)
    batch_array = jax.device_put(tokens.astype(np.int32), layout.batch_sharding)
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
  flops = flops_per_token(layout.model_cfg, seq_len) * tokens_per_step
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
