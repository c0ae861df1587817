"""Tokenizers: text <-> integer ids, behind one small interface.

  ByteTokenizer  UTF-8 bytes, vocabulary 256, no document separator, no files.
  HFTokenizer    a Hugging Face `tokenizers.Tokenizer` (the BPE trained by `train_bpe`, or a
                 tokenizer.json the user brings); '<|endoftext|>' (or a usual EOS token)
                 separates documents; a BOS token its post-processor puts before a text (as
                 Llama's does) starts every encoded text, as in transformers.

`load_tokenizer(config.data.tokenizer, corpus_dir)` is how the rest of the code gets one;
`data/prepare.py` trains the BPE on the training split and saves it next to the token shards.
"""

from typing import Iterable, Protocol, Sequence

import numpy as np

from errors import UserError
from storage import as_path

EOT_TOKEN = '<|endoftext|>'
_EOS_NAMES = (EOT_TOKEN, '<|end_of_text|>', '</s>', '<eos>', '<|eot_id|>')
MIN_BPE_VOCAB = 257  # the 256 byte symbols and the end-of-text token


class Tokenizer(Protocol):
  """What the data pipeline, the eval and the sampler need from a tokenizer."""
  name: str
  vocab_size: int
  eot_id: int | None  # inserted between documents; None: documents are simply concatenated

  def encode(self, text: str) -> np.ndarray: ...

  def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]: ...

  def decode(self, ids: Iterable[int]) -> str: ...


class ByteTokenizer:
  """UTF-8 bytes as tokens. Any id sequence decodes (invalid bytes become U+FFFD)."""
  name = 'bytes'
  vocab_size = 256
  eot_id = None

  def encode(self, text: str) -> np.ndarray:
    return np.frombuffer(text.encode('utf-8'), dtype=np.uint8).astype(np.int32)

  def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
    return [self.encode(text) for text in texts]

  def decode(self, ids: Iterable[int]) -> str:
    ids = _as_id_array(ids)
    in_range = (ids >= 0) & (ids < 256)
    raw = np.where(in_range, ids, 0xFF).astype(np.uint8)  # 0xFF is never valid UTF-8
    return raw.tobytes().decode('utf-8', errors='replace')


class HFTokenizer:
  """A Hugging Face tokenizer; decode keeps special tokens and skips ids outside the vocab."""

  def __init__(self, tokenizer, name: str):
    self.tokenizer = tokenizer
    self.name = name
    self.vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
    self.eot_id = _find_eot_id(tokenizer)
    self.prefix_ids = _prefix_ids(tokenizer)
    self.bos_id = int(self.prefix_ids[0]) if self.prefix_ids.size else None

  def encode(self, text: str) -> np.ndarray:
    ids = self.tokenizer.encode(text, add_special_tokens=False).ids
    return np.concatenate([self.prefix_ids, np.asarray(ids, dtype=np.int32)])

  def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
    encodings = self.tokenizer.encode_batch_fast(list(texts), add_special_tokens=False)
    return [np.concatenate([self.prefix_ids, np.asarray(encoding.ids, dtype=np.int32)])
            for encoding in encodings]

  def decode(self, ids: Iterable[int]) -> str:
    return self.tokenizer.decode(_as_id_array(ids).tolist(), skip_special_tokens=False)

  def save(self, path) -> None:
    as_path(path).write_text(self.tokenizer.to_str(pretty=True))

  @classmethod
  def load(cls, path, name: str | None = None) -> 'HFTokenizer':
    """The tokenizer.json at `path` (local or gs://)."""
    import tokenizers
    path = as_path(path)
    if path.suffix == '.model':
      raise UserError(f'{path} looks like a sentencepiece model, which is not supported directly; '
                      'convert it to a tokenizer.json (e.g. with transformers) and pass that')
    if not path.is_file():
      raise UserError(f'tokenizer file {path} does not exist; set data.tokenizer to bytes, bpe '
                      'or the path of a tokenizer.json')
    try:
      tokenizer = tokenizers.Tokenizer.from_str(path.read_text())
    except Exception as e:  # tokenizers raises plain Exceptions for malformed files
      raise UserError(f'cannot load tokenizer {path} ({" ".join(str(e).split())[:200]}); '
                      'pass a Hugging Face tokenizer.json') from None
    return cls(tokenizer, name or _name_from_path(path, tokenizer))


def train_bpe(texts: Iterable[str], vocab_size: int, progress: bool = False,
              length: int | None = None) -> HFTokenizer:
  """A byte-level BPE with '<|endoftext|>'; decode(encode(text)) == text for any text."""
  from tokenizers import Tokenizer as HFCore, decoders, models, pre_tokenizers, trainers
  if vocab_size < MIN_BPE_VOCAB:
    raise UserError(f'data.bpe_vocab_size={vocab_size} is too small; use at least '
                    f'{MIN_BPE_VOCAB} (256 bytes + end-of-text), e.g. 4096')
  tokenizer = HFCore(models.BPE())
  tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tokenizer.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(
      vocab_size=vocab_size, special_tokens=[EOT_TOKEN], show_progress=progress,
      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
  tokenizer.train_from_iterator(texts, trainer, length=length)
  return HFTokenizer(tokenizer, f'bpe-{tokenizer.get_vocab_size()}')


def load_tokenizer(spec: str, corpus_dir=None) -> Tokenizer:
  """'bytes', 'bpe' (the tokenizer.json prepared in corpus_dir) or a path to a tokenizer.json."""
  if spec == 'bytes':
    return ByteTokenizer()
  if spec == 'bpe':
    if corpus_dir is None or not (as_path(corpus_dir) / 'tokenizer.json').is_file():
      raise UserError(f'no trained BPE in {corpus_dir}; prepare the corpus first '
                      '(python launch.py data) with data.tokenizer=bpe')
    tokenizer = HFTokenizer.load(as_path(corpus_dir) / 'tokenizer.json')
    tokenizer.name = f'bpe-{tokenizer.vocab_size}'
    return tokenizer
  return HFTokenizer.load(spec)


def _as_id_array(ids: Iterable[int]) -> np.ndarray:
  """Ids from a list, a numpy or a jax array, or any iterable, as a 1-D int64 array."""
  array_like = hasattr(ids, '__array__') or isinstance(ids, (list, tuple))
  return np.asarray(ids if array_like else list(ids), dtype=np.int64).reshape(-1)


def _find_eot_id(tokenizer) -> int | None:
  for token in _EOS_NAMES:
    token_id = tokenizer.token_to_id(token)
    if token_id is not None:
      return token_id
  return None


def _prefix_ids(tokenizer) -> np.ndarray:
  """The special tokens the tokenizer's post-processor puts before a text (Llama's BOS), as
  transformers adds them; the ones after it (an EOS) are left out: documents are separated by
  the end-of-text token anyway."""
  plain = tokenizer.encode('a', add_special_tokens=False).ids
  full = tokenizer.encode('a', add_special_tokens=True).ids
  for start in range(len(full) - len(plain) + 1):
    if full[start:start + len(plain)] == plain:
      return np.asarray(full[:start], dtype=np.int32)
  return np.zeros((0,), np.int32)


def _name_from_path(path, tokenizer) -> str:
  stem = path.parent.name if path.stem == 'tokenizer' else path.stem
  return f'{stem or "tokenizer"}-{tokenizer.get_vocab_size()}'
