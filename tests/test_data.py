"""Tests of data/: sources, tokenizers, the split, preparation and the deterministic loader."""

import importlib
import itertools
import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from configs.base import get_config
from data.loader import eval_batches, open_split, train_batch, window_starts
from data.manifest import unigram_bits_per_byte
from data.prepare import describe, load_manifest, prepare
from data.sources import iter_documents, source_fingerprint, stdlib_files
from data.split import cut_document, validation_names
from data.tokenizers import ByteTokenizer, HFTokenizer, load_tokenizer, train_bpe
from errors import UserError

prepare_module = importlib.import_module('data.prepare')

TRICKY = ('def f(x):\n    if x:\n\t\treturn  x  \n\n\n    return None\r\n'
          'héllo wörld — 日本語 🎉 \u00a0\u2028 end\n\n   \n')


def write_corpus(folder: Path, count: int = 12) -> Path:
  """A small folder corpus: `count` Python-ish documents, plus files that must be ignored."""
  (folder / 'sub').mkdir(parents=True)
  for i in range(count):
    body = f'# document {i}\ndef function_{i}(value):\n    return value * {i}\n' * (3 + i % 4)
    (folder / ('sub' if i % 2 else '.') / f'doc_{i:02d}.py').write_text(body + TRICKY)
  (folder / 'image.png').write_bytes(b'\x89PNG\x00\xff')
  (folder / '.hidden.txt').write_text('not read')
  (folder / 'latin1.txt').write_bytes('caf\xe9'.encode('latin-1'))
  return folder


def data_config(tmp_path: Path, source: Path | str, **overrides):
  config = get_config().data
  config.source = str(source)
  config.cache_dir = str(tmp_path / 'cache')
  config.validation_fraction = 0.2
  for key, value in overrides.items():
    setattr(config, key, value)
  return config


@pytest.fixture(scope='module')
def small_bpe() -> HFTokenizer:
  texts = [TRICKY * 3, 'import os\nimport sys\n\nclass A:\n    pass\n' * 20]
  return train_bpe(texts, vocab_size=300)


# --- tokenizers ---

def test_byte_tokenizer_round_trip():
  tokenizer = ByteTokenizer()
  ids = tokenizer.encode(TRICKY)
  assert ids.max() < 256 and tokenizer.eot_id is None
  assert tokenizer.decode(ids) == TRICKY
  assert tokenizer.decode([104, 105, 300, -1, 0xC3]) == 'hi\ufffd\ufffd\ufffd'
  assert tokenizer.decode(iter(ids)) == tokenizer.decode(ids.tolist()) == TRICKY


def test_bpe_round_trip_and_reload(small_bpe, tmp_path):
  assert small_bpe.vocab_size == 300 and small_bpe.eot_id is not None
  for text in [TRICKY, '', ' ', '\t\t\n', 'unseen: Ωμέγα ∑ 🧪\n  x', TRICKY * 2]:
    assert small_bpe.decode(small_bpe.encode(text)) == text
  assert len(small_bpe.encode(TRICKY)) < len(TRICKY.encode())
  small_bpe.save(tmp_path / 'tokenizer.json')
  loaded = load_tokenizer(str(tmp_path / 'tokenizer.json'))
  assert np.array_equal(loaded.encode(TRICKY), small_bpe.encode(TRICKY))
  assert [list(ids) for ids in loaded.encode_batch(['a b', TRICKY])] == [
      list(small_bpe.encode('a b')), list(small_bpe.encode(TRICKY))]
  assert load_tokenizer('bpe', tmp_path).name == 'bpe-300'


def test_tokenizer_errors(tmp_path):
  with pytest.raises(UserError, match='does not exist'):
    load_tokenizer(str(tmp_path / 'missing.json'))
  with pytest.raises(UserError, match='prepare the corpus'):
    load_tokenizer('bpe', tmp_path)
  with pytest.raises(UserError, match='at least 257'):
    train_bpe(['abc'], vocab_size=100)


# --- sources ---

