"""host_memory.keep_freed_memory: freed host memory is reused, so repeated XLA:CPU executions
stop page-faulting; it stays off where it cannot help (too late, an accelerator, opted out)."""

import os
import subprocess
import sys

import numpy as np  # pylint: disable=unused-import  # imported first, as in any test process

import host_memory
from tests.multidevice import ROOT

# A 64 MiB result allocated by every call: without reuse, each call maps fresh pages. XLA frees
# a result a moment after Python drops it, so with reuse the heap first grows to a dozen
# results or so (what is in flight at once), and then stays: far short of one block a call.
_REPEATED_CALLS = '''
import resource, sys
import host_memory
applied = host_memory.keep_freed_memory()
import jax, jax.numpy as jnp
double = jax.jit(lambda x: x * 2.0)
x = jnp.ones((1 << 24,), jnp.float32)
for _ in range(30):
  double(x).block_until_ready()
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
  double(x).block_until_ready()
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults)
'''


def _faults_of_twenty_calls(opt_out: str) -> tuple[str, int]:
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu', host_memory.OPT_OUT: opt_out}
  done = subprocess.run([sys.executable, '-c', _REPEATED_CALLS], cwd=ROOT, env=env, check=True,
                        capture_output=True, text=True, timeout=120)
  applied, faults = done.stdout.split()
  return applied, int(faults)


def test_reused_memory_stops_the_page_faults_of_repeated_executions():
  pages_per_result = (64 << 20) // os.sysconf('SC_PAGE_SIZE')
  applied, faults = _faults_of_twenty_calls('1')
  assert applied == 'True'
  assert faults < 5 * pages_per_result, faults
  applied, faults = _faults_of_twenty_calls('0')  # glibc's default: a fresh mmap per result
  assert applied == 'False'
  assert faults >= 16 * pages_per_result, faults


def test_off_once_numpy_started_and_on_accelerators(monkeypatch):
  assert 'numpy' in sys.modules  # too late: its threads already hold their own heaps
  assert host_memory.keep_freed_memory() is False
  monkeypatch.setenv('JAX_PLATFORMS', 'cuda')
  assert host_memory.accelerator_present()
  monkeypatch.setenv('JAX_PLATFORMS', 'cpu')
  assert not host_memory.accelerator_present()
