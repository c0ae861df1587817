"""Where a train step's time goes, op by op: a `jax.profiler` trace of the compiled step, summed.

    python -m benchmarks.step_profile --shape gpt_byte [--steps 3] [--variant name:overrides]

XLA:CPU records one trace event per executed op (thunk) when compiled with
`--xla_cpu_enable_xprof_traceme=true` (set here before JAX starts). The events of `--steps`
traced steps are summed per op and joined with the optimized HLO (`compiled.as_text()`), so
every row says what the op is:

  by part      forward or backward (ops under `transpose(...)` in their op_name) x the model
               scope (attn, mlp, attn_norm, ...) x matrix product or elementwise
  products     each matrix-product shape: calls, GFLOP, milliseconds and GFLOP/s
  ops          the most expensive single ops with their output shape and source

Independent ops run concurrently on the CPU's thread pool, so the per-op milliseconds add up to
more than the step's wall time: read them as shares, and compare variants by wall time
(benchmarks/step_variants.py). A matrix product that runs beside another shows about half its
solo GFLOP/s. XLA's own `dot` ops (on this CPU: the weight gradients, which the YNNPACK library
does not take) run asynchronously and their events time only the dispatch, so their share is
missing from the tables.

Tracing itself costs time in every op, most in the short ones: the step's wall time is printed
untraced and traced, and the elementwise rows overstate their cost (a LayerNorm's forward and
backward, 2.7 ms untraced on gpt_byte's [16, 256, 384], sums to 7 ms of op events). For what a
part really costs, time it alone (untraced) against its PyTorch counterpart.
"""

import argparse
import collections
import glob
import gzip
import json
import math
import os
import re
import statistics
import sys
import tempfile
import time


def _enable_op_events() -> None:
  # An installed libtpu (for `launch.py plan`) adds its profiler to every trace and makes the
  # traced step ~1.7x slower than untraced (1.15x without it): profile the CPU alone.
  os.environ.setdefault('JAX_PLATFORMS', 'cpu')
  flag = '--xla_cpu_enable_xprof_traceme=true'
  if flag not in os.environ.get('XLA_FLAGS', ''):
    os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') + ' ' + flag).strip()


def op_durations(trace_events: list[dict], steps: int) -> dict[str, float]:
  """Milliseconds per step of every named op in a trace (complete events only)."""
  totals = collections.Counter()
  for event in trace_events:
    if event.get('ph') == 'X' and 'dur' in event:
      totals[event['name']] += event['dur']
  return {name: micros / 1e3 / steps for name, micros in totals.items()}


_INSTRUCTION = re.compile(r'^  (?:ROOT )?%(\S+) = \(?(\w+)\[([\d,]*)\]\S* (\w+)\(', re.M)
_DOT = re.compile(r'= \w+\[([\d,]*)\]\S* dot\(%(\S+), %\S+\), (?:lhs_batch_dims=\{[\d,]*\}, )?'
                  r'lhs_contracting_dims=\{([\d,]*)\}')


def _shape(text: str) -> list[int]:
  return [int(d) for d in text.split(',')] if text else []


def hlo_ops(hlo_text: str) -> dict[str, dict]:
  """{instruction name: {'shape', 'op_name', 'flops', 'dots'}} of every instruction; 'flops'
  counts the matrix products inside it or its fused computation (2 x output x contracted)."""
  computations = {m.group(1): m.group(0) for m in
                  re.finditer(r'^%(\S+) .*?^}', hlo_text, re.S | re.M)}
  ops = {}
  for m in _INSTRUCTION.finditer(hlo_text):
    name, _, shape, _ = m.groups()
    line = hlo_text[m.start():hlo_text.find('\n', m.start())]
    called = re.search(r'calls=%([^,\s]+)', line)
    op_name = re.search(r'op_name="([^"]*)"', line)
    body = computations.get(called.group(1), line) if called else line
    flops, dots = 0, []
    for dot in _DOT.finditer(body):
      out = _shape(dot.group(1))
      lhs = re.search(r'%' + re.escape(dot.group(2)) + r' = \w+\[([\d,]*)\]', body)
      lhs_shape = _shape(lhs.group(1)) if lhs else []
      contracted = math.prod(lhs_shape[int(d)] for d in dot.group(3).split(',')) if lhs_shape else 0
      flops += 2 * math.prod(out) * contracted
      dots.append(f'{out} K={contracted}')
    ops[name] = {'shape': shape, 'op_name': op_name.group(1) if op_name else '', 'flops': flops,
                 'dots': ' + '.join(dots)}
  return ops


