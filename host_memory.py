"""Host memory on CPU-only machines: keep what XLA:CPU frees for the next step.

Every execution of a compiled XLA:CPU program allocates its temporaries as one block (1.2 GB
for the 6-layer byte-vocabulary GPT at batch 16 x 256) and frees it when the step ends. glibc's
malloc serves a block that large with a fresh `mmap` and returns it to the kernel on free, so
every step touches 1.2 GB of new pages: 320,000 page faults and 0.6 s of kernel time a step.
Without them that step takes 1.78-1.81 s instead of 2.04-2.10 s on a 2-core CPU (README, "Host
memory: no page faults per step").

`keep_freed_memory()` tells glibc (through `mallopt`) to serve every thread from the main heap,
never with `mmap`, and never to give freed memory back, so the next step reuses the same pages:
no page faults once the heap has grown to what is in flight at once. XLA frees a step's block a
moment after its results are ready, so the next step's block is sometimes allocated first and
the heap holds two. That is the price: resident memory keeps its peak. It must run before numpy
or jax start their threads; `launch.py` calls it first thing. It is left off on machines with an
accelerator (device memory is not malloc's, and one heap would make host threads such as the
input pipeline and checkpoint writers share a lock), off outside glibc, and off when the
environment sets KEEP_FREED_HOST_MEMORY=0.
"""

import ctypes
import glob
import os
import sys

OPT_OUT = 'KEEP_FREED_HOST_MEMORY'
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8  # glibc's malloc.h
_ACCELERATOR_DEVICES = ('/dev/nvidia[0-9]*', '/dev/accel[0-9]*', '/dev/vfio/[0-9]*', '/dev/kfd')


def accelerator_present() -> bool:
  """Whether this process will compute on an accelerator: JAX_PLATFORMS when set, else whether
  the machine has GPU or TPU device files."""
  platforms = os.environ.get('JAX_PLATFORMS', '').strip()
  if platforms:
    return platforms.split(',')[0].strip() != 'cpu'
  return any(glob.glob(pattern) for pattern in _ACCELERATOR_DEVICES)


def keep_freed_memory() -> bool:
  """Makes glibc keep freed memory for reuse (module docstring); True if it now does."""
  if os.environ.get(OPT_OUT, '1') == '0' or not sys.platform.startswith('linux'):
    return False
  if 'numpy' in sys.modules or 'jax' in sys.modules or accelerator_present():
    return False  # too late (threads already hold their own heaps), or not a CPU run
  try:
    libc = ctypes.CDLL(None)
    libc.gnu_get_libc_version  # pylint: disable=pointless-statement  # glibc only (not musl)
    mallopt = libc.mallopt
  except (OSError, AttributeError):
    return False
  # -1 as the trim threshold disables trimming (mallopt(3)).
  return all(mallopt(option, value) == 1 for option, value in
             ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, -1)))