def test_text_file_source(tmp_path):
  path = tmp_path / 'book.txt'
  path.write_text(TRICKY)
  assert list(iter_documents(str(path), 'text')) == [('book.txt', TRICKY)]


def test_folder_source_is_sorted_and_skips_non_text(tmp_path):
  folder = write_corpus(tmp_path / 'corpus', count=4)
  names = [name for name, _ in iter_documents(str(folder), 'text')]
  assert names == ['doc_00.py', 'doc_02.py', 'sub/doc_01.py', 'sub/doc_03.py']


def test_jsonl_and_json_sources(tmp_path):
  path = tmp_path / 'records.jsonl'
  path.write_text('{"text": "one", "id": 1}\n\n{"text": "two\\n  indented"}\n{"text": ""}\n')
  assert list(iter_documents(str(path), 'text')) == [
      ('records.jsonl:1', 'one'), ('records.jsonl:3', 'two\n  indented')]
  array = tmp_path / 'records.json'
  array.write_text(json.dumps([{'body': 'a'}, {'body': 'b'}]))
  assert list(iter_documents(str(array), 'body')) == [('records.json:0', 'a'),
                                                      ('records.json:1', 'b')]


def test_parquet_source(tmp_path):
  path = tmp_path / 'table.parquet'
  pq.write_table(pa.table({'content': ['alpha', None, TRICKY], 'n': [1, 2, 3]}), path)
  assert list(iter_documents(str(path), 'content')) == [('table.parquet:0', 'alpha'),
                                                        ('table.parquet:2', TRICKY)]
  with pytest.raises(UserError, match="no column 'text'.*data.text_field"):
    list(iter_documents(str(path), 'text'))


def test_stdlib_source_lists_many_files_lazily():
  files = stdlib_files()
  assert len(files) > 1000 and files == sorted(files)
  assert not any('site-packages' in name or 'dist-packages' in name for name in files)
  first = list(itertools.islice(iter_documents('stdlib', 'text'), 3))
  assert [name for name, _ in first] == sorted(name for name, _ in first)
  assert all(name.endswith('.py') and text for name, text in first)


def test_fingerprint_changes_with_content(tmp_path):
  folder = write_corpus(tmp_path / 'corpus', count=3)
  before = source_fingerprint(str(folder))
  assert source_fingerprint(str(folder)) == before
  (folder / 'new.md').write_text('more text')
  assert source_fingerprint(str(folder)) != before
  assert len(source_fingerprint('stdlib')) == 16


def test_source_errors(tmp_path):
  with pytest.raises(UserError, match='does not exist.*data.source'):
    list(iter_documents(str(tmp_path / 'nowhere'), 'text'))
  (tmp_path / 'empty').mkdir()
  (tmp_path / 'empty' / 'blank.txt').write_text('')
  with pytest.raises(UserError, match='holds no text'):
    list(iter_documents(str(tmp_path / 'empty'), 'text'))
  path = tmp_path / 'records.jsonl'
  path.write_text('{"text": "ok"}\n{"body": "no text field"}\n')
  with pytest.raises(UserError, match=r"records.jsonl:2 has no field 'text'.*\bbody\b"):
    list(iter_documents(str(path), 'text'))
  path.write_text('{"text": "ok"\n')
  with pytest.raises(UserError, match='records.jsonl:1 is not valid JSON'):
    list(iter_documents(str(path), 'text'))


# --- split ---

def test_split_is_deterministic_disjoint_and_non_empty():
  names = [f'file_{i}.py' for i in range(500)]
  held_out = validation_names(names, 0.1)
  assert held_out == validation_names(list(reversed(names)), 0.1)
  assert 20 < len(held_out) < 80 and held_out < set(names)
  assert len(validation_names(['a.py', 'b.py'], 0.01)) == 1
  assert len(validation_names(['a.py', 'b.py'], 0.99)) == 1
  with pytest.raises(UserError, match='validation_fraction'):
    validation_names(names, 0.0)


def test_single_document_is_cut_at_a_line():
  text = ''.join(f'line {i}\n' for i in range(100))
  train, validation = cut_document(text, 0.1)
  assert train + validation == text and train.endswith('\n')
  assert 0.05 < len(validation) / len(text) < 0.15


