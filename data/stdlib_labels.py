"""A labelled set on every machine: which standard-library package a source file belongs to.

    python -m data.stdlib_labels --out data_cache/stdlib_packages.jsonl

writes one JSON Lines record per .py file of the running interpreter's standard library that
lies in one of `--packages` (test files included, empty files skipped), `{"text": <the file>,
"label": <its top-level package>, "path": <relative path>}`, at most `--max_per_label` files per
package (the first in sorted order), so no class swamps the others. It is the labelled file of
configs/classify_stdlib.py, the README's classification example; no download is needed.
"""

import argparse
import json
import sys
from pathlib import Path

from data.sources import stdlib_files, stdlib_root
from errors import EXIT_USER_ERROR, UserError

# Packages with 20+ files in CPython 3.10 to 3.13.
DEFAULT_PACKAGES = ('asyncio', 'ctypes', 'email', 'encodings', 'idlelib', 'importlib',
                    'multiprocessing', 'tkinter', 'unittest', 'xml')


def labelled_records(packages, max_per_label: int) -> list[dict]:
  """The records, sorted by path; UserError if a package has no files here."""
  counts = {package: 0 for package in packages}
  records = []
  for name in stdlib_files():
    package = name.split('/')[0]
    if '/' not in name or package not in counts or counts[package] >= max_per_label:
      continue
    try:
      text = (stdlib_root() / name).read_text(encoding='utf-8')
    except (OSError, UnicodeDecodeError):
      continue
    if text.strip():
      counts[package] += 1
      records.append({'text': text, 'label': package, 'path': name})
  missing = [package for package, count in counts.items() if not count]
  if missing:
    raise UserError(f'this Python ({sys.version.split()[0]}) has no standard-library package '
                    f'{missing[0]!r}; leave it out of --packages')
  return records


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog='python -m data.stdlib_labels', description=__doc__
                                   .strip().splitlines()[0])
  parser.add_argument('--out', required=True, help='the JSON Lines file to write')
  parser.add_argument('--packages', default=','.join(DEFAULT_PACKAGES),
                      help='comma-separated top-level packages, the labels (default: %(default)s)')
  parser.add_argument('--max_per_label', type=int, default=40,
                      help='most files per package (default: %(default)s)')
  args = parser.parse_args(argv)
  try:
    packages = [p.strip() for p in args.packages.split(',') if p.strip()]
    if len(packages) < 2 or args.max_per_label < 1:
      raise UserError('pass at least two --packages and a positive --max_per_label')
    records = labelled_records(packages, args.max_per_label)
  except UserError as e:
    print(f'error: {e}', file=sys.stderr)
    return EXIT_USER_ERROR
  out = Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(''.join(json.dumps(record) + '\n' for record in records))
  counts = {p: sum(r['label'] == p for r in records) for p in packages}
  print(f'wrote {len(records)} records to {out}: ' +
        ', '.join(f'{p} {n}' for p, n in counts.items()))
  return 0


if __name__ == '__main__':
  sys.exit(main())
