"""Where files live: local disk or a bucket (`gs://...`), both through `etils.epath`.

Every path of a run (run directory, checkpoints, metrics, plots, samples, config.json) and of a
prepared corpus goes through `as_path`, which gives an `epath.Path`: a `pathlib`-like object
that reads and writes `gs://bucket/...` through fsspec and gcsfs (and plain files through the
os module), the same library orbax writes checkpoints with (tensorstore writes the arrays).

What a bucket cannot do, and what this module does instead:
- rename a folder atomically: a single object write is atomic, so `write_atomically` writes a
  small file in one request, and a prepared corpus marks itself complete by writing its
  manifest last (data/prepare.py);
- append to a file: `metrics.jsonl` is rewritten whole when flushed (train/metrics.py);
- memory-map a file: `local_copy` downloads a file once into a local folder, checks it against
  a SHA-256 and reuses it afterwards (data/loader.py memory-maps the copy).

Against an emulator, `STORAGE_EMULATOR_HOST` points gcsfs and google-cloud-storage (TensorBoard
files) at it, and `TENSORSTORE_GCS_HTTP_URL` points tensorstore (checkpoint arrays) at it.
"""

import hashlib
import os
import pathlib
import tempfile

from etils import epath

_CHUNK = 1 << 24  # bytes per read when hashing or copying


def as_path(path) -> epath.Path:
  """An `epath.Path` for a local path (`~` expanded) or a URI such as gs://bucket/dir."""
  path = epath.Path(path)
  return path if is_remote(path) else path.expanduser()


def absolute(path) -> epath.Path:
  """`path` made absolute when local (a URI is absolute already; epath would prefix the cwd)."""
  path = as_path(path)
  return path if is_remote(path) else path.absolute()


def is_remote(path) -> bool:
  """True for gs://, s3://, ... (anything with a scheme), False for a local path."""
  return '://' in os.fspath(path)


def write_atomically(path, text: str) -> None:
  """Writes `text` so that a reader sees the old file or the new one, never half of one.

  Locally: a temporary file in the same folder renamed over the target. In a bucket: one
  object upload, which is atomic by itself."""
  path = as_path(path)
  if is_remote(path):
    path.write_text(text)
    return
  handle, temporary = tempfile.mkstemp(prefix=f'.{path.name}.', dir=os.fspath(path.parent))
  try:
    with os.fdopen(handle, 'w') as out:
      out.write(text)
    os.replace(temporary, os.fspath(path))
  except BaseException:
    pathlib.Path(temporary).unlink(missing_ok=True)
    raise


def file_sha256(path) -> str:
  digest = hashlib.sha256()
  with as_path(path).open('rb') as source:
    while chunk := source.read(_CHUNK):
      digest.update(chunk)
  return digest.hexdigest()


def local_copy(path, local_dir, sha256: str) -> pathlib.Path:
  """A local file with the content of `path` (whose SHA-256 is `sha256`), for np.memmap.

  A local `path` is returned as is. A remote one is downloaded into `local_dir` (under the
  bucket and object names), checked against `sha256`, and reused by later calls while the
  checked copy is there; a `.sha256` file next to it records which content it holds."""
  path = as_path(path)
  if not is_remote(path):
    return pathlib.Path(path)
  scheme, rest = os.fspath(path).split('://', 1)
  target = pathlib.Path(local_dir).expanduser() / scheme / rest
  stamp = target.with_name(target.name + '.sha256')
  if target.is_file() and stamp.is_file() and stamp.read_text().strip() == sha256:
    return target
  target.parent.mkdir(parents=True, exist_ok=True)
  handle, temporary = tempfile.mkstemp(prefix=f'.{target.name}.', dir=target.parent)
  try:
    digest = hashlib.sha256()
    with os.fdopen(handle, 'wb') as out, path.open('rb') as source:
      while chunk := source.read(_CHUNK):
        out.write(chunk)
        digest.update(chunk)
    if digest.hexdigest() != sha256:
      raise ValueError(f'{path} does not match the SHA-256 of its manifest')
    os.replace(temporary, target)  # several processes may copy at once: each rename is whole
  except BaseException:
    pathlib.Path(temporary).unlink(missing_ok=True)
    raise
  write_atomically(stamp, sha256 + '\n')
  return target


def move_tree(source, target) -> None:
  """Moves a folder (or file) to `target`, whose parent folder need not exist. In a bucket, a
  move is a copy of every object and a delete (there are no real folders to rename); it goes
  through epath like every other access, so epath's view of the bucket stays current."""
  source, target = as_path(source), as_path(target)
  if not is_remote(source):
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(os.fspath(source), os.fspath(target))
    return
  _copy_tree(source, target)
  source.rmtree()


def _copy_tree(source: epath.Path, target: epath.Path) -> None:
  if not source.is_dir():
    source.copy(target)
    return
  for item in source.iterdir():
    _copy_tree(item, target / item.name)


def upload_folder(local_dir: pathlib.Path, remote_dir, last: str | None = None) -> None:
  """Copies the files of a local folder (not its subfolders) into `remote_dir`; the file named
  `last` goes after all the others (a marker that the folder is complete)."""
  remote_dir = as_path(remote_dir)
  names = sorted(p.name for p in pathlib.Path(local_dir).iterdir() if p.is_file())
  if last in names:
    names.remove(last)
    names.append(last)
  for name in names:
    with open(pathlib.Path(local_dir) / name, 'rb') as source, \
        (remote_dir / name).open('wb') as out:
      while chunk := source.read(_CHUNK):
        out.write(chunk)
