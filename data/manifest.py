"""The manifest of a prepared corpus: reading it, describing it, and its unigram baseline.

`manifest.json` is written last into a prepared corpus directory (`data/prepare.py`); a directory
without a readable one is not a corpus. Fields:

  format_version, fingerprint, source, text_field, validation_fraction,
  tokenizer (the config spec), tokenizer_name, vocab_size, dtype ('uint16' | 'uint32'), eot_id,
  splits: {train | validation: {documents, tokens, bytes, sha256}}   bytes = UTF-8 bytes of text
  unigram_bits_per_byte, unigram_note, created (UTC, ISO 8601).
"""

import json

import numpy as np

from errors import UserError
from storage import as_path

FORMAT_VERSION = 1
MANIFEST_NAME = 'manifest.json'
SPLITS = ('train', 'validation')
UNIGRAM_NOTE = ('cross-entropy of the validation tokens under the train split unigram '
                'frequencies with add-one smoothing, in bits, divided by validation UTF-8 bytes')


def load_manifest(corpus_dir) -> dict:
  """The manifest of a prepared corpus (local or gs://); UserError if it is missing, corrupt
  or outdated."""
  path = as_path(corpus_dir) / MANIFEST_NAME
  fix = 'prepare the corpus again (python launch.py data)'
  try:
    manifest = json.loads(path.read_text())
  except FileNotFoundError:
    raise UserError(f'{corpus_dir} is not a prepared corpus (no {MANIFEST_NAME}); {fix}') from None
  except (OSError, ValueError) as e:
    raise UserError(f'{path} is unreadable or corrupt ({e}); delete it and {fix}') from None
  if not isinstance(manifest, dict) or manifest.get('format_version') != FORMAT_VERSION:
    raise UserError(f'{path} has another format version than {FORMAT_VERSION}; '
                    f'delete {corpus_dir} and {fix}')
  return manifest


def is_complete(corpus_dir) -> bool:
  try:
    load_manifest(corpus_dir)
    return True
  except UserError:
    return False


def describe(manifest: dict) -> str:
  """A few human-readable lines: source, tokenizer, tokens per split, bytes/token, baseline."""
  eot = 'none' if manifest['eot_id'] is None else manifest['eot_id']
  lines = [
      f"source: {manifest['source']}",
      f"tokenizer: {manifest['tokenizer_name']} (vocab {manifest['vocab_size']:,}, "
      f"end-of-text id {eot}, stored as {manifest['dtype']})",
  ]
  for split in SPLITS:
    counts = manifest['splits'][split]
    per_token = counts['bytes'] / max(counts['tokens'], 1)
    lines.append(f"{split}: {counts['tokens']:,} tokens, {counts['documents']:,} documents, "
                 f"{counts['bytes']:,} bytes ({per_token:.2f} bytes/token)")
  lines.append(f"unigram baseline: {manifest['unigram_bits_per_byte']:.3f} bits/byte "
               '(validation, train unigram frequencies)')
  return '\n'.join(lines)


def unigram_bits_per_byte(train_counts: np.ndarray, validation_counts: np.ndarray,
                          validation_bytes: int) -> float:
  """Validation bits per byte under the add-one smoothed train unigram (see UNIGRAM_NOTE)."""
  size = max(len(train_counts), len(validation_counts))
  train = np.pad(train_counts, (0, size - len(train_counts))).astype(np.float64)
  validation = np.pad(validation_counts, (0, size - len(validation_counts))).astype(np.float64)
  log2_probability = np.log2(train + 1.0) - np.log2(train.sum() + size)
  total_bits = -float(np.dot(validation, log2_probability))
  return total_bits / max(validation_bytes, 1)
