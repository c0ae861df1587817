"""`launch.py plan --search`: which layout of a config trains fastest on a TPU slice and fits?

The global batch (`train.batch_size`) stays the config's, so the training run is the same run;
what varies is how it is laid out:
- layouts: each rule set (sharding/rules.py) on its mesh shapes; rule sets without tensor
  parallelism on one mesh (their batch and ZeRO-3 axes span the whole slice; dp_fsdp keeps
  whole copies along 'data' = the slices, or 2 within one slice), the tensor-parallel ones with
  'tensor' of 2, 4 or 8 where it divides the heads, d_ff and the chips of a slice;
- per layout, the remat policies (least recompute first) and the per-chip micro-batch (largest
  first; `train.grad_accum_steps` makes up the global batch): the first that compiles and fits
  is that layout's best, since everything after it recomputes more or accumulates more.

Before any compile, a layout whose state alone (parameters + optimizer state, per chip, from
their shardings) exceeds the HBM is dropped. Each compile takes seconds to minutes on a CPU, so
at most `--max_compiles` are spent.

Ranking, stated in the output: tokens/s if the chips ran the model's FLOPs plus the forward
FLOPs the remat policy repeats (tools/plan.py, analytic) at the assumed MFU of their peak.
Communication and the per-chip batch's effect on utilisation are not modelled in that number;
candidates within 1% of each other are ordered by collective bytes per chip per step (fewer
first), then by memory used (less first).
"""

import argparse
import dataclasses
import json
import shlex

from errors import EXIT_USER_ERROR, UserError
from sharding import report
from sharding.topology import chips_in, topology_devices
from tools.plan import Plan, chip_specs, compile_plan, plan_command
from train.config import load_config
from train.experiment import build_experiment

REMAT_ORDER = ('none', 'dots_no_batch', 'dots', 'full')  # least recompute first


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument('--topology', required=True,
                      help='TPU slice, <generation>:<chips per axis>: v4:2x2x2, v5e:2x2, '
                      'v5e:16x16, v5p:4x4x4, v6e:8x8 ...')
  parser.add_argument('--slices', type=int, default=1,
                      help='slices joined over the data-center network (multi-slice; the mesh '
                      "puts them on 'data' with config.mesh.dcn_data) (default 1)")
  parser.add_argument('--mfu', type=float, default=0.4,
                      help='assumed model FLOPs utilisation for the step time (default 0.4)')
  parser.add_argument('--json', action='store_true', help='print JSON')
  parser.add_argument('--search', action='store_true',
                      help='try mesh shapes, rule sets, remat policies and micro-batches; rank '
                      'those that fit by expected tokens/s, each with the command that trains it')
  parser.add_argument('--rules', default='dp,fsdp,dp_fsdp,tp,fsdp_tp,dp_fsdp_tp',
                      help='--search: rule sets to try (default: all)')
  parser.add_argument('--remat', default='none,dots_no_batch,full',
                      help='--search: remat policies to try (default none,dots_no_batch,full)')
  parser.add_argument('--micro_batches', type=int, default=3,
                      help='--search: how many per-chip micro-batch sizes to try per layout and '
                      'remat policy, largest first (default 3)')
  parser.add_argument('--max_compiles', type=int, default=12,
                      help='--search: compile at most this many candidates (default 12)')
  parser.add_argument('--top', type=int, default=5, help='--search: show this many (default 5)')


@dataclasses.dataclass
class Layout:
  rules: str
  mesh: tuple[int, int, int]  # per-slice data, fsdp, tensor

  def overrides(self, slices: int) -> list[str]:
    data, fsdp, tensor = self.mesh
    return [f'--config.sharding.rules={self.rules}', f'--config.mesh.data={data}',
            f'--config.mesh.fsdp={fsdp}', f'--config.mesh.tensor={tensor}',
            f'--config.mesh.dcn_data={slices}']


