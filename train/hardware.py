"""Peak matmul throughput of this process's devices, measured, for MFU.

MFU is reported against a peak measured in the same process (a large `jnp.dot`), not a data
sheet: on a shared 2-core CPU the spec number would say little.
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
