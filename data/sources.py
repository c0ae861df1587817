"""Where text comes from: turns `config.data.source` into a stream of (name, text) documents.

A source is one of
  'stdlib'     every .py file of the running interpreter's standard library (the default corpus);
  a text file  one document (any extension except .jsonl / .json / .parquet);
  a folder     every text-like file below it (see TEXT_EXTENSIONS), hidden paths skipped;
  *.jsonl      one document per line, text read from the record field `text_field`;
  *.json       a JSON array of records, or JSON Lines under another name;
  *.parquet    one document per row of the column `text_field`.

Documents come in a deterministic order (sorted paths, then file order), names are stable
(relative paths, or `file:line` / `file:row`), and empty documents are dropped. Files of the
stdlib and of folders that are not valid UTF-8 are skipped; every other problem is a `UserError`.
`data/prepare.py` consumes this; `source_fingerprint` keys its cache.
"""

import hashlib
import json
import os
import sys
import sysconfig
from pathlib import Path
from typing import Iterator

from errors import UserError

Document = tuple[str, str]

TEXT_EXTENSIONS = frozenset({
    '.txt', '.text', '.md', '.rst', '.tex', '.org', '.csv', '.tsv', '.html', '.xml',
    '.json', '.yaml', '.yml', '.toml', '.ini', '.cfg',
    '.py', '.pyi', '.c', '.h', '.cc', '.cpp', '.hpp', '.java', '.js', '.ts', '.go', '.rs',
    '.rb', '.sh', '.sql', '.lua', '.jl', '.hs', '.ml', '.scala', '.kt', '.swift',
})
_RECORD_SUFFIXES = ('.jsonl', '.json', '.parquet')
_SKIPPED_STDLIB_DIRS = frozenset({'site-packages', 'dist-packages', '__pycache__'})


def iter_documents(source: str, text_field: str) -> Iterator[Document]:
  """Yields (document_name, text) of a source, in a deterministic order; see the module doc."""
  kind = source_kind(source)
  if kind == 'stdlib':
    documents = _iter_files(stdlib_root(), stdlib_files())
  elif kind == 'folder':
    documents = _iter_files(_path(source), folder_files(_path(source)))
  elif kind == 'jsonl':
    documents = _iter_json_lines(_path(source), text_field)
  elif kind == 'json':
    documents = _iter_json(_path(source), text_field)
  elif kind == 'parquet':
    documents = _iter_parquet(_path(source), text_field)
  else:
    documents = _iter_single_file(_path(source))
  return _checked_not_empty(documents, source)


def source_kind(source: str) -> str:
  """'stdlib' | 'folder' | 'jsonl' | 'json' | 'parquet' | 'file'; UserError if it is missing."""
  if source == 'stdlib':
    return 'stdlib'
  path = _path(source)
  if not path.exists():
    raise UserError(f"data source '{source}' does not exist; set data.source to 'stdlib', "
                    'a text file, a folder, a .jsonl or a .parquet file')
  if path.is_dir():
    return 'folder'
  suffix = path.suffix.lower()
  return suffix[1:] if suffix in _RECORD_SUFFIXES else 'file'


def source_name(source: str) -> str:
  """A short, filesystem-safe name for the source (used in the cache directory name)."""
  raw = 'stdlib' if source == 'stdlib' else _path(source).resolve().stem
  safe = ''.join(ch if ch.isalnum() or ch in '-_.' else '_' for ch in raw)
  return safe.strip('.') or 'corpus'


def source_fingerprint(source: str) -> str:
  """A cheap hash that changes when the source's files change (sizes, mtimes, names).

  stdlib: python version, file count and total size. Files and folders: the sorted
  (relative path, size, mtime_ns) of every file read.
  """
  if source_kind(source) == 'stdlib':
    files = stdlib_files()
    total = sum(_stat(stdlib_root() / name).st_size for name in files)
    key = f'stdlib|{sys.version}|{len(files)}|{total}'
  else:
    path = _path(source)
    root, names = (path, folder_files(path)) if path.is_dir() else (path.parent, [path.name])
    entries = [(name, (st := _stat(root / name)).st_size, st.st_mtime_ns) for name in names]
    key = json.dumps(entries)
  return hashlib.sha256(key.encode()).hexdigest()[:16]


def stdlib_root() -> Path:
  return Path(sysconfig.get_paths()['stdlib'])


def stdlib_files() -> list[str]:
  """Sorted relative paths of the standard library's .py files (no site-/dist-packages)."""
  root = stdlib_root()
  names = []
  for folder, subfolders, files in os.walk(root):
    subfolders[:] = [d for d in subfolders if d not in _SKIPPED_STDLIB_DIRS]
    rel = Path(folder).relative_to(root)
    names.extend((rel / f).as_posix() for f in files if f.endswith('.py'))
  return sorted(names)


