"""Float32 matrix products on a CPU through OpenBLAS, as an XLA FFI custom call.

On the 2-core AMD EPYC this project is measured on, XLA:CPU's own matrix kernels (YNNPACK) ran
the training step's products at 115-162 GFLOP/s and OpenBLAS's sgemm (the scipy-openblas32
wheel) at 180-187, timed alone; products are most of a float32 step (README, "Matrix products
through OpenBLAS on a CPU"). `matmul` computes `a . b` (or `a . b^T`) with that sgemm, forward
and backward: its gradient is two more sgemm calls that read their operands transposed in
place. The kernel (`cpu_matmul.cc`) runs OpenBLAS single-threaded on blocks of the product that
XLA's own intra-op thread pool computes, so no second thread pool competes with XLA's.
`models/layers.py` uses it when `model.matmul_impl` resolves to `openblas`
(`resolve_matmul_impl`): one CPU device, float32.

The kernel is compiled on first use with the machine's C++ compiler (about 5 s) against
jaxlib's FFI headers and the wheel's OpenBLAS, and cached under `$XDG_CACHE_HOME` (default
~/.cache) by the hash of everything that goes into it. Without a compiler or the wheel, `auto`
falls back to XLA's products and logs why; an explicit `openblas` is an error.
"""

import functools
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from errors import UserError
from models.config import MATMUL_IMPLS

SOURCE = Path(__file__).with_suffix('.cc')
TARGET_NAME = 'cpu_openblas_sgemm'
_log = logging.getLogger(__name__)


class Unavailable(Exception):
  """The OpenBLAS kernel cannot be built or loaded here; the message says why and the fix."""


def _openblas():
  try:
    import scipy_openblas32  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise Unavailable('the scipy-openblas32 wheel is not installed (`make install` installs '
                      'it from requirements.lock)') from e
  return scipy_openblas32


def _compiler() -> str:
  chosen = os.environ.get('CXX')
  found = shutil.which(chosen) if chosen else (shutil.which('g++') or shutil.which('c++'))
  if not found:
    looked_for = f'CXX={chosen}' if chosen else 'g++ or c++ on PATH'
    raise Unavailable(f'no C++ compiler found ({looked_for}): install g++ (`apt install g++`) '
                      'or set CXX to one')
  return found


def _cache_dir() -> Path:
  root = Path(os.environ.get('XDG_CACHE_HOME') or Path.home() / '.cache')
  return root / 'scaling-transformers'


def build_command(output: Path) -> list[str]:
  """The compiler call that builds the kernel into `output`."""
  openblas = _openblas()
  lib_dir = openblas.get_lib_dir()
  return [_compiler(), '-O2', '-std=c++17', '-shared', '-fPIC', '-w',
          f'-I{jax.ffi.include_dir()}', f'-I{openblas.get_include_dir()}', str(SOURCE),
          f'-L{lib_dir}', f'-l{openblas.get_library()}', f'-Wl,-rpath,{lib_dir}',
          '-o', str(output)]


def library_path() -> Path:
  """The built kernel, compiled now unless a build of the same inputs is cached."""
  command = build_command(Path('OUTPUT'))  # the output path is its last item
  digest = hashlib.sha256('\0'.join(command).encode() + SOURCE.read_bytes() +
                          jax.__version__.encode()).hexdigest()[:16]
  try:
    directory = _cache_dir()
    directory.mkdir(parents=True, exist_ok=True)
  except OSError:
    directory = Path(tempfile.gettempdir())
  path = directory / f'cpu_matmul-{digest}.so'
  if path.exists():
    return path
  partial = directory / f'.{path.name}.{os.getpid()}'  # concurrent builders each rename theirs
  result = subprocess.run(command[:-1] + [str(partial)], capture_output=True, text=True,
                          check=False)
  if result.returncode:
    last = (result.stderr.strip().splitlines() or ['(no output)'])[-1]
    raise Unavailable(f'compiling {SOURCE.name} failed: {last}')
  os.replace(partial, path)
  return path


@functools.cache
def unavailable_reason() -> str | None:
  """None once the kernel is built and registered with XLA:CPU in this process, else why not."""
  try:
    import ctypes  # pylint: disable=import-outside-toplevel
    library = ctypes.cdll.LoadLibrary(str(library_path()))
    jax.ffi.register_ffi_target(TARGET_NAME, jax.ffi.pycapsule(library.CpuSgemm),
                                platform='cpu')
  except (Unavailable, OSError) as e:
    return str(e)
  return None


def resolve_matmul_impl(impl: str, platform: str, n_devices: int, dtype: str,
                        remat: str) -> str:
  """What `model.matmul_impl` means for this run: `auto` is `openblas` on one CPU device in
  float32 (unless the kernel is unavailable, or a `dots` remat policy needs XLA's dot ops to
  find the products to keep), else `xla`; an explicit `openblas` that cannot run is an error."""
  if impl not in MATMUL_IMPLS:
    raise UserError(f'model.matmul_impl={impl!r} is not one of {", ".join(MATMUL_IMPLS)}')
  if impl == 'xla':
    return impl
  blockers = []
  if platform != 'cpu':
    blockers.append(f'the devices are {platform}, not cpu')
  if n_devices != 1:
    blockers.append(f'the mesh has {n_devices} devices (XLA cannot split a custom call)')
  if dtype != 'float32':
    blockers.append(f'model.dtype={dtype} (the kernel is float32 sgemm)')
  if remat.startswith('dots'):
    blockers.append(f'model.remat={remat} keeps XLA dot outputs, and these products are not')
  if not blockers:
    reason = unavailable_reason()
    if reason:
      blockers.append(reason)
  if not blockers:
    return 'openblas'
  if impl == 'openblas':
    raise UserError(f'model.matmul_impl=openblas cannot run: {"; ".join(blockers)}; use '
                    '--config.model.matmul_impl=xla (or auto)')
  if platform == 'cpu' and n_devices == 1 and dtype == 'float32':
    _log.warning('matrix products use XLA:CPU, not OpenBLAS: %s', '; '.join(blockers))
  return 'xla'


def _sgemm(a: jax.Array, b: jax.Array, transpose_a: bool, transpose_b: bool) -> jax.Array:
  rows = a.shape[1] if transpose_a else a.shape[0]
  cols = b.shape[0] if transpose_b else b.shape[1]
  call = jax.ffi.ffi_call(TARGET_NAME, jax.ShapeDtypeStruct((rows, cols), jnp.float32),
                          vmap_method='sequential')
  return call(a, b, transpose_a=np.int32(transpose_a), transpose_b=np.int32(transpose_b))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def matmul(a_MxK: jax.Array, b: jax.Array, transpose_b: bool = False) -> jax.Array:
  """a . b for b [K, N], or a . b^T for b [N, K] when `transpose_b`; float32, 2-D, one CPU
  device, after `unavailable_reason()` has returned None."""
  return _sgemm(a_MxK, b, False, transpose_b)


def _matmul_fwd(a_MxK, b, transpose_b):
  return _sgemm(a_MxK, b, False, transpose_b), (a_MxK, b)


def _matmul_bwd(transpose_b, residuals, dy_MxN):
  a_MxK, b = residuals
  if transpose_b:  # y = a b^T: da = dy b, db = dy^T a
    return _sgemm(dy_MxN, b, False, False), _sgemm(dy_MxN, a_MxK, True, False)
  # y = a b: da = dy b^T, db = a^T dy
  return _sgemm(dy_MxN, b, False, True), _sgemm(a_MxK, dy_MxN, True, False)


matmul.defvjp(_matmul_fwd, _matmul_bwd)
