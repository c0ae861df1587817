"""What a compiled, sharded step costs each device: memory and the collectives it runs.

- `memory(compiled)`: per-device bytes from `compiled.memory_analysis()` (arguments, outputs,
  temporaries, and the outputs aliased to donated arguments).
- `shard_bytes(tree)`: the theory, the bytes one device holds of a tree of arrays or
  `ShapeDtypeStruct`s with shardings (each leaf's shard shape times its item size).
- `collectives(hlo_text, mesh)`: every all-reduce, all-gather, reduce-scatter, all-to-all and
  collective-permute in the optimized HLO, with the mesh axes its replica groups span and
  the bytes it produces. CPU XLA lowers reduce-scatter to all-reduce, so on simulated devices
  FSDP's gradient reduce-scatter shows up as an all-reduce over the fsdp axes.

Nothing here imports the model: `train/experiment.py` compiles the step, `launch.py memory`
prints `format_report`.
"""

import collections
import dataclasses
import math
import re

import jax
import numpy as np

_OPS = ('all-reduce', 'all-gather', 'reduce-scatter', 'all-to-all', 'collective-permute')
_OP_RE = re.compile(r'=\s*(?P<shape>\(.*?\)|\S+)\s+(?P<op>' + '|'.join(_OPS) +
                    r')(?:-start)?\(')
_ARRAY_RE = re.compile(r'\b(pred|[subf]\d+|bf16|f8\w*|c64|c128)\[([\d,]*)\]')
_BITS = {'pred': 8, 'bf16': 16, 'c64': 64, 'c128': 128}


@dataclasses.dataclass(frozen=True)
class Collective:
  op: str  # e.g. 'all-reduce'
  axes: tuple[str, ...]  # mesh axes its groups span; ('?',) if the groups were not understood
  bytes: int  # bytes of its result on one device
  name: str  # the op_name metadata: where in the program it comes from


def _dtype_bytes(dtype: str) -> float:
  if dtype in _BITS:
    return _BITS[dtype] / 8
  return int(re.sub(r'\D', '', dtype) or 8) / 8


def _result_bytes(shape_text: str) -> int:
  total = 0
  for dtype, dims in _ARRAY_RE.findall(shape_text):
    total += math.prod(int(d) for d in dims.split(',') if d) * _dtype_bytes(dtype)
  return int(total)


def _iota_groups(text: str) -> np.ndarray | None:
  """'[2,4]<=[8]' or '[4,2]<=[2,4]T(1,0)' -> groups as rows."""
  match = re.match(r'\[([\d,]+)\]<=(\[[\d,]+\](?:T\([\d,]+\))?)', text)
  if not match:
    return None
  ids = _iota_ids(match.group(2))
  return None if ids is None else ids.reshape(int(match.group(1).split(',')[0]), -1)


def _mesh_groups(text: str) -> np.ndarray | None:
  """"mesh['a'=2,'b'=4] {'b'}", optionally with ", device_ids=([2,4]T(1,0))" before the set of
  grouped axes (the device order, as an iota transposed) -> groups as rows."""
  match = re.match(r"mesh\[([^\]]*)\](?:,\s*device_ids=\((.*?)\))?\s*\{([^}]*)\}", text)
  if not match:
    return None
  axes = re.findall(r"'(\w+)'=(\d+)", match.group(1))
  names, sizes = [a for a, _ in axes], [int(s) for _, s in axes]
  order = np.arange(math.prod(sizes))
  if match.group(2):
    order = _iota_ids(match.group(2))
    if order is None:
      return None
  ids = order.reshape(sizes)
  grouped = [names.index(a) for a in re.findall(r"'(\w+)'", match.group(3))]
  rest = [i for i in range(len(names)) if i not in grouped]
  return ids.transpose(rest + grouped).reshape(-1, math.prod(ids.shape[i] for i in grouped))


def _iota_ids(text: str) -> np.ndarray | None:
  """'[2,2,2]T(1,0,2)' -> the flat device order it describes."""
  match = re.fullmatch(r'\[([\d,]+)\](?:T\(([\d,]+)\))?', text.strip())
  if not match:
    return None
  dims = [int(x) for x in match.group(1).split(',')]
  ids = np.arange(math.prod(dims)).reshape(dims)
  if match.group(2):
    ids = ids.transpose([int(x) for x in match.group(2).split(',')])
  return ids.reshape(-1)


