"""Corpus preparation: source -> split -> (BPE) -> token shards + manifest, cached by fingerprint.

`prepare(config.data)` returns `<cache_dir>/<source name>-<fingerprint>/` holding

  train.bin, validation.bin   the split's tokens, documents joined by the end-of-text id (when
                              the tokenizer has one), raw uint16 / uint32 (`np.memmap`-able);
  tokenizer.json              the trained BPE, or a copy of the user's tokenizer file;
  manifest.json               written last, see data/manifest.py.

The fingerprint hashes everything the shards depend on (the source's files, the tokenizer spec
and file, the BPE size, the split fraction, the text field, the format version), so a directory
with a manifest is reused as is. Work happens in a hidden temporary directory that is renamed
into place at the end: a killed preparation never leaves a corpus that looks complete, and
several processes preparing the same corpus at once are safe (the first rename wins).

`cache_dir` may be a bucket (gs://bucket/cache): the corpus is then built in a local temporary
directory and uploaded file by file, the manifest last, so a corpus without its manifest is
still not one; processes preparing it at once upload the same bytes. The loader reads a
bucket's shards through local copies (data/loader.py).
"""

import datetime
import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np
from etils import epath
from tqdm import tqdm

from data.manifest import (FORMAT_VERSION, MANIFEST_NAME, SPLITS, UNIGRAM_NOTE, describe,
                           is_complete, load_manifest, unigram_bits_per_byte)
from data.sources import Document, iter_documents, source_fingerprint, source_name
from data.split import check_fraction, iter_split, validation_names
from data.tokenizers import HFTokenizer, Tokenizer, load_tokenizer, train_bpe
from errors import UserError
from storage import as_path, file_sha256, is_remote, upload_folder

__all__ = ['prepare', 'corpus_path', 'load_manifest', 'describe', 'token_dtype']

_BATCH_CHARS = 4_000_000  # characters encoded per encode_batch call


def prepare(data_cfg, progress: bool = False) -> epath.Path:
  """The prepared corpus directory for `config.data`, building it unless already cached."""
  check_fraction(data_cfg.validation_fraction)
  corpus_dir = corpus_path(data_cfg)
  if is_complete(corpus_dir):
    return corpus_dir
  remote = is_remote(corpus_dir)
  if not remote:
    corpus_dir.parent.mkdir(parents=True, exist_ok=True)
  staging = Path(tempfile.mkdtemp(prefix=f'.{corpus_dir.name}.tmp-',
                                  dir=None if remote else corpus_dir.parent))
  try:
    _build(data_cfg, staging, corpus_dir.name, progress)
    if remote:
      upload_folder(staging, corpus_dir, last=MANIFEST_NAME)
      return corpus_dir
    return as_path(_publish(staging, Path(corpus_dir)))
  finally:
    shutil.rmtree(staging, ignore_errors=True)


def corpus_path(data_cfg) -> epath.Path:
  """`<cache_dir>/<source name>-<fingerprint>`; computing it reads no document."""
  key = {
      'format_version': FORMAT_VERSION,
      'source': source_fingerprint(data_cfg.source),
      'text_field': data_cfg.text_field,
      'validation_fraction': float(data_cfg.validation_fraction),
      'tokenizer': data_cfg.tokenizer,
  }
  if data_cfg.tokenizer == 'bpe':
    key['bpe_vocab_size'] = int(data_cfg.bpe_vocab_size)
  elif data_cfg.tokenizer != 'bytes':
    key['tokenizer_sha256'] = _file_sha256(as_path(data_cfg.tokenizer))
    key['special_prefix'] = True  # texts start with the post-processor's BOS (tokenizers.py)
  fingerprint = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
  return as_path(data_cfg.cache_dir) / f'{source_name(data_cfg.source)}-{fingerprint}'


def token_dtype(vocab_size: int) -> str:
  return 'uint16' if vocab_size <= 2**16 else 'uint32'


