"""The run directory's ownership rule: one directory, one run (one config, up to safe changes).

`check_run_dir(run_dir, config)` compares the config a directory was made with (its
`config.json`) to the new one. Only the keys in `SAFE_TO_CHANGE` may differ: how long to train,
how often to log, evaluate and checkpoint, where things live, how the devices are laid out,
how the global batch is split into micro-batches (a run out of memory after a restart may raise
`train.grad_accum_steps`).
Any other difference (model width, vocabulary, data, seed, optimizer ...) would silently mix two
runs, so it is a `UserError` that names the keys and the fix; nothing in the directory is
touched before this check passes. A directory that holds no checkpoint (its run stopped before
the first save, say out of memory) binds nothing: it takes the new config. `write_run_config`
then records the new config atomically. `load_run_config` reads it back for `launch.py eval`
and `sample`.

The directory may be local or in a bucket (gs://, storage.py). With several processes,
`check_same_run_dir` proves at start that all of them see the same directory (a shared file
system or a bucket), so that local disks of separate hosts fail in the first minute rather than
at the first restore.
"""

import fnmatch
import json
import secrets
import tempfile

import ml_collections
import numpy as np

from errors import UserError
from storage import as_path, is_remote, write_atomically
from train.config import flatten, get_value, set_value

CONFIG_FILE = 'config.json'
CHECKPOINTS = 'checkpoints'  # under the run directory: one folder per saved step
SHARED_MARKER = '.shared_run_dir_check'  # written by process 0, read by the others at start

# Keys (fnmatch patterns over dotted names) that may change when a run is resumed.
SAFE_TO_CHANGE = (
    'name', 'run_root',
    'train.steps', 'train.log_every', 'train.eval_every', 'train.eval_batches',
    'train.patience', 'train.sample_*', 'train.max_consecutive_bad_steps',
    'train.compile_cache_dir',
    'checkpoint.*',
    'data.cache_dir', 'data.mirror_dir',  # where prepared shards are kept, not what they hold
    'mesh.*', 'sharding.*', 'distributed.*',  # layout only: the same numbers on any mesh
    'model.remat',  # recomputation trades memory for time, same numbers
    'model.attention_impl', 'model.attention_query_chunk', 'model.attention_cache_bytes',  # how
    #   attention is computed (cuDNN, XLA, blocks), the same numbers to round-off
    'model.matmul_impl',  # XLA's or OpenBLAS's products: the same numbers to round-off
    'train.grad_accum_steps',  # micro-batching of the same global batch: same gradient
)


def is_safe_to_change(key: str) -> bool:
  return any(fnmatch.fnmatchcase(key, pattern) for pattern in SAFE_TO_CHANGE)


def config_differences(old: dict, new: dict) -> list[str]:
  """Keys present in both configs whose values differ and that may not change on resume."""
  old_flat, new_flat = flatten(old), flatten(new)
  return sorted(key for key in old_flat.keys() & new_flat.keys()
                if old_flat[key] != new_flat[key] and not is_safe_to_change(key))


def read_config_json(run_dir) -> dict | None:
  path = as_path(run_dir) / CONFIG_FILE
  if not path.exists():
    return None
  try:
    config = json.loads(path.read_text())
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise UserError(f'{path} is unreadable ({type(e).__name__}); restore it, or use another '
                    '--run_dir') from None
  if not isinstance(config, dict):
    raise UserError(f'{path} is not a config; restore it, or use another --run_dir')
  return config


def _as_plain(config) -> dict:
  """The config as JSON would return it (tuples become lists, ...)."""
  return json.loads(config.to_json_best_effort())


def has_checkpoint(run_dir) -> bool:
  """Whether the run directory holds a saved step (a `checkpoints/<step>` folder)."""
  folder = as_path(run_dir) / CHECKPOINTS
  return folder.is_dir() and any(child.name.isdigit() for child in folder.iterdir())


