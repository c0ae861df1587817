"""Peak matmul throughput of this process's devices, measured, for MFU.

MFU is reported against a peak measured in the same process (a large `jnp.dot`), not a data
sheet: on a shared 2-core CPU the spec number would say little. A machine that is busy with
other work at the moment of measuring gives too low a peak (and too high an MFU), so a run keeps
the best of several measurements (`PeakFlops.refresh()` at every evaluation).
"""

import time

import jax
import jax.numpy as jnp


def measured_peak_flops(size: int = 2048, repeats: int = 3) -> float:
  """FLOP/s of one device on a size x size matmul (float32 on CPU, bfloat16 elsewhere)."""
  dtype = jnp.float32 if jax.default_backend() == 'cpu' else jnp.bfloat16
  a = jnp.ones((size, size), dtype)
  matmul = jax.jit(lambda x: x @ x)
  matmul(a).block_until_ready()
  best = float('inf')
  for _ in range(repeats):
    start = time.perf_counter()
    matmul(a).block_until_ready()
    best = min(best, time.perf_counter() - start)
  return 2 * size**3 / best


class PeakFlops:
  """The best peak FLOP/s of all the devices seen so far in this process."""

  def __init__(self):
    self.value = measured_peak_flops() * jax.device_count()

  def refresh(self) -> float:
    self.value = max(self.value, measured_peak_flops() * jax.device_count())
    return self.value
