"""One persistent compilation cache for the whole test session (train/compile_cache.py).

Many tests compile the same small programs, in this process and in the CLI subprocesses they
start: the first compile is kept and later ones load it. The directory is made fresh for each
session (so a run of the suite measures a cold cache, as CI's clean clone does), shared by the
pytest-xdist workers and every subprocess through the environment they inherit, and deleted at
the end. A test that sets its own JAX_COMPILATION_CACHE_DIR (tests/tiny_run.py) keeps its own.
Compile-time measurements compile under `compile_cache.uncached()` and are unaffected.
"""

import os
import shutil
import tempfile

# The controller makes the directory; the xdist workers inherit it through the environment.
_OWN_CACHE = None
if 'JAX_COMPILATION_CACHE_DIR' not in os.environ:
  _OWN_CACHE = tempfile.mkdtemp(prefix='test-compile-cache-')
  os.environ['JAX_COMPILATION_CACHE_DIR'] = _OWN_CACHE
  # Tests compile many programs that take well under JAX's default of 1 s: keep those too.
  os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0.1')


def pytest_unconfigure(config):
  if _OWN_CACHE and not hasattr(config, 'workerinput'):
    shutil.rmtree(_OWN_CACHE, ignore_errors=True)