def model_part(op_name: str) -> tuple[str, str]:
  """('forward' | 'backward', scope) of an op_name such as
  'jit(train_step)/transpose(jvp(Transformer))/layer_3/mlp/up/dot_general'."""
  phase = 'backward' if 'transpose(' in op_name else 'forward'
  scopes = [part for part in op_name.split('/')[1:] if not part.startswith(('jvp(', 'transpose('))
            and not re.fullmatch(r'layer_\d+', part)]
  return phase, (scopes[0] if len(scopes) > 1 else 'other')


def summarise(durations: dict[str, float], ops: dict[str, dict], top: int = 15) -> str:
  known = {name: ms for name, ms in durations.items() if name in ops}
  total = sum(known.values())
  parts, products = collections.Counter(), collections.defaultdict(lambda: [0, 0.0, 0.0])
  for name, ms in known.items():
    op = ops[name]
    phase, scope = model_part(op['op_name'])
    parts[(phase, scope, 'matmul' if op['flops'] else 'elementwise')] += ms
    if op['flops']:
      row = products[op['dots']]
      row[0] += 1
      row[1] += op['flops'] / 1e9
      row[2] += ms
  lines = [f'op time {total:,.0f} ms per step (ops overlap: more than the wall time)', '',
           f'{"by part":<44} {"ms":>8} {"share":>6}']
  for (phase, scope, kind), ms in parts.most_common(top):
    lines.append(f'{phase + " " + scope + " " + kind:<44} {ms:8.1f} {ms / total:6.1%}')
  lines += ['', f'{"matrix products":<44} {"calls":>5} {"GFLOP":>7} {"ms":>8} {"GFLOP/s":>8}']
  for dots, (calls, gflop, ms) in sorted(products.items(), key=lambda kv: -kv[1][2])[:top]:
    lines.append(f'{dots[:44]:<44} {calls:5d} {gflop:7.2f} {ms:8.1f} {gflop / ms * 1e3:8.1f}')
  lines += ['', f'{"ops":<30} {"ms":>8}  output / source']
  for name, ms in sorted(known.items(), key=lambda kv: -kv[1])[:top]:
    op = ops[name]
    lines.append(f'{name:<30} {ms:8.1f}  [{op["shape"]}] {op["op_name"][-70:]}')
  return '\n'.join(lines)


def main(argv: list[str]) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--shape', default='gpt_byte', help='gpt_byte or gpt2_small '
                      '(benchmarks/shapes.py)')
  parser.add_argument('--batch', type=int, default=0, help="batch size (default: the shape's)")
  parser.add_argument('--variant', default='base:', help='NAME:key=value[,key=value], config '
                      'overrides and xla_ options as in benchmarks/step_variants.py')
  parser.add_argument('--steps', type=int, default=3, help='traced steps (default 3)')
  parser.add_argument('--top', type=int, default=15, help='rows per table (default 15)')
  args = parser.parse_args(argv)
  _enable_op_events()
  import jax  # pylint: disable=import-outside-toplevel
  from benchmarks.step_variants import parse_variant, step_runner  # pylint: disable=import-outside-toplevel
  name, overrides, options = parse_variant(args.variant)
  run, exp, batch, holder = step_runner(args.shape, args.batch, overrides, options)
  run()
  run()
  untraced = []
  for _ in range(args.steps):
    start = time.perf_counter()
    run()
    untraced.append(time.perf_counter() - start)
  with tempfile.TemporaryDirectory() as trace_dir:
    start = time.perf_counter()
    jax.profiler.start_trace(trace_dir, create_perfetto_trace=True)
    for _ in range(args.steps):
      run()
    jax.profiler.stop_trace()
    wall = (time.perf_counter() - start) / args.steps
    trace_file = sorted(glob.glob(f'{trace_dir}/**/*.trace.json.gz', recursive=True))[-1]
    with gzip.open(trace_file) as handle:
      trace = json.load(handle)
  events = trace['traceEvents'] if isinstance(trace, dict) else trace
  with exp.mesh_context():
    hlo = exp.train_step.lower(holder['state'], batch).compile(options or None).as_text()
  print(f'{args.shape} ({name}): {args.steps} traced steps, {wall * 1e3:,.0f} ms per step '
        f'wall (untraced: {statistics.median(untraced) * 1e3:,.0f} ms)')
  print(summarise(op_durations(events, args.steps), hlo_ops(hlo), args.top))


if __name__ == '__main__':
  main(sys.argv[1:])
