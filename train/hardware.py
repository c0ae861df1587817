"""The peak FLOP/s that MFU is measured against: published for known accelerators, else measured.

On TPUs and GPUs whose `device_kind` is in `PUBLISHED_BF16_PEAKS`, MFU is against the chip's
published dense (no sparsity) bf16 peak times the device count, as MaxText and Levanter report
it, so figures compare with theirs. On CPU, and on an accelerator missing from the table, the
peak is measured in the same process (a large `jnp.dot`): a spec number says little on a shared
2-core CPU. A machine busy with other work while it is measured gives too low a peak (too high an
MFU), so a run keeps the best of several measurements (`PeakFlops.refresh()` at every
evaluation). `PeakFlops.label` names the peak used; every printed MFU says "of <label>".
"""

import re
import time
from typing import Sequence

import jax
import jax.numpy as jnp

# (pattern matched against jax's device_kind, chip name, dense bf16 FLOP/s per chip). Sources:
# Google Cloud TPU system architecture pages (v4 275, v5e 197, v5p 459, v6e 918 TFLOP/s per
# chip); NVIDIA A100 and H100 datasheets and the H200 product brief (A100 312, H100 SXM 989.4,
# H100 PCIe 756, H200 989.4 TFLOP/s, the "with sparsity" figures halved). jax names v5e
# 'TPU v5 lite', v5p 'TPU v5', v6e 'TPU v6 lite', an H100 SXM 'NVIDIA H100 80GB HBM3'.
# Variants with other clocks (H100 NVL, H200 NVL, GH200) are left out: they are measured.
PUBLISHED_BF16_PEAKS = (
    (r'^TPU v4$', 'TPU v4', 275e12),
    (r'^TPU v5( ?lite|e)', 'TPU v5e', 197e12),
    (r'^TPU v5p?$', 'TPU v5p', 459e12),
    (r'^TPU v6( ?lite|e)', 'TPU v6e', 918e12),
    (r'\bA100\b', 'A100', 312e12),
    (r'\bH100\b.*\bPCIe\b', 'H100 PCIe', 756e12),
    (r'\bH100\b(?!.*\b(PCIe|NVL)\b)', 'H100 SXM', 989.4e12),
    (r'\bH200\b(?!.*\bNVL\b)', 'H200', 989.4e12),
)

# HBM per chip of the TPUs `launch.py plan` compiles for (tools/plan.py), keyed by the chip names
# above; same Google Cloud pages: v4 32 GiB, v5e 16 GiB, v6e 32 GiB; v5p "95 GB", but libtpu
# 0.0.42.1's compiler offers 95.74 GiB of it (and 15.75 of a v5e's 16): 96 GiB.
PUBLISHED_HBM_BYTES = {'TPU v4': 32 * 2**30, 'TPU v5e': 16 * 2**30, 'TPU v5p': 96 * 2**30,
                       'TPU v6e': 32 * 2**30}


def published_peak(device_kind: str) -> tuple[str, float] | None:
  """(chip name, dense bf16 FLOP/s) of a `jax.Device.device_kind`, or None if not in the table."""
  for pattern, name, flops in PUBLISHED_BF16_PEAKS:
    if re.search(pattern, device_kind, re.IGNORECASE):
      return name, flops
  return None


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


def _flops_text(flops: float) -> str:
  return f'{flops / 1e12:,.0f} TFLOP/s' if flops >= 1e12 else f'{flops / 1e9:,.0f} GFLOP/s'


class PeakFlops:
  """The peak FLOP/s of all the run's devices (`value`) and what it is (`label`)."""

  def __init__(self, devices: Sequence[jax.Device] | None = None):
    devices = list(jax.devices() if devices is None else devices)
    self.count, self.platform = len(devices), devices[0].platform
    self.device_kind = devices[0].device_kind
    published = published_peak(self.device_kind) if self.platform != 'cpu' else None
    self.chip, self.per_chip = published if published else (None, 0.0)
    self.samples: list[float] = []  # every measurement of a measured peak, in order
    self.value = self.per_chip * self.count if published else self._measure()

  @property
  def measured(self) -> bool:
    return self.chip is None

  def _measure(self) -> float:
    self.samples.append(measured_peak_flops() * self.count)
    return self.samples[-1]

  def refresh(self) -> float:
    """Measures again (a measured peak keeps the best value); a published peak stays."""
    if self.measured:
      self.value = max(self.value, self._measure())
    return self.value

  @property
  def spread(self) -> str:
    """How the measurements varied, e.g. 'best of 5; 260-300 GFLOP/s' ('' if published)."""
    if not self.samples:
      return ''
    high = max(self.samples)
    scale, unit = (1e12, 'TFLOP/s') if high >= 1e12 else (1e9, 'GFLOP/s')
    return (f'best of {len(self.samples)}; '
            f'{min(self.samples) / scale:,.0f}-{high / scale:,.0f} {unit}')

  @property
  def label(self) -> str:
    """e.g. 'H100 SXM bf16 peak 989 TFLOP/s', '8 x TPU v5e bf16 peak 197 TFLOP/s' or
    'measured CPU peak 310 GFLOP/s'."""
    if not self.measured:
      chips = f'{self.count} x ' if self.count > 1 else ''
      return f'{chips}{self.chip} bf16 peak {_flops_text(self.per_chip)}'
    unknown = '' if self.platform == 'cpu' else f' ({self.device_kind}: no published peak known)'
    return f'measured {self.platform.upper()} peak {_flops_text(self.value)}{unknown}'