def _build(data_cfg, out_dir: Path, corpus_name: str, progress: bool) -> None:
  source, field, fraction = data_cfg.source, data_cfg.text_field, data_cfg.validation_fraction
  names = [name for name, _ in _bar(iter_documents(source, field), progress, 'reading source')]
  held_out = validation_names(names, fraction)
  single_document = len(names) == 1
  sizes = {'validation': 1 if single_document else len(held_out)}
  sizes['train'] = 1 if single_document else len(names) - len(held_out)

  def documents(split: str) -> Iterator[Document]:
    return iter_split(iter_documents(source, field), split, held_out, single_document, fraction)

  tokenizer = _make_tokenizer(data_cfg, documents('train'), sizes['train'], progress)
  if isinstance(tokenizer, HFTokenizer):
    tokenizer.save(out_dir / 'tokenizer.json')
  dtype = token_dtype(tokenizer.vocab_size)
  splits, unigrams = {}, {}
  for split in SPLITS:
    bar = _bar(documents(split), progress, f'tokenizing {split}', sizes[split])
    splits[split], unigrams[split] = _write_split(bar, tokenizer, out_dir / f'{split}.bin', dtype)
  manifest = _manifest(data_cfg, corpus_name, tokenizer, dtype, splits, unigrams)
  (out_dir / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + '\n')


def _manifest(data_cfg, fingerprint: str, tokenizer: Tokenizer, dtype: str, splits: dict,
              unigrams: dict) -> dict:
  return {
      'format_version': FORMAT_VERSION,
      'fingerprint': fingerprint,
      'source': data_cfg.source,
      'text_field': data_cfg.text_field,
      'validation_fraction': float(data_cfg.validation_fraction),
      'tokenizer': data_cfg.tokenizer,
      'tokenizer_name': tokenizer.name,
      'vocab_size': tokenizer.vocab_size,
      'dtype': dtype,
      'eot_id': tokenizer.eot_id,
      'splits': splits,
      'unigram_bits_per_byte': unigram_bits_per_byte(
          unigrams['train'], unigrams['validation'], splits['validation']['bytes']),
      'unigram_note': UNIGRAM_NOTE,
      'created': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
  }


def _make_tokenizer(data_cfg, train_documents: Iterator[Document], train_size: int,
                    progress: bool) -> Tokenizer:
  if data_cfg.tokenizer != 'bpe':
    return load_tokenizer(data_cfg.tokenizer)
  texts = (text for _, text in train_documents)
  return train_bpe(texts, int(data_cfg.bpe_vocab_size), progress=progress, length=train_size)


def _write_split(documents: Iterator[Document], tokenizer: Tokenizer, path: Path,
                 dtype: str) -> tuple[dict, np.ndarray]:
  """Tokenizes and writes one split; returns its manifest entry and its token counts."""
  digest = hashlib.sha256()
  unigram = np.zeros(tokenizer.vocab_size, dtype=np.int64)
  counts = {'documents': 0, 'tokens': 0, 'bytes': 0}
  separator = None if tokenizer.eot_id is None else np.array([tokenizer.eot_id], np.int32)
  with path.open('wb') as out:
    for texts in _batched_texts(documents):
      pieces = []
      for ids in tokenizer.encode_batch(texts):
        if separator is not None and (counts['documents'] or pieces):
          pieces.append(separator)
        pieces.append(ids)
      tokens = np.concatenate(pieces).astype(dtype)
      raw = tokens.tobytes()
      out.write(raw)
      digest.update(raw)
      unigram += np.bincount(tokens, minlength=len(unigram))[:len(unigram)]
      counts['documents'] += len(texts)
      counts['tokens'] += len(tokens)
      counts['bytes'] += sum(len(text.encode('utf-8')) for text in texts)
  return {**counts, 'sha256': digest.hexdigest()}, unigram


def _batched_texts(documents: Iterator[Document]) -> Iterator[list[str]]:
  batch, chars = [], 0
  for _, text in documents:
    batch.append(text)
    chars += len(text)
    if chars >= _BATCH_CHARS:
      yield batch
      batch, chars = [], 0
  if batch:
    yield batch


def _publish(staging: Path, corpus_dir: Path) -> Path:
  """Moves the finished staging directory into place (atomic rename)."""
  if corpus_dir.exists() and not is_complete(corpus_dir):
    shutil.rmtree(corpus_dir)  # an incomplete leftover, not written by prepare()
  try:
    os.rename(staging, corpus_dir)
  except OSError:
    if not is_complete(corpus_dir):  # else another process finished the same corpus first
      raise
  return corpus_dir


def _file_sha256(path: epath.Path) -> str:
  if not path.is_file():
    raise UserError(f'tokenizer file {path} does not exist; set data.tokenizer to bytes, bpe '
                    'or the path of a tokenizer.json')
  return file_sha256(path)


def _bar(items, progress: bool, description: str, total: int | None = None):
  return tqdm(items, desc=description, total=total, unit='doc', file=sys.stderr,
              disable=not progress, dynamic_ncols=True)
