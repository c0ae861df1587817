"""Reading and writing `.safetensors` files with numpy alone, one tensor at a time.

The format (https://github.com/huggingface/safetensors): an 8-byte little-endian header size,
a JSON header `{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}}`, then
the raw little-endian bytes. `read_tensors(path)` memory-maps the file and yields each tensor
as a view, so a converter holds one tensor (not one file, not one model) at a time beyond what
it keeps; bfloat16 comes back as `ml_dtypes.bfloat16` (a dependency of jax).
`write_tensors(path, tensors)` writes a file transformers loads (metadata format "pt").
`folder_files(folder)` lists a Hugging Face folder's weight files: `model.safetensors`, or the
shards named in `model.safetensors.index.json`.
"""

import json
import struct
from pathlib import Path
from typing import Iterable, Iterator

import ml_dtypes
import numpy as np

from errors import UserError

DTYPES = {'F64': np.float64, 'F32': np.float32, 'F16': np.float16, 'BF16': ml_dtypes.bfloat16,
          'I64': np.int64, 'I32': np.int32, 'I16': np.int16, 'I8': np.int8, 'U8': np.uint8,
          'BOOL': np.bool_}
CODES = {np.dtype(v): k for k, v in DTYPES.items()}
INDEX_FILE = 'model.safetensors.index.json'
SINGLE_FILE = 'model.safetensors'


def read_header(path) -> tuple[dict, int]:
  """(the JSON header, the byte offset where the data starts)."""
  with open(path, 'rb') as f:
    raw = f.read(8)
    if len(raw) < 8:
      raise UserError(f'{path} is not a safetensors file (too short); pass the model folder')
    (size,) = struct.unpack('<Q', raw)
    try:
      header = json.loads(f.read(size))
    except (UnicodeDecodeError, json.JSONDecodeError):
      raise UserError(f'{path} is not a safetensors file (bad header)') from None
  return header, 8 + size


def read_tensors(path) -> Iterator[tuple[str, np.ndarray]]:
  """(name, array view) of every tensor in the file, in file order, memory-mapped."""
  header, start = read_header(path)
  data = np.memmap(path, dtype=np.uint8, mode='r')
  entries = sorted(((k, v) for k, v in header.items() if k != '__metadata__'),
                   key=lambda kv: kv[1]['data_offsets'][0])
  for name, entry in entries:
    if entry['dtype'] not in DTYPES:
      raise UserError(f'{path}: tensor {name} has dtype {entry["dtype"]}, which this converter '
                      f'does not read ({", ".join(DTYPES)})')
    begin, end = entry['data_offsets']
    array = data[start + begin:start + end].view(DTYPES[entry['dtype']])
    yield name, array.reshape(entry['shape'])


def write_tensors(path, tensors: Iterable[tuple[str, np.ndarray]]) -> int:
  """Writes the (name, array) pairs as one safetensors file; returns the bytes of tensor data."""
  tensors = [(name, np.ascontiguousarray(array)) for name, array in tensors]
  header, offset = {'__metadata__': {'format': 'pt'}}, 0
  for name, array in tensors:
    if array.dtype not in CODES:
      raise ValueError(f'{name}: dtype {array.dtype} has no safetensors code')
    header[name] = {'dtype': CODES[array.dtype], 'shape': list(array.shape),
                    'data_offsets': [offset, offset + array.nbytes]}
    offset += array.nbytes
  encoded = json.dumps(header, separators=(',', ':')).encode()
  encoded += b' ' * (-len(encoded) % 8)  # the data starts 8-byte aligned
  with open(path, 'wb') as f:
    f.write(struct.pack('<Q', len(encoded)))
    f.write(encoded)
    for _, array in tensors:
      f.write(array.tobytes())
  return offset


def folder_files(folder) -> list[Path]:
  """The weight files of a Hugging Face model folder, in the order of its index (if sharded)."""
  folder = Path(folder)
  index = folder / INDEX_FILE
  if index.is_file():
    weight_map = json.loads(index.read_text()).get('weight_map', {})
    names = list(dict.fromkeys(weight_map.values()))
    missing = [name for name in names if not (folder / name).is_file()]
    if missing:
      raise UserError(f'{index} names {missing[0]}, which is not in {folder}; download every '
                      'shard of the model')
    return [folder / name for name in names]
  if (folder / SINGLE_FILE).is_file():
    return [folder / SINGLE_FILE]
  if list(folder.glob('*.bin')) or list(folder.glob('*.pth')):
    raise UserError(f'{folder} holds PyTorch pickles (*.bin / *.pth), not safetensors; save it '
                    'with transformers\' save_pretrained(..., safe_serialization=True) first')
  raise UserError(f'{folder} has no model.safetensors or {INDEX_FILE}; pass a Hugging Face '
                  'model folder')


def write_index(folder, weight_map: dict[str, str], total_bytes: int) -> None:
  """model.safetensors.index.json for a checkpoint written as several shards."""
  index = {'metadata': {'total_size': int(total_bytes)}, 'weight_map': weight_map}
  (Path(folder) / INDEX_FILE).write_text(json.dumps(index, indent=2) + '\n')