# --- prepare ---

def documents_of_split(config, split: str) -> list[str]:
  documents = list(iter_documents(config.source, config.text_field))
  held_out = validation_names([name for name, _ in documents], config.validation_fraction)
  return [text for name, text in documents if (name in held_out) == (split == 'validation')]


@pytest.mark.parametrize('tokenizer', ['bytes', 'bpe'])
def test_prepare_round_trip(tmp_path, tokenizer):
  config = data_config(tmp_path, write_corpus(tmp_path / 'corpus'), tokenizer=tokenizer,
                       bpe_vocab_size=320)
  corpus_dir = prepare(config)
  manifest = load_manifest(corpus_dir)
  loaded = load_tokenizer(tokenizer, corpus_dir)
  separator = '' if loaded.eot_id is None else '<|endoftext|>'
  assert manifest['vocab_size'] == loaded.vocab_size == (256 if tokenizer == 'bytes' else 320)
  for split in ('train', 'validation'):
    tokens, counts, texts = open_split(corpus_dir, split), manifest['splits'][split], \
        documents_of_split(config, split)
    assert tokens.dtype == np.uint16 and len(tokens) == counts['tokens']
    assert counts['documents'] == len(texts) > 0
    assert counts['bytes'] == sum(len(text.encode()) for text in texts)
    assert loaded.decode(tokens) == separator.join(texts)
  assert 0 < manifest['unigram_bits_per_byte'] < 8
  assert manifest['fingerprint'] == corpus_dir.name
  assert f"{manifest['splits']['train']['tokens']:,} tokens" in describe(manifest)
  assert [p.name for p in (tmp_path / 'cache').iterdir()] == [corpus_dir.name]


def test_prepare_reuses_a_complete_corpus(tmp_path, monkeypatch):
  config = data_config(tmp_path, write_corpus(tmp_path / 'corpus', count=4))
  corpus_dir = prepare(config)
  written = os.stat(corpus_dir / 'manifest.json').st_mtime_ns

  def must_not_build(*args, **kwargs):
    raise AssertionError('prepare() rebuilt a cached corpus')

  monkeypatch.setattr(prepare_module, '_build', must_not_build)
  assert prepare(config) == corpus_dir
  assert os.stat(corpus_dir / 'manifest.json').st_mtime_ns == written
  config.validation_fraction = 0.3
  with pytest.raises(AssertionError, match='rebuilt'):
    prepare(config)  # another setting is another corpus


def test_interrupted_prepare_leaves_no_corpus(tmp_path, monkeypatch):
  config = data_config(tmp_path, write_corpus(tmp_path / 'corpus', count=4))

  def fail(*args, **kwargs):
    raise KeyboardInterrupt

  monkeypatch.setattr(prepare_module, '_write_split', fail)
  with pytest.raises(KeyboardInterrupt):
    prepare(config)
  assert list((tmp_path / 'cache').iterdir()) == []


def test_prepare_with_a_user_tokenizer_file(tmp_path, small_bpe):
  small_bpe.save(tmp_path / 'mine.json')
  config = data_config(tmp_path, write_corpus(tmp_path / 'corpus', count=4),
                       tokenizer=str(tmp_path / 'mine.json'))
  corpus_dir = prepare(config)
  manifest = load_manifest(corpus_dir)
  assert manifest['tokenizer_name'] == 'mine-300' and manifest['eot_id'] == small_bpe.eot_id
  assert (corpus_dir / 'tokenizer.json').is_file()
  tokens = open_split(corpus_dir, 'validation')
  assert small_bpe.decode(tokens) == '<|endoftext|>'.join(documents_of_split(config, 'validation'))
  (tmp_path / 'mine.json').write_text((tmp_path / 'mine.json').read_text() + '\n')
  assert prepare_module.corpus_path(config) != corpus_dir  # another tokenizer file


