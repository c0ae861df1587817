"""The C++ kernels for XLA:CPU (float32 products and causal attention), built and registered.

`cpu_matmul.cc` (OpenBLAS sgemm) and `cpu_attention.cc` (causal attention, forward and
backward), with the thread-pool helper `cpu_parallel.h`, are XLA FFI custom calls. They are
compiled on first use into one shared library with the machine's C++ compiler (about 5-10 s)
against jaxlib's FFI headers and the scipy-openblas32 wheel's OpenBLAS, cached under
`$XDG_CACHE_HOME` (default ~/.cache) by the hash of everything that goes into the build, and
registered with XLA:CPU once per process by `unavailable_reason()`. Without a compiler or the
wheel it returns why (with the fix), and the callers fall back to XLA's own ops.
"""

import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import jax

from errors import UserError

HERE = Path(__file__).parent
SOURCES = (HERE / 'cpu_matmul.cc', HERE / 'cpu_attention.cc')
HEADERS = (HERE / 'cpu_parallel.h',)
# XLA FFI target name -> the handler symbol the library exports.
TARGETS = {'cpu_openblas_sgemm': 'CpuSgemm',
           'cpu_causal_attention_fwd': 'CpuCausalAttentionForward',
           'cpu_causal_attention_bwd': 'CpuCausalAttentionBackward'}
_log = logging.getLogger(__name__)


class Unavailable(Exception):
  """The kernels cannot be built or loaded here; the message says why and the fix."""


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


def _vector_flags() -> list[str]:
  """AVX2 + FMA code where this x86 CPU has them (the attention kernel's exp and softmax loops
  vectorize 8 wide); none elsewhere. Part of the build command, hence of the cache key."""
  if platform.machine() not in ('x86_64', 'AMD64'):
    return []
  try:
    flags = next((line.split(':', 1)[1].split() for line in open('/proc/cpuinfo')
                  if line.startswith('flags')), [])
  except OSError:
    return []
  return ['-mavx2', '-mfma'] if {'avx2', 'fma'} <= set(flags) else []


def _cache_dir() -> Path:
  root = Path(os.environ.get('XDG_CACHE_HOME') or Path.home() / '.cache')
  return root / 'scaling-transformers'


def build_command(output: Path) -> list[str]:
  """The compiler call that builds the kernels into `output`."""
  openblas = _openblas()
  lib_dir = openblas.get_lib_dir()
  return [_compiler(), '-O3', '-fno-trapping-math', '-std=c++17', '-shared', '-fPIC', '-w',
          *_vector_flags(),
          f'-I{HERE.parent}', f'-I{jax.ffi.include_dir()}', f'-I{openblas.get_include_dir()}',
          *map(str, SOURCES), f'-L{lib_dir}', f'-l{openblas.get_library()}',
          f'-Wl,-rpath,{lib_dir}', '-o', str(output)]


def library_path() -> Path:
  """The built library, compiled now unless a build of the same inputs is cached."""
  command = build_command(Path('OUTPUT'))  # the output path is its last item
  digest = hashlib.sha256('\0'.join(command).encode() + jax.__version__.encode() +
                          b''.join(path.read_bytes() for path in SOURCES + HEADERS))
  try:
    directory = _cache_dir()
    directory.mkdir(parents=True, exist_ok=True)
  except OSError:
    directory = Path(tempfile.gettempdir())
  path = directory / f'cpu_kernels-{digest.hexdigest()[:16]}.so'
  if path.exists():
    return path
  partial = directory / f'.{path.name}.{os.getpid()}'  # concurrent builders each rename theirs
  result = subprocess.run(command[:-1] + [str(partial)], capture_output=True, text=True,
                          check=False)
  if result.returncode:
    lines = result.stderr.strip().splitlines() or ['(no output)']
    first_error = next((line for line in lines if 'error' in line), lines[-1])
    raise Unavailable(f'compiling {", ".join(s.name for s in SOURCES)} failed: {first_error}')
  os.replace(partial, path)
  return path


@functools.cache
def unavailable_reason() -> str | None:
  """None once the kernels are built and registered with XLA:CPU in this process, else why not."""
  try:
    import ctypes  # pylint: disable=import-outside-toplevel
    library = ctypes.cdll.LoadLibrary(str(library_path()))
    for target, symbol in TARGETS.items():
      jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(library, symbol)),
                                  platform='cpu')
  except (Unavailable, OSError) as e:
    return str(e)
  return None


def blockers(platform_name: str, n_devices: int, dtype: str) -> list[str]:
  """Why the kernels cannot run a model here (empty: they can): one CPU device, float32, and a
  library that builds and loads."""
  found = []
  if platform_name != 'cpu':
    found.append(f'the devices are {platform_name}, not cpu')
  if n_devices != 1:
    found.append(f'the mesh has {n_devices} devices (XLA cannot split a custom call)')
  if dtype != 'float32':
    found.append(f'model.dtype={dtype} (the kernels are float32)')
  if not found and (reason := unavailable_reason()):
    found.append(reason)
  return found


def choose(option: str, requested: str, kernel: str, fallback: str, platform_name: str,
           n_devices: int, dtype: str, without: str, extra_blockers: tuple[str, ...] = ()) -> str:
  """`kernel` when nothing blocks it (`blockers` plus `extra_blockers`), else `fallback`: a
  UserError naming the fix when the user asked for `kernel` explicitly (`option` is its config
  key), a logged warning (`without` says what runs instead) where it would normally run (one CPU
  device in float32)."""
  found = blockers(platform_name, n_devices, dtype) + list(extra_blockers)
  if not found:
    return kernel
  if requested == kernel:
    raise UserError(f'model.{option}={kernel} cannot run: {"; ".join(found)}; use '
                    f'--config.model.{option}={fallback} (or auto)')
  if platform_name == 'cpu' and n_devices == 1 and dtype == 'float32':
    _log.warning('%s: %s', without, '; '.join(found))
  return fallback
