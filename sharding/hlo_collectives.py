"""The collectives one execution of a compiled step runs, counted from its optimized HLO text.

`sharding/report.py` lists the collective instructions of a program as written. Two things make
that differ from what a TPU step runs, and this module corrects both:
- TPU XLA fuses a reduce-scatter into a fusion whose called computation is named after it
  (`fusion(...), kind=kCustom, calls=%all-reduce-scatter.9`), with a plain all-reduce inside:
  the fusion is counted, as a reduce-scatter of the fusion's result bytes, and the inside is not;
- a collective inside a `while` body (a scanned layer stack, gradient accumulation) runs once
  per iteration: each computation's count is multiplied by the trip counts of the loops that
  call it: XLA's `known_trip_count` where it gives one, else the N of a condition
  `counter < constant(N)` (jax's scans count from 0 by 1); a loop with neither counts once and
  is reported.
- across slices (multi-slice, over the data-center network) XLA sends host transfers to the
  megascale runtime: a `send` with `_xla_megascale_transfer_type="ALL_REDUCE"` is counted as an
  all-reduce over the axis 'slices (DCN)', of the bytes of the array it sends.

Nothing here imports the model or the train step; tools/plan.py prints `summarize`.
"""

import collections
import dataclasses
import re

import jax

from sharding.report import _ARRAY_RE, _OPS, _result_bytes, group_axes, replica_groups

_HEADER_RE = re.compile(r'^(?:ENTRY\s+)?%?([\w.\-]+)\s*(?:\(|\{)')
_OP_RE = re.compile(r'=\s*(?P<shape>\(.*?\)|\S+)\s+(?P<op>' + '|'.join(_OPS) + r')(?:-start)?\(')
_FUSION_RE = re.compile(r'=\s*(?P<shape>\(.*?\)|\S+)\s+fusion\(.*calls=%(?P<callee>[\w.\-]+)')
_CALLS_RE = re.compile(r'\b(body|condition|calls|to_apply|branch_computations|'
                       r'true_computation|false_computation)=\{?((?:%[\w.\-]+(?:,\s*)?)+)\}?')
_TRIP_RE = re.compile(r'"known_trip_count":\{"n":"(\d+)"\}')
_DCN_RE = re.compile(r'=\s*(?P<shape>\(.*?\)|\S+)\s+send\(.*_xla_megascale_transfer_type='
                     r'"(?P<kind>\w+)"')
DCN_AXIS = 'slices (DCN)'
_CONDITION_RE = re.compile(r'\bcondition=%([\w.\-]+)')
_CONSTANT_RE = re.compile(r'=\s*s32\[\]\S*\s+constant\((\d+)\)')


def _trip_count(line: str, bodies: dict[str, list[str]]) -> int | None:
  """The iterations of the `while` on `line`, or None if neither XLA nor its condition says."""
  known = _TRIP_RE.search(line)
  if known:
    return int(known.group(1))
  condition = _CONDITION_RE.search(line)
  lines = bodies.get(condition.group(1), ()) if condition else ()
  constants = [int(m.group(1)) for l in lines for m in [_CONSTANT_RE.search(l)] if m]
  compares_lt = any(' compare(' in l and 'direction=LT' in l for l in lines)
  return constants[0] if len(constants) == 1 and compares_lt else None


@dataclasses.dataclass(frozen=True)
class StepCollective:
  op: str  # all-reduce, all-gather, reduce-scatter, all-to-all, collective-permute
  axes: tuple[str, ...]  # mesh axes its groups span
  bytes: int  # result bytes on one device, per execution
  runs: int  # executions per step (loop trip counts multiplied in)


def _collective_of_name(name: str) -> str | None:
  """'all-reduce-scatter.9' -> 'reduce-scatter'; 'all-gather.3' -> 'all-gather'; else None."""
  if 'reduce-scatter' in name:
    return 'reduce-scatter'
  return next((op for op in _OPS if name.startswith(op)), None)


def _computations(hlo_text: str) -> tuple[dict[str, list[str]], str | None]:
  """name -> instruction lines, in text order; and the ENTRY computation's name."""
  bodies, entry, current = {}, None, None
  for line in hlo_text.splitlines():
    if line and not line[0].isspace() and line.rstrip().endswith('{'):
      match = _HEADER_RE.match(line)
      current = match.group(1) if match else None
      if current:
        bodies[current] = []
        entry = current if line.startswith('ENTRY') else entry
    elif current and line.startswith(' '):
      bodies[current].append(line)
  return bodies, entry


def _runs_per_step(bodies: dict[str, list[str]], entry: str) -> tuple[dict[str, int], int]:
  """How many times each computation runs per execution of `entry`; and the number of loops
  with no known trip count (counted once)."""
  runs = collections.Counter({entry: 1})
  unknown_loops = 0
  for name in reversed(list(bodies)):  # callees are printed before their callers
    if not runs[name]:
      continue
    for line in bodies[name]:
      is_loop = ' while(' in line
      trip = _trip_count(line, bodies) if is_loop else None
      if is_loop and trip is None:
        unknown_loops += 1
      for role, callees in _CALLS_RE.findall(line):
        factor = trip if (trip is not None and role == 'body') else 1
        for callee in re.findall(r'%([\w.\-]+)', callees):
          runs[callee] += runs[name] * factor
  return runs, unknown_loops


def step_collectives(hlo_text: str, mesh: jax.sharding.Mesh) -> tuple[list[StepCollective], int]:
  """Every collective of the program with its executions per step; and the loops whose trip
  count is unknown (their collectives are counted once)."""
  bodies, entry = _computations(hlo_text)
  if entry is None:
    return [], 0
  runs, unknown_loops = _runs_per_step(bodies, entry)
  fused = set()  # computations that are the inside of a collective fusion
  for lines in bodies.values():
    for line in lines:
      match = _FUSION_RE.search(line)
      if match and _collective_of_name(match.group('callee')):
        fused.add(match.group('callee'))
  found = []
  for name, lines in bodies.items():
    if name in fused or not runs[name]:
      continue
    for line in lines:
      fusion = _FUSION_RE.search(line)
      if fusion and fusion.group('callee') in fused:
        inner = next((l for l in bodies.get(fusion.group('callee'), ()) if _OP_RE.search(l)), '')
        found.append(StepCollective(_collective_of_name(fusion.group('callee')),
                                    group_axes(replica_groups(inner), mesh),
                                    _result_bytes(fusion.group('shape')), runs[name]))
        continue
      dcn = _DCN_RE.search(line)
      if dcn:
        sent = _ARRAY_RE.search(dcn.group('shape'))
        found.append(StepCollective(dcn.group('kind').lower().replace('_', '-'), (DCN_AXIS,),
                                    _result_bytes(sent.group(0)) if sent else 0, runs[name]))
        continue
      match = _OP_RE.search(line)
      if match:
        found.append(StepCollective(match.group('op'), group_axes(replica_groups(line), mesh),
                                    _result_bytes(match.group('shape')), runs[name]))
  return found, unknown_loops


def summarize(found: list[StepCollective]) -> dict[tuple[str, tuple[str, ...]],
                                                    tuple[int, int, int]]:
  """(op, axes) -> (instructions in the program, executions per step, bytes per step)."""
  table = collections.defaultdict(lambda: (0, 0, 0))
  for c in found:
    count, runs, size = table[(c.op, c.axes)]
    table[(c.op, c.axes)] = (count + 1, runs + c.runs, size + c.bytes * c.runs)
  return dict(sorted(table.items()))
