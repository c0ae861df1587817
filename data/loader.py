"""The deterministic batch loader: what step N trains on is a pure function of (seed, step).

Training windows start at offsets drawn by a counter-based RNG (Philox) keyed on (seed, step)
alone, uniformly over the split, with replacement. Nothing is carried from step to step, so
resuming needs no iterator state, and a different number of processes only changes which
contiguous rows of the same global batch each process takes. Evaluation uses a fixed set of
windows spread evenly over the validation split, the same on every call.

Each row holds seq_len + 1 tokens; the training loop uses row[:-1] as inputs, row[1:] as targets.

A corpus in a bucket (gs://) is not memory-mapped in place: each split is first copied to
`mirror_dir` on local disk, checked against the manifest's SHA-256, and reused by later runs
(storage.local_copy), so reading a batch never waits on the network.
"""

from typing import Iterator

import numpy as np

from data.manifest import SPLITS, load_manifest
from errors import UserError
from storage import as_path, local_copy


def open_split(corpus_dir, split: str, mirror_dir='data_mirror') -> np.ndarray:
  """The tokens of a prepared split, as a read-only np.memmap of the manifest's dtype; a split
  in a bucket is memory-mapped from its local copy under `mirror_dir`."""
  if split not in SPLITS:
    raise ValueError(f'split must be one of {SPLITS}, got {split!r}')
  manifest = load_manifest(corpus_dir)
  path = as_path(corpus_dir) / f'{split}.bin'
  if not path.is_file():
    raise UserError(f'{path} is missing; delete {corpus_dir} and prepare the corpus again')
  if path.stat().length == 0:
    return np.zeros(0, dtype=manifest['dtype'])
  try:
    local = local_copy(path, mirror_dir, manifest['splits'][split]['sha256'])
  except ValueError as e:
    raise UserError(f'{e}; delete {corpus_dir} and prepare the corpus again') from None
  return np.memmap(local, dtype=manifest['dtype'], mode='r')


def window_starts(seed: int, step: int, global_batch: int, n_tokens: int,
                  seq_len: int) -> np.ndarray:
  """global_batch window offsets in [0, n_tokens - seq_len - 1], a function of these alone."""
  highest_start = n_tokens - seq_len - 1
  if highest_start < 0:
    check_long_enough(n_tokens, seq_len)
  key = np.array([seed % 2**64, step % 2**64], dtype=np.uint64)
  generator = np.random.Generator(np.random.Philox(key=key))
  return generator.integers(0, highest_start, size=global_batch, dtype=np.int64, endpoint=True)


def train_batch(tokens: np.ndarray, seed: int, step: int, global_batch: int, seq_len: int,
                process_index: int = 0, process_count: int = 1) -> np.ndarray:
  """This process's rows of the global batch of `step`: int32 [global_batch // P, seq_len + 1]."""
  _check_batch(len(tokens), global_batch, seq_len, process_index, process_count)
  starts = window_starts(seed, step, global_batch, len(tokens), seq_len)
  return _gather(tokens, _process_rows(starts, process_index, process_count), seq_len)


def eval_batches(tokens: np.ndarray, num_batches: int, global_batch: int, seq_len: int,
                 process_index: int = 0, process_count: int = 1) -> Iterator[np.ndarray]:
  """num_batches fixed batches of windows spread evenly over `tokens`; shapes as train_batch."""
  _check_batch(len(tokens), global_batch, seq_len, process_index, process_count)
  starts = evenly_spread_starts(num_batches * global_batch, len(tokens), seq_len)
  for batch_starts in starts.reshape(num_batches, global_batch):
    yield _gather(tokens, _process_rows(batch_starts, process_index, process_count), seq_len)


def evenly_spread_starts(count: int, n_tokens: int, seq_len: int) -> np.ndarray:
  """`count` window offsets from 0 to the last possible one, evenly spaced (may overlap)."""
  highest_start = n_tokens - seq_len - 1
  return np.round(np.linspace(0, highest_start, count)).astype(np.int64)


def _process_rows(starts: np.ndarray, process_index: int, process_count: int) -> np.ndarray:
  rows = len(starts) // process_count
  return starts[process_index * rows:(process_index + 1) * rows]


def _gather(tokens: np.ndarray, starts: np.ndarray, seq_len: int) -> np.ndarray:
  offsets = starts[:, None] + np.arange(seq_len + 1, dtype=np.int64)[None, :]
  return np.asarray(tokens[offsets], dtype=np.int32)


def _check_batch(n_tokens: int, global_batch: int, seq_len: int, process_index: int,
                 process_count: int) -> None:
  if global_batch < 1 or seq_len < 1:
    raise UserError(f'batch size ({global_batch}) and data.seq_len ({seq_len}) must be >= 1')
  if global_batch % process_count:
    raise UserError(f'global batch {global_batch} does not divide over {process_count} '
                    'processes; make train.batch_size a multiple of the process count')
  if not 0 <= process_index < process_count:
    raise ValueError(f'process_index {process_index} is not in [0, {process_count})')
  check_long_enough(n_tokens, seq_len)


def check_long_enough(n_tokens: int, seq_len: int, where: str = 'the data') -> None:
  """UserError unless `n_tokens` hold one window of seq_len inputs plus its next token."""
  if n_tokens < seq_len + 2:
    raise UserError(f'sequence length {seq_len} is longer than {where} ({n_tokens:,} tokens); '
                    'lower data.seq_len or use a larger corpus')
