"""`launch.py bench`: throughput of a config's train step on synthetic tokens (compile time,
tokens/s, step time, MFU).

No corpus is read: the batch is random token ids of the configured shape, so this measures the
model, optimizer and sharding alone. Compile time is the train step's lowering and XLA
compilation, timed on its own before the first step runs. MFU uses the PaLM FLOP count
(models/counting.py, attention not halved) against the chip's published bf16 peak, or on CPU a
matmul peak measured in the same process (train/hardware.py).

A measured peak is measured several times, interleaved with the timed steps (before the first,
between them, after the last), and the best is kept: a single measurement that lands on a busy
moment of a shared machine gives too low a peak and an MFU above 100%. Should the step still run
faster than every peak measurement, the peak is raised to the step's own rate (and the output
says so), so a printed MFU never exceeds 100%.
"""

import json
import statistics
import time
from typing import Callable

import jax
import numpy as np

from models.counting import flops_per_token
from train import compile_cache
from train.hardware import PeakFlops
from train.experiment import build_experiment

PEAK_MEASUREMENTS = 5  # peak measurements per benchmark, the first before any timed step


def peak_positions(steps: int, measurements: int) -> list[int]:
  """Before which timed step (0..steps; `steps` means after the last) each peak measurement
  runs: spread evenly from the first to after the last, repeats allowed when steps are few."""
  if measurements <= 1:
    return [0] * measurements
  return [round(k * steps / (measurements - 1)) for k in range(measurements)]


def time_steps_between_peaks(run_step: Callable[[], None], measure_peak: Callable[[], object],
                             steps: int, measurements: int,
                             clock: Callable[[], float] = time.perf_counter) -> list[float]:
  """Runs `run_step` `steps` times, each timed alone with `clock` (peak measurements are not
  in any step's time), calling `measure_peak` at `peak_positions`; returns the step times."""
  positions = peak_positions(steps, measurements)
  times = []
  for index in range(steps + 1):
    for _ in range(positions.count(index)):
      measure_peak()
    if index < steps:
      start = clock()
      run_step()
      times.append(clock() - start)
  return times


def bounded_mfu(model_flops_per_s: float, peak_flops_per_s: float,
                measured: bool) -> tuple[float, float, bool]:
  """(MFU, peak used, whether the peak was raised). A measured peak below the step's own rate
  was measured on a busy machine: it is raised to that rate, so MFU <= 1."""
  raised = measured and model_flops_per_s > peak_flops_per_s
  peak = model_flops_per_s if raised else peak_flops_per_s
  return model_flops_per_s / peak, peak, raised


def benchmark_step(config, steps: int = 10, peak_measurements: int = PEAK_MEASUREMENTS) -> dict:
  """Compiles the train step, runs it once, then times `steps` steps with the peak measured
  `peak_measurements` times in between; returns a dict of measurements."""
  exp = build_experiment(config, with_data=False)
  seq_len, batch = config.data.seq_len, config.train.batch_size
  tokens = np.random.default_rng(0).integers(0, exp.model_cfg.vocab_size, (batch, seq_len + 1))
  state = exp.init_state()
  with exp.mesh_context():
    batch_array = jax.device_put(tokens.astype(np.int32), exp.batch_sharding)
    start = time.perf_counter()
    with compile_cache.uncached():  # the compiler's time, not a load from the cache
      step = exp.train_step.lower(state, batch_array).compile()
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    state, metrics = step(state, batch_array)
    jax.block_until_ready(metrics)
    first_step_s = time.perf_counter() - start
    peak = PeakFlops()  # measures once (on CPU): the first of `peak_measurements`

    def run_step():
      nonlocal state
      state, step_metrics = step(state, batch_array)
      jax.block_until_ready(step_metrics)

    times = time_steps_between_peaks(run_step, peak.refresh, steps, peak_measurements - 1)
  step_s = statistics.median(times)
  tokens_per_step = batch * seq_len
  model_flops_per_s = flops_per_token(exp.model_cfg, seq_len) * tokens_per_step / step_s
  mfu, peak_value, raised = bounded_mfu(model_flops_per_s, peak.value, peak.measured)
  label = peak.label
  if raised:
    label += ', raised to the step\'s own rate: every peak measurement ran on a busy machine'
  return {'config': config.name, 'devices': jax.device_count(), 'backend': jax.default_backend(),
          'batch': batch, 'seq_len': seq_len, 'attention': exp.model_cfg.attention_impl,
          'matmul': exp.model_cfg.matmul_impl,
          'compile_s': compile_s,
          'first_step_s': first_step_s, 'steps': steps, 'step_s': step_s,
          'step_s_min': min(times), 'step_s_max': max(times),
          'tokens_per_s': tokens_per_step / step_s, 'model_flops_per_s': model_flops_per_s,
          'peak_flops_per_s': peak_value, 'peak_samples': list(peak.samples),
          'peak_spread': peak.spread, 'peak_raised': raised, 'mfu': mfu, 'mfu_of': label}


def format_benchmark(result: dict) -> str:
  spread = f" ({result['peak_spread']})" if result.get('peak_spread') else ''
  return (f"{result['config']}: compile {result['compile_s']:.1f} s, then "
          f"{result['tokens_per_s']:,.0f} tokens/s, step "
          f"{1000 * result['step_s']:.1f} ms (median), MFU {100 * result['mfu']:.1f}% of "
          f"{result['mfu_of']}{spread} on {result['devices']} "
          f"{result['backend']} device(s); batch {result['batch']} x {result['seq_len']}"
          + (f", attention {result['attention']}" if result.get('attention') else '')
          + (f", matmul {result['matmul']}" if result.get('matmul') else ''))


def bench(config, steps: int, as_json: bool) -> int:
  """`launch.py bench`: prints the measurements (as JSON if asked)."""
  result = benchmark_step(config, steps=steps)
  print(json.dumps(result) if as_json else format_benchmark(result))
  return 0