def _explicit_groups(text: str) -> np.ndarray | None:
  rows = re.findall(r'\{([\d,]+)\}', text)
  if not rows:
    return None
  return np.array([[int(x) for x in row.split(',')] for row in rows])


def replica_groups(line: str) -> np.ndarray | str | None:
  """The device-id groups of a collective's HLO line, one per row; 'all' for a single group of
  every device (`replica_groups={}`); None if absent or not understood."""
  if 'replica_groups={}' in line:
    return 'all'
  match = re.search(r"replica_groups=(\{\{.*?\}\}|mesh\[.*?\}|\[[\d,]+\]<=\S+)", line)
  if match is None:
    pairs = re.search(r'source_target_pairs=(\{.*?\}\})', line)
    return _explicit_groups(pairs.group(1)) if pairs else None
  text = match.group(1)
  for parse in (_mesh_groups, _iota_groups, _explicit_groups):
    groups = parse(text)
    if groups is not None:
      return groups
  return None


def group_axes(groups: np.ndarray | None, mesh: jax.sharding.Mesh) -> tuple[str, ...]:
  """The mesh axes along which the members of each group differ ('all' groups: every device)."""
  shape = mesh.devices.shape
  if isinstance(groups, str) and groups == 'all':
    groups = np.arange(math.prod(shape))[None]
  if groups is None:
    return ('?',)
  coords = np.stack(np.unravel_index(groups, shape), axis=-1)  # [groups, members, axes]
  varies = (coords != coords[:, :1]).any(axis=(0, 1))
  return tuple(name for name, v in zip(mesh.axis_names, varies) if v) or ('none',)


def collectives(hlo_text: str, mesh: jax.sharding.Mesh) -> list[Collective]:
  """Every collective of an optimized HLO module, in program order."""
  found = []
  for line in hlo_text.splitlines():
    match = _OP_RE.search(line)
    if not match:
      continue
    name = re.search(r'op_name="([^"]*)"', line)
    found.append(Collective(match.group('op'), group_axes(replica_groups(line), mesh),
                            _result_bytes(match.group('shape')), name.group(1) if name else ''))
  return found


def summarize(found: list[Collective]) -> dict[tuple[str, tuple[str, ...]], tuple[int, int]]:
  """(op, axes) -> (count, bytes)."""
  table = collections.defaultdict(lambda: (0, 0))
  for c in found:
    count, size = table[(c.op, c.axes)]
    table[(c.op, c.axes)] = (count + 1, size + c.bytes)
  return dict(sorted(table.items()))


def memory(compiled) -> dict[str, int]:
  """Per-device bytes of a compiled computation."""
  stats = compiled.memory_analysis()
  return {'argument': stats.argument_size_in_bytes, 'output': stats.output_size_in_bytes,
          'temp': stats.temp_size_in_bytes, 'alias': stats.alias_size_in_bytes}


def shard_bytes(tree) -> int:
  """Bytes one device holds of `tree` (arrays or ShapeDtypeStructs with shardings).

  With uneven layouts this is the largest shard; replicated leaves count whole.
  """
  total = 0
  for leaf in jax.tree.leaves(tree):
    shape = leaf.sharding.shard_shape(leaf.shape)
    total += math.prod(shape) * np.dtype(leaf.dtype).itemsize
  return total


def whole_bytes(tree) -> int:
  """Bytes of `tree` unsharded."""
  return sum(math.prod(x.shape) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree))


def _mb(n: int) -> str:
  return f'{n / 2**20:,.1f} MiB'


def format_report(parts: dict, compiled_memory: dict, found: list[Collective]) -> str:
  """Lines of a report: `parts` maps a name (params, opt_state, batch) to (whole, per-device)."""
  lines = ['per-device bytes (theory: shard shapes of the arguments):']
  for name, (whole, per_device) in parts.items():
    share = per_device / whole if whole else 0.0
    lines.append(f'  {name:<12} {_mb(per_device):>14} of {_mb(whole):>14}  ({share:.3f})')
  lines.append('per-device bytes (compiled.memory_analysis()):')
  for name, value in compiled_memory.items():
    lines.append(f'  {name:<12} {_mb(value):>14}  ({value:,} bytes)')
  lines.append('collectives (CPU lowers reduce-scatter to all-reduce):')
  if not found:
    lines.append('  none')
  for (op, axes), (count, size) in summarize(found).items():
    lines.append(f'  {op:<18} over {",".join(axes):<22} x{count:<4} {_mb(size):>14}')
  return '\n'.join(lines)
