"""The train / validation split: which documents are held out, decided by their names alone.

A document goes to validation when the hash of its name, read as a number u in [0, 1), is below
`validation_fraction`; so the split does not depend on document order, on the tokenizer or on
the machine, and adding documents never moves old ones. Two guarantees on top, for small corpora:
the document with the smallest u is always held out and the one with the largest u always trains
(so both splits are non-empty when there are >= 2 documents). A corpus of one document (a single
text file) is instead cut in two at a line boundary: its last `validation_fraction` is held out.
"""

import hashlib
from typing import Iterator

from data.sources import Document
from errors import UserError


def name_hash_fraction(name: str) -> float:
  """The document name's hash as a number in [0, 1) (first 8 bytes of SHA-256)."""
  digest = hashlib.sha256(name.encode('utf-8')).digest()
  return int.from_bytes(digest[:8], 'big') / 2.0**64


def validation_names(names: list[str], fraction: float) -> set[str]:
  """The names held out for validation; see the module doc for the rule."""
  check_fraction(fraction)
  if len(names) < 2:
    return set()
  by_hash = sorted(names, key=name_hash_fraction)
  held_out = {name for name in by_hash if name_hash_fraction(name) < fraction}
  held_out.add(by_hash[0])
  held_out.discard(by_hash[-1])
  return held_out


def check_fraction(fraction: float) -> None:
  if not 0.0 < fraction < 1.0:
    raise UserError(f'data.validation_fraction={fraction} must be between 0 and 1 '
                    '(exclusive), e.g. 0.02')


def iter_split(documents: Iterator[Document], split: str, held_out: set[str],
               single_document: bool, fraction: float) -> Iterator[Document]:
  """The documents of one split ('train' or 'validation') from the stream of all documents."""
  for name, text in documents:
    if single_document:
      train_text, validation_text = cut_document(text, fraction)
      yield name, train_text if split == 'train' else validation_text
    elif (name in held_out) == (split == 'validation'):
      yield name, text


def cut_document(text: str, fraction: float) -> tuple[str, str]:
  """Splits one text into (train, validation) at the line break nearest the cut point."""
  if len(text) < 2:
    raise UserError('the corpus is a single document of one character; a validation split '
                    'needs more text: use a larger file, a folder or JSON Lines')
  target = min(max(1, round(len(text) * (1.0 - fraction))), len(text) - 1)
  before, after = text.rfind('\n', 0, target), text.find('\n', target)
  max_shift = max(1, int(len(text) * fraction / 2))  # keep the held-out share near `fraction`
  candidates = [i + 1 for i in (before, after)
                if 0 <= i < len(text) - 1 and abs(i + 1 - target) <= max_shift]
  cut = min(candidates, key=lambda i: abs(i - target), default=target)
  return text[:cut], text[cut:]