def folder_files(folder: Path) -> list[str]:
  """Sorted relative paths of the text-like files below `folder`, hidden paths skipped."""
  names = []
  for parent, subfolders, files in os.walk(folder):
    subfolders[:] = [d for d in subfolders if not d.startswith('.')]
    rel = Path(parent).relative_to(folder)
    names.extend((rel / f).as_posix() for f in files
                 if not f.startswith('.') and Path(f).suffix.lower() in TEXT_EXTENSIONS)
  return sorted(names)


def _iter_files(root: Path, names: list[str]) -> Iterator[Document]:
  for name in names:
    try:
      text = _read_bytes(root / name).decode('utf-8')
    except UnicodeDecodeError:
      continue
    if text:
      yield name, text


def _iter_single_file(path: Path) -> Iterator[Document]:
  try:
    text = _read_bytes(path).decode('utf-8')
  except UnicodeDecodeError as e:
    raise UserError(f'{path} is not UTF-8 text ({e.reason} at byte {e.start}); '
                    'convert it to UTF-8 or choose another data.source') from None
  if text:
    yield path.name, text


def _iter_json_lines(path: Path, text_field: str) -> Iterator[Document]:
  with _open_text(path) as lines:
    for line_number, line in enumerate(_decoded_lines(lines, path), start=1):
      if line.strip():
        where = f'{path.name}:{line_number}'
        yield from _record_document(where, _parse_json(line, where), text_field)


def _iter_json(path: Path, text_field: str) -> Iterator[Document]:
  try:
    records = json.loads(_read_bytes(path))
  except (json.JSONDecodeError, UnicodeDecodeError):
    yield from _iter_json_lines(path, text_field)  # JSON Lines under a .json name
    return
  if isinstance(records, dict):
    records = [records]
  if not isinstance(records, list):
    raise UserError(f'{path} holds a JSON {type(records).__name__}, not records; '
                    'use a JSON array of records or JSON Lines')
  for index, record in enumerate(records):
    yield from _record_document(f'{path.name}:{index}', record, text_field)


def _iter_parquet(path: Path, text_field: str) -> Iterator[Document]:
  import pyarrow as pa
  import pyarrow.parquet as pq
  try:
    parquet = pq.ParquetFile(path)
    columns = parquet.schema_arrow.names
    if text_field not in columns:
      raise UserError(f'{path} has no column {text_field!r} (columns: {", ".join(columns)}); '
                      'set data.text_field to the column that holds the text')
    row = 0
    for batch in parquet.iter_batches(columns=[text_field], batch_size=4096):
      for value in batch.column(0).to_pylist():
        name = f'{path.name}:{row}'
        row += 1
        yield from _record_document(name, {text_field: value}, text_field, allow_null=True)
  except (pa.ArrowException, OSError) as e:
    raise UserError(f'cannot read {path} as Parquet ({_one_line(e)}); check the file') from None


def _record_document(where: str, record: object, text_field: str,
                     allow_null: bool = False) -> Iterator[Document]:
  if not isinstance(record, dict) or text_field not in record:
    fields = ', '.join(record) if isinstance(record, dict) else type(record).__name__
    raise UserError(f'record {where} has no field {text_field!r} (it has: {fields}); '
                    'set data.text_field to the field that holds the text')
  text = record[text_field]
  if text is None and allow_null:
    return
  if not isinstance(text, str):
    raise UserError(f'record {where}: field {text_field!r} is a {type(text).__name__}, '
                    'not a string; set data.text_field to a text field')
  if text:
    yield where, text


def _parse_json(line: str, where: str) -> object:
  try:
    return json.loads(line)
  except json.JSONDecodeError as e:
    raise UserError(f'{where} is not valid JSON ({e.msg}); fix the line or remove it') from None


def _decoded_lines(lines: Iterator[str], path: Path) -> Iterator[str]:
  try:
    yield from lines
  except UnicodeDecodeError:
    raise UserError(f'{path} is not UTF-8 text; convert it to UTF-8') from None


def _checked_not_empty(documents: Iterator[Document], source: str) -> Iterator[Document]:
  any_document = False
  for document in documents:
    any_document = True
    yield document
  if not any_document:
    raise UserError(f"data source '{source}' holds no text (no non-empty UTF-8 documents"
                    f'{"" if source == "stdlib" else ", text-like extensions: .txt .md .py ..."}); '
                    'point data.source at a corpus with text in it')


def _path(source: str) -> Path:
  return Path(source).expanduser()


def _read_bytes(path: Path) -> bytes:
  try:
    return path.read_bytes()
  except OSError as e:
    raise UserError(f'cannot read {path} ({e.strerror}); check that it exists and is readable'
                    ) from None


def _open_text(path: Path):
  try:
    return path.open('r', encoding='utf-8', newline='')
  except OSError as e:
    raise UserError(f'cannot read {path} ({e.strerror}); check that it exists and is readable'
                    ) from None


def _stat(path: Path) -> os.stat_result:
  try:
    return path.stat()
  except OSError as e:
    raise UserError(f'cannot read {path} ({e.strerror}); check that it exists') from None


def _one_line(error: Exception) -> str:
  return ' '.join(str(error).split())[:200]
