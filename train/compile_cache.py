"""The persistent compilation cache: compiled programs kept on disk for the next run to load.

A run that starts again (resumed after preemption or a crash, a sweep's trials of one shape, a
scaling study's repeats) loads its train and eval steps from `train.compile_cache_dir` instead of
compiling them again. JAX keys each program by its HLO, compile options, XLA flags, devices and
jax version, so a changed model, mesh or flag compiles afresh; a loaded program is the same
machine code, so results are bit-identical to a fresh compile (tests/test_compile_cache.py).

`auto` (the default) is the directory in JAX_COMPILATION_CACHE_DIR when that is set, else
~/.cache/scaling-transformers/xla; '' turns the cache off. It is a path on a mounted
filesystem, not gs://: every process of a multi-process run reads it and only process 0 writes,
so on several hosts name a directory they all mount (NFS), or only the first host's loads.
Entries are code that runs: keep the directory one that only you can write to. Compile-time
measurements (`launch.py bench`, benchmarks/compile_depth.py) compile under `uncached()`.

An entry that cannot be read (truncated by a kill during its write: JAX writes in place, and
would then skip every later write of that key) is removed and the program compiled and written
afresh, with one line on stderr instead of JAX's warning.
"""

import contextlib
import dataclasses
import os
import re
import sys
import warnings
from pathlib import Path

import jax
from jax.experimental.compilation_cache import compilation_cache

from errors import UserError
from storage import is_remote

DEFAULT_DIR = '~/.cache/scaling-transformers/xla'
MAX_BYTES = 8 << 30  # the least recently used entries are deleted beyond this
_HIT = '/jax/compilation_cache/cache_hits'
_SAVED = '/jax/compilation_cache/compile_time_saved_sec'
_UNREADABLE = re.compile(r"Error reading persistent compilation cache entry for '([^']+)': (.*)")


def resolve_dir(setting: str) -> str | None:
  """The directory `train.compile_cache_dir` names (None: off)."""
  if setting == 'auto':
    setting = os.environ.get('JAX_COMPILATION_CACHE_DIR') or DEFAULT_DIR
  return os.path.abspath(os.path.expanduser(setting)) if setting else None


def enable(setting: str) -> str | None:
  """Points JAX's persistent cache at `setting`'s directory (creating it) before the run's
  first compile, or turns the cache off for ''. Returns the directory, or None."""
  if is_remote(setting):
    raise UserError(f'train.compile_cache_dir={setting!r}: the compilation cache is a directory '
                    'on a mounted filesystem (NFS on several hosts), not gs://; name one, or "" '
                    'for none')
  directory = resolve_dir(setting)
  if directory is not None:
    try:
      os.makedirs(directory, exist_ok=True)
    except OSError as e:
      raise UserError(f'train.compile_cache_dir={setting!r}: cannot create {directory} '
                      f'({e.strerror}); name a writable directory, or set it to "" to compile '
                      'without a cache') from None
  if (directory != jax.config.jax_compilation_cache_dir
      or jax.config.jax_enable_compilation_cache != (directory is not None)):
    jax.config.update('jax_compilation_cache_dir', directory)
    jax.config.update('jax_enable_compilation_cache', directory is not None)
    if directory is not None and jax.config.jax_compilation_cache_max_size < 0:
      jax.config.update('jax_compilation_cache_max_size', MAX_BYTES)
    compilation_cache.reset_cache()  # JAX opens its cache once: make it open this one
  if directory is not None:
    _repair_unreadable_entries()
  return directory


def _remove_entries(directory: str, module_name: str) -> int:
  """Deletes every entry of the program `module_name` (e.g. jit_train_step) in `directory`;
  returns how many there were."""
  removed = 0
  for path in Path(directory).glob(f'{module_name}-*-cache'):
    path.unlink(missing_ok=True)
    path.with_name(path.name[:-len('cache')] + 'atime').unlink(missing_ok=True)
    removed += 1
  return removed


def _repair_unreadable_entries() -> None:
  """Makes JAX's "Error reading persistent compilation cache entry" warning remove that
  program's entries (process 0, the one that writes), so the compile that follows is written,
  and say so in one line. Installed once per process, around whatever shows warnings."""
  show = warnings.showwarning
  if getattr(show, 'repairs_compile_cache', False):
    return

  def showwarning(message, category, filename, lineno, file=None, line=None):
    unreadable = _UNREADABLE.match(str(message))
    directory = jax.config.jax_compilation_cache_dir
    if not unreadable or not directory:
      show(message, category, filename, lineno, file, line)
      return
    if jax.process_index() == 0:
      module_name, reason = unreadable.groups()
      removed = _remove_entries(directory, module_name)
      print(f'compile cache: an entry of {module_name} in {directory} was unreadable '
            f'({reason[:120]}); removed {removed}, compiling it again', file=sys.stderr)

  showwarning.repairs_compile_cache = True
  warnings.showwarning = showwarning


@contextlib.contextmanager
def uncached():
  """Compiles inside this block neither read nor write the cache (to time the compiler)."""
  was_enabled = jax.config.jax_enable_compilation_cache
  jax.config.update('jax_enable_compilation_cache', False)
  compilation_cache.reset_cache()
  try:
    yield
  finally:
    jax.config.update('jax_enable_compilation_cache', was_enabled)
    compilation_cache.reset_cache()  # the next compile looks at the cache again


@dataclasses.dataclass
class Loaded:
  """Programs loaded from the cache in `directory` while `watch()` was open, and the compile
  time they saved (what their first compile took, less the time to read them)."""
  directory: str | None
  programs: int = 0
  seconds_saved: float = 0.0

  def describe(self) -> str | None:
    """The summary's line, or None when nothing was loaded."""
    if not self.programs:
      return None
    return (f'compile cache: {self.programs} program{"s" * (self.programs != 1)} loaded from '
            f'{self.directory} (about {self.seconds_saved:.0f} s of compiling saved)')


@contextlib.contextmanager
def watch(directory: str | None = None):
  """Counts what the persistent cache (`directory`, as `enable` returned it) supplies inside
  the block (yields a `Loaded`)."""
  loaded = Loaded(directory)

  def on_event(event: str, **_):
    if event == _HIT:
      loaded.programs += 1

  def on_duration(event: str, duration_secs: float, **_):
    if event == _SAVED:
      loaded.seconds_saved += max(duration_secs, 0.0)

  jax.monitoring.register_event_listener(on_event)
  jax.monitoring.register_event_duration_secs_listener(on_duration)
  try:
    yield loaded
  finally:
    jax.monitoring.unregister_event_listener(on_event)
    jax.monitoring.unregister_event_duration_listener(on_duration)