def check_run_dir(run_dir, config) -> dict | None:
  """UserError if `run_dir` belongs to another run; returns its previous config, if any.
  A directory whose run never saved a step (it stopped at its start: out of memory, a mistake
  found by the first step) binds nothing: it takes the new config and starts over."""
  run_dir = as_path(run_dir)
  if run_dir.exists() and not run_dir.is_dir():
    raise UserError(f'{run_dir} is a file, not a run directory; choose another --run_dir')
  previous = read_config_json(run_dir)
  if previous is None or not has_checkpoint(run_dir):
    return None
  differences = config_differences(previous, _as_plain(config))
  if differences:
    flat_old, flat_new = flatten(previous), flatten(_as_plain(config))
    shown = ', '.join(f'{k}: {flat_old[k]!r} there, {flat_new[k]!r} now' for k in differences[:3])
    more = f' and {len(differences) - 3} more' if len(differences) > 3 else ''
    raise UserError(f'{run_dir} holds a run with another config ({shown}{more}); use another '
                    f'--run_dir or --config.name, or delete {run_dir} to start over')
  return previous


def write_run_config(run_dir, config) -> None:
  """Writes config.json atomically (a crash never leaves half a file)."""
  write_atomically(as_path(run_dir) / CONFIG_FILE, config.to_json_best_effort(indent=2) + '\n')


def load_run_config(run_dir) -> ml_collections.ConfigDict:
  """The config of an existing run, on top of today's defaults (configs/base.py)."""
  from configs.base import get_config  # pylint: disable=import-outside-toplevel
  run_dir = as_path(run_dir)
  stored = read_config_json(run_dir)
  if stored is None:
    raise UserError(f'{run_dir} has no {CONFIG_FILE}; pass the directory of a training run '
                    '(e.g. runs/tiny)')
  config = get_config()
  for key, value in flatten(stored).items():
    try:
      current = get_value(config, key)
    except UserError:
      continue  # a key this version of configs/base.py no longer has
    try:
      set_value(config, key, float(value) if isinstance(current, float) else value)
    except (TypeError, ValueError):
      raise UserError(f'{run_dir / CONFIG_FILE}: {key}={value!r} does not fit this version '
                      '(configs/base.py); fix the file or train again') from None
  return config


def check_writable(run_dir) -> None:
  """UserError unless `run_dir` can be created and written, tested by writing a probe file."""
  if is_remote(run_dir):
    _check_bucket_writable(as_path(run_dir))
    return
  probe = as_path(run_dir).absolute()
  while not probe.exists():
    probe = probe.parent
  if not probe.is_dir():
    raise UserError(f'cannot create {run_dir}: {probe} is a file; choose another --run_dir '
                    'or --config.run_root')
  try:
    tempfile.TemporaryFile(dir=probe).close()
  except OSError as e:
    raise UserError(f'cannot write to {probe} ({e.strerror}); choose another --run_dir or '
                    '--config.run_root') from None


def _check_bucket_writable(run_dir) -> None:
  probe = run_dir / f'.write_probe-{secrets.token_hex(8)}'
  try:
    probe.write_text('')
    probe.unlink()
  except Exception as e:  # pylint: disable=broad-except  # gcsfs raises many kinds
    reason = ' '.join(str(e).split())[:160] or type(e).__name__
    raise UserError(f'cannot write to {run_dir} ({reason}); check the bucket name and your '
                    'credentials, or choose another --run_dir') from None


def check_same_run_dir(run_dir) -> None:
  """With several processes: UserError unless every process sees process 0's `run_dir`.

  Process 0 writes a random token into the directory, every process then learns the token
  through a collective, and each other process must read the same token from its own
  `run_dir`; a second collective tells every process whether all of them did, so that all stop
  together. Nothing happens with one process."""
  import jax  # pylint: disable=import-outside-toplevel
  if jax.process_count() == 1:
    return
  from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
  run_dir = as_path(run_dir)
  marker = run_dir / SHARED_MARKER
  token = secrets.randbits(31) if jax.process_index() == 0 else 0
  if jax.process_index() == 0:
    run_dir.mkdir(parents=True, exist_ok=True)
    write_atomically(marker, f'{token}\n')
  token = int(multihost_utils.broadcast_one_to_all(np.int32(token)))
  try:
    seen = marker.read_text().strip() == str(token)
  except (OSError, ValueError):
    seen = False
  everyone = multihost_utils.process_allgather(np.int32(seen))
  if jax.process_index() == 0:
    marker.unlink(missing_ok=True)
  blind = [index for index, ok in enumerate(np.asarray(everyone).reshape(-1)) if not ok]
  if blind:
    raise UserError(f'process {blind[0]} does not see the run directory {run_dir} that process 0 '
                    'writes (each process has its own disk); use a shared file system or a '
                    'gs:// bucket for --run_dir')