def layouts(config, chips_per_slice: int, slices: int, rule_sets: list[str]) -> list[Layout]:
  """The mesh shapes each rule set is tried on (see the module docstring)."""
  m = config.model
  n_heads = m.n_heads
  d_ff = m.d_ff or 0
  found = []
  for rules in rule_sets:
    if rules == 'dp':
      found.append(Layout(rules, (chips_per_slice, 1, 1)))
    elif rules == 'fsdp':
      found.append(Layout(rules, (1, chips_per_slice, 1)))
    elif rules == 'dp_fsdp':
      data = 1 if slices > 1 else 2
      if chips_per_slice % (2 * data) == 0:
        found.append(Layout(rules, (data, chips_per_slice // data, 1)))
    else:
      for tensor in (2, 4, 8):
        divides = (chips_per_slice % tensor == 0 and n_heads % tensor == 0 and
                   (d_ff == 0 or d_ff % tensor == 0))
        rest = chips_per_slice // tensor
        if not divides:
          continue
        if rules == 'tp':
          found.append(Layout(rules, (rest, 1, tensor)))
        elif rules == 'fsdp_tp':
          found.append(Layout(rules, (1, rest, tensor)))
        elif rest % 2 == 0 and rest > 2 or (rest == 2 and slices > 1):
          data = 1 if slices > 1 else 2
          found.append(Layout(rules, (data, rest // data, tensor)))
  return found


def _state_bytes_per_chip(config, devices) -> int:
  exp = build_experiment(config, with_data=False, devices=devices)
  state = exp.abstract_state
  return report.shard_bytes((state.params, state.opt_state))


def _micro_batches(config, data_parallel: int, how_many: int) -> list[int]:
  """Per-chip micro-batch sizes, largest first, that split the global batch evenly."""
  batch = config.train.batch_size
  sizes, size = [], 1
  while size * data_parallel <= batch:
    if batch % (size * data_parallel) == 0:
      sizes.append(size)
    size *= 2
  return sizes[::-1][:how_many]


def _data_parallel(exp) -> int:
  from sharding.rules import batch_axes  # pylint: disable=import-outside-toplevel
  ways = 1
  for axis in batch_axes(exp.rules):
    ways *= exp.mesh.shape[axis]
  return ways


@dataclasses.dataclass
class Candidate:
  overrides: list[str]
  plan: Plan | None = None
  skipped: str = ''  # why it was not compiled


def search(config_path: str, overrides: list[str], topology: str, slices: int, args) -> dict:
  """Compiles candidates until a fit per layout or the budget; returns fits, misses, skips."""
  devices = topology_devices(topology, slices)
  chip, hbm, _ = chip_specs(topology)
  base = load_config(config_path, overrides)
  remats = [r for r in REMAT_ORDER if r in args.remat.split(',')]
  unknown = set(args.remat.split(',')) - set(REMAT_ORDER)
  if unknown or not remats:
    raise UserError(f'--remat {args.remat}: use names from {", ".join(REMAT_ORDER)}')
  compiles, fits, misses, skipped = 0, [], [], []
  for layout in layouts(base, chips_in(topology), slices, args.rules.split(',')):
    layout_overrides = overrides + layout.overrides(slices)
    try:
      config = load_config(config_path, layout_overrides)
      state_bytes = _state_bytes_per_chip(config, devices)
      exp = build_experiment(config, with_data=False, devices=devices)
    except UserError as e:
      skipped.append(Candidate(layout_overrides, skipped=str(e)))
      continue
    if state_bytes > hbm:
      skipped.append(Candidate(layout_overrides, skipped=(
          f'parameters + optimizer state alone need {state_bytes / 2**30:,.2f} GiB per chip > '
          f'{hbm / 2**30:,.0f} GiB HBM')))
      continue
    ladder = [(remat, size) for remat in remats
              for size in _micro_batches(config, _data_parallel(exp), args.micro_batches)]
    for remat, size in ladder:
      if compiles >= args.max_compiles:  # this layout's best is not known: say so
        skipped.append(Candidate(layout_overrides, skipped=(
            f'not reached: --max_compiles {args.max_compiles} spent (from remat={remat}, '
            f'grad_accum_steps={config.train.batch_size // (size * _data_parallel(exp))} on)')))
        break
      accum = config.train.batch_size // (size * _data_parallel(exp))
      candidate = Candidate(layout_overrides + [f'--config.model.remat={remat}',
                                                f'--config.train.grad_accum_steps={accum}'])
      candidate.plan = compile_plan(load_config(config_path, candidate.overrides), topology,
                                    slices, devices)
      compiles += 1
      (fits if candidate.plan.fits else misses).append(candidate)
      if candidate.plan.fits:
        break
  rate = lambda c: c.plan.tokens_per_step / c.plan.hardware_step_seconds(args.mfu)
  best = max((rate(c) for c in fits), default=0.0)
  fits.sort(key=lambda c: (-round(rate(c) / best, 2) if best else 0, c.plan.collective_bytes,
                           c.plan.memory['total']))
  return {'chip': chip, 'compiles': compiles, 'fits': fits, 'misses': misses,
          'skipped': skipped, 'rate': rate}


def command(config_path: str, overrides: list[str]) -> str:
  return shlex.join(['python', 'launch.py', 'train', '--config', config_path, *overrides])


def format_search(result: dict, config_path: str, args) -> str:
  rate = result['rate']
  lines = [f"searched on {args.topology}{f' x {args.slices} slices' if args.slices > 1 else ''}: "
           f"{result['compiles']} compiles, {len(result['fits'])} fit, "
           f"{len(result['misses'])} did not, {len(result['skipped'])} layouts left out (below)",
           f'ranked by tokens/s if the chips ran the model FLOPs + remat recompute at '
           f'{args.mfu:.0%} of peak (communication not modelled); within 1%, fewer collective '
           'bytes per chip first']
  for rank, c in enumerate(result['fits'][:args.top], 1):
    p = c.plan
    lines += ['', f'#{rank}: {rate(c):,.0f} tokens/s, {p.mesh}, rules={p.rules}, '
              f'remat={p.remat}, global micro-batch {p.batch_size // p.grad_accum_steps} '
              f'(grad_accum_steps={p.grad_accum_steps}), {p.memory["total"] / 2**30:,.2f} of '
              f'{p.hbm_bytes / 2**30:,.0f} GiB per chip, collectives '
              f'{p.collective_bytes / 2**30:,.2f} GiB per chip per step',
              '  ' + command(config_path, c.overrides)]
  if result['misses']:
    lines += ['', 'compiled but did not fit:']
    lines += [f'  {c.plan.mesh}, rules={c.plan.rules}, remat={c.plan.remat}, grad_accum_steps='
              f'{c.plan.grad_accum_steps}: {c.plan.error}' for c in result['misses']]
  if result['skipped']:
    lines += ['', 'not compiled:']
    layout = lambda c: ' '.join(o for o in c.overrides
                                if o.startswith(('--config.sharding', '--config.mesh.')))
    lines += [f'  {layout(c)}: {c.skipped}' for c in result['skipped']]
  return '\n'.join(lines)


def plan_or_search(args, config, overrides: list[str]) -> int:
  """`launch.py plan`: one plan, or with --search the ranked candidates."""
  if args.slices > 1 and int(config.mesh.dcn_data) != args.slices and not args.search:
    raise UserError(f'--slices {args.slices} puts the slices on the data axis, as training on them '
                    f'does: add --config.mesh.dcn_data={args.slices}')
  if not args.search:
    return plan_command(config, args.topology, args.slices, args.mfu, args.json)
  if not 0 < args.mfu <= 1:
    raise UserError(f'--mfu {args.mfu}: give a fraction in (0, 1], e.g. 0.4')
  result = search(args.config, overrides, args.topology, args.slices, args)
  if args.json:
    rows = [{'overrides': c.overrides, 'command': command(args.config, c.overrides),
             'tokens_per_s': result['rate'](c), 'plan': dataclasses.asdict(c.plan)}
            for c in result['fits']]
    print(json.dumps({'fits': rows, 'compiles': result['compiles'],
                      'misses': [dataclasses.asdict(c.plan) for c in result['misses']],
                      'skipped': [[c.overrides, c.skipped] for c in result['skipped']]}))
  else:
    print(format_search(result, args.config, args))
  return 0 if result['fits'] else EXIT_USER_ERROR