def test_prepare_single_text_file(tmp_path):
  path = tmp_path / 'book.txt'
  path.write_text(''.join(f'verse {i}: so it goes\n' for i in range(200)))
  manifest = load_manifest(prepare(data_config(tmp_path, path)))
  counts = manifest['splits']
  assert counts['train']['bytes'] + counts['validation']['bytes'] == path.stat().st_size
  assert counts['validation']['documents'] == 1


def test_prepare_errors(tmp_path):
  with pytest.raises(UserError, match='does not exist'):
    prepare(data_config(tmp_path, tmp_path / 'missing'))
  (tmp_path / 'empty').mkdir()
  with pytest.raises(UserError, match='holds no text'):
    prepare(data_config(tmp_path, tmp_path / 'empty'))
  with pytest.raises(UserError, match='tokenizer file .* does not exist'):
    prepare(data_config(tmp_path, 'stdlib', tokenizer=str(tmp_path / 'tok.json')))
  with pytest.raises(UserError, match='not a prepared corpus'):
    load_manifest(tmp_path)


def test_unigram_bits_per_byte():
  # Train counts [1, 1] + add-one: p = 2/4 for each token, so one bit per token.
  assert unigram_bits_per_byte(np.array([1, 1]), np.array([2, 2]), 4) == pytest.approx(1.0)
  assert unigram_bits_per_byte(np.array([1, 1]), np.array([2, 2]), 8) == pytest.approx(0.5)


# --- loader ---

TOKENS = np.arange(10_000, dtype=np.uint16) % 4096


def test_window_starts_are_a_pure_function_of_seed_and_step():
  starts = window_starts(seed=3, step=7, global_batch=64, n_tokens=1000, seq_len=100)
  assert starts.dtype == np.int64 and starts.shape == (64,)
  assert starts.min() >= 0 and starts.max() <= 1000 - 100 - 1
  assert np.array_equal(starts, window_starts(3, 7, 64, 1000, 100))
  assert not np.array_equal(starts, window_starts(3, 8, 64, 1000, 100))
  assert not np.array_equal(starts, window_starts(4, 7, 64, 1000, 100))
  assert window_starts(0, 0, 50, 12, 10).max() == 1  # both ends reachable
  assert window_starts(0, 0, 50, 12, 10).min() == 0


def test_train_batch_determinism_and_process_slices():
  batch = train_batch(TOKENS, seed=1, step=5, global_batch=8, seq_len=32)
  assert batch.dtype == np.int32 and batch.shape == (8, 33)
  assert np.array_equal(batch, train_batch(TOKENS, 1, 5, 8, 32))
  assert not np.array_equal(batch, train_batch(TOKENS, 1, 6, 8, 32))
  assert all(np.array_equal(row, TOKENS[row[0]:row[0] + 33]) for row in batch)
  for count in (2, 4):
    slices = [train_batch(TOKENS, 1, 5, 8, 32, index, count) for index in range(count)]
    assert np.array_equal(np.concatenate(slices), batch)


def test_eval_batches_are_fixed_and_spread(tmp_path):
  batches = list(eval_batches(TOKENS, num_batches=3, global_batch=4, seq_len=16))
  assert len(batches) == 3 and all(b.shape == (4, 17) for b in batches)
  again = list(eval_batches(TOKENS, 3, 4, 16))
  assert all(np.array_equal(a, b) for a, b in zip(batches, again))
  assert batches[0][0, 0] == 0 and batches[-1][-1, -1] == TOKENS[-1]
  halves = [list(eval_batches(TOKENS, 3, 4, 16, index, 2)) for index in range(2)]
  for k, batch in enumerate(batches):
    assert np.array_equal(np.concatenate([halves[0][k], halves[1][k]]), batch)


def test_loader_errors(tmp_path):
  with pytest.raises(UserError, match=r'sequence length 300 is longer than the data \(100 '
                                      r'tokens\); lower data.seq_len'):
    train_batch(TOKENS[:100], 0, 0, 4, 300)
  with pytest.raises(UserError, match='multiple of the process count'):
    train_batch(TOKENS, 0, 0, 6, 16, 0, 4)
  with pytest.raises(UserError, match='not a prepared corpus'):
    open_split(tmp_path, 'train')
