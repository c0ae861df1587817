"""The data of a classification run: a labelled JSON Lines / JSON / Parquet file, split, tokenized.

`load_labelled(config)` reads every record's text (`data.text_field`) and label
(`task.label_field`) from `data.source`, holds out records by the hash of their name
(`file:line` or `file:row`, data/split.py, `data.validation_fraction`), numbers the labels seen in
training in sorted order (labels are compared as strings), and tokenizes each text into one row
of `data.seq_len` tokens (longer texts are cut, shorter ones padded with -1) followed by its label
id: the int32 [N, L+1] rows that train/objectives.py's `classify` objective reads.

A record without the label (or text) field, an empty text, a label of the validation split that
no training record has, or fewer than two labels are one-line `UserError`s naming the record.
Training batches are drawn with replacement by a Philox generator keyed on (seed, step), as the
token loader does; evaluation covers every validation record once (the last batch padded with
rows of label -1, which weigh nothing).
"""

import dataclasses
import json
from typing import Iterator

import numpy as np

from data.prepare import prepare
from data.sources import source_kind
from data.split import validation_names
from data.tokenizers import Tokenizer, load_tokenizer
from errors import UserError
from storage import as_path

PAD_ID = -1  # padding in the packed rows; never a token


@dataclasses.dataclass
class LabelledSet:
  labels: list[str]  # class names; a label's id is its index
  tokenizer: Tokenizer
  train_rows: np.ndarray  # int32 [N, seq_len + 1]: tokens padded with -1, then the label id
  validation_rows: np.ndarray


def read_records(source: str, text_field: str, label_field: str) -> Iterator[tuple]:
  """(name, text, label as a string) of every record of a labelled file, in file order."""
  kind = source_kind(source)
  if kind not in ('jsonl', 'json', 'parquet'):
    raise UserError(f"data.source '{source}' is not a labelled file; classification reads "
                    'JSON Lines (.jsonl), JSON (.json) or Parquet (.parquet) records')
  records = _parquet_records(source, text_field, label_field) if kind == 'parquet' else \
      _json_records(source, kind)
  for name, record in records:
    for field, what in ((text_field, 'data.text_field'), (label_field, 'task.label_field')):
      if not isinstance(record, dict) or field not in record or record[field] is None:
        fields = ', '.join(record) if isinstance(record, dict) else type(record).__name__
        raise UserError(f'record {name} has no field {field!r} (it has: {fields}); set {what} '
                        'to the field that holds it, or fix the record')
    text = record[text_field]
    if not isinstance(text, str):
      raise UserError(f'record {name}: field {text_field!r} is a {type(text).__name__}, not a '
                      'string; set data.text_field to the text field')
    if not text.strip():
      raise UserError(f'record {name} has an empty text; remove the record or give it a text')
    yield name, text, str(record[label_field])


def _json_records(source: str, kind: str):
  path = as_path(source)
  if kind == 'json':
    try:
      records = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
      records = None
    if isinstance(records, list):
      yield from ((f'{path.name}:{index}', record) for index, record in enumerate(records))
      return
  with path.open('r') as lines:
    for number, line in enumerate(lines, start=1):
      if line.strip():
        try:
          yield f'{path.name}:{number}', json.loads(line)
        except json.JSONDecodeError as e:
          raise UserError(f'{path.name}:{number} is not valid JSON ({e.msg}); fix the line or '
                          'remove it') from None


def _parquet_records(source: str, text_field: str, label_field: str):
  import pyarrow.parquet as pq  # pylint: disable=import-outside-toplevel
  path = as_path(source)
  table = pq.read_table(str(path))
  columns = [c for c in (text_field, label_field) if c in table.column_names]
  rows = table.select(columns).to_pylist()
  yield from ((f'{path.name}:{index}', row) for index, row in enumerate(rows))


def classify_tokenizer(config) -> Tokenizer:
  """bytes, a tokenizer.json path, or 'bpe' trained on the labelled texts (data/prepare.py)."""
  spec = config.data.tokenizer
  return load_tokenizer(spec, prepare(config.data) if spec == 'bpe' else None)


def pack_rows(token_lists: list[np.ndarray], label_ids: list[int], seq_len: int) -> np.ndarray:
  """int32 [N, seq_len + 1]: each text's first seq_len tokens, padded with -1, then its label."""
  rows = np.full((len(token_lists), seq_len + 1), PAD_ID, np.int32)
  for row, (tokens, label) in enumerate(zip(token_lists, label_ids)):
    tokens = np.asarray(tokens, np.int32)[:seq_len]
    rows[row, :tokens.size] = tokens
    rows[row, -1] = label
  return rows


def load_labelled(config) -> LabelledSet:
  """The classification data of `config`, split, labelled and tokenized; see the module doc."""
  data, task = config.data, config.task
  records = list(read_records(data.source, data.text_field, task.label_field))
  held_out = validation_names([name for name, _, _ in records], data.validation_fraction)
  train = [r for r in records if r[0] not in held_out]
  validation = [r for r in records if r[0] in held_out]
  labels = sorted({label for _, _, label in train})
  if len(labels) < 2:
    raise UserError(f'{data.source} has {len(labels)} label(s) in its training split; a '
                    f'classifier needs at least two values of {task.label_field!r}')
  ids = {label: index for index, label in enumerate(labels)}
  for name, _, label in validation:
    if label not in ids:
      raise UserError(f'record {name} has label {label!r}, which no training record has '
                      f'(training labels: {", ".join(labels[:10])}); add training records with '
                      'it, or remove the record')
  tokenizer = classify_tokenizer(config)
  if tokenizer.vocab_size > config.model.vocab_size:
    raise UserError(f'the tokenizer has {tokenizer.vocab_size:,} tokens but model.vocab_size='
                    f'{config.model.vocab_size:,}; set --config.model.vocab_size='
                    f'{tokenizer.vocab_size} or more')

  def rows(split):
    tokens = tokenizer.encode_batch([text for _, text, _ in split])
    return pack_rows(tokens, [ids[label] for _, _, label in split], data.seq_len)

  return LabelledSet(labels=labels, tokenizer=tokenizer, train_rows=rows(train),
                     validation_rows=rows(validation))


def encode_texts(tokenizer: Tokenizer, texts: list[str], seq_len: int) -> np.ndarray:
  """Rows for texts without labels (label -1), for prediction; UserError on an empty text."""
  for index, text in enumerate(texts):
    if not isinstance(text, str) or not text.strip():
      raise UserError(f'text {index} is empty (or not a string); every text needs content')
  return pack_rows(tokenizer.encode_batch(list(texts)), [PAD_ID] * len(texts), seq_len)


def train_batch(rows: np.ndarray, seed: int, step: int, global_batch: int,
                process_index: int = 0, process_count: int = 1) -> np.ndarray:
  """This process's rows of step `step`'s batch, drawn with replacement keyed on (seed, step)."""
  key = np.array([seed % 2**64, step % 2**64], dtype=np.uint64)
  picks = np.random.Generator(np.random.Philox(key=key)).integers(0, len(rows), global_batch)
  per_process = global_batch // process_count
  return rows[picks[process_index * per_process:(process_index + 1) * per_process]]


def eval_batches(rows: np.ndarray, global_batch: int, process_index: int = 0,
                 process_count: int = 1) -> Iterator[np.ndarray]:
  """Every row once, in batches of global_batch (the last padded with label -1 rows)."""
  per_process = global_batch // process_count
  for first in range(0, len(rows), global_batch):
    batch = np.full((global_batch, rows.shape[1]), PAD_ID, np.int32)
    chunk = rows[first:first + global_batch]
    batch[:len(chunk)] = chunk
    yield batch[process_index * per_process:(process_index + 1) * per_process]
