"""`launch.py plan`: will a config's train step fit a TPU slice, and how fast would it run?

The step is compiled exactly as training compiles it (train/experiment.py: same model, rules,
optimizer, shardings and donation), from abstract shapes only (no weights are allocated), for the
compile-only devices of a TPU topology (sharding/topology.py, needs libtpu). Reported per chip:
- memory from `compiled.memory_analysis()`: arguments (parameters, optimizer state, batch),
  outputs, the outputs aliased to donated arguments, temporaries, generated code; the total is
  arguments + outputs - aliased + temporaries + generated code, against the chip's HBM
  (train/hardware.py). A step that XLA cannot fit fails to compile with RESOURCE_EXHAUSTED, as it
  would on the chips: that is reported with its numbers, not a traceback;
- FLOPs: the model's (models/counting.py, 6N + attention, PaLM convention, attention not halved),
  the forward FLOPs the remat policy computes again (`recompute_flops_per_token`), and the
  compiled program's (`cost_analysis()`, which counts a loop body such as a scanned layer stack
  once, so it is printed beside the loops it has, never used for the step time);
- the collectives per step (sharding/hlo_collectives.py);
- the step time and tokens/s implied by an assumed MFU: model FLOPs / (chips x peak x MFU).
"""

import dataclasses
import json
import re
import time

import jax
import numpy as np

from errors import EXIT_USER_ERROR, UserError, out_of_memory_reason
from models.config import TransformerConfig
from models.counting import flops_per_token, matmul_param_count, param_count
from sharding import hlo_collectives, report
from sharding.mesh import mesh_shape_text
from sharding.topology import chip_name, topology_devices
from train.experiment import build_experiment, compile_train_step
from train.hardware import PUBLISHED_HBM_BYTES, published_peak

# The two forms of TPU XLA's out-of-memory error: "the total memory required for HLO temporaries
# (52.91G) exceeds available HBM (15.75G)" and "Used 20.1G of 15.75G hbm" (1024-based units).
_OOM_REQUIRED_RE = re.compile(r'required for ([\w ]+?) \(([\d.]+)([KMGT]?)\) exceeds available '
                              r'HBM \(([\d.]+)([KMGT]?)\)', re.IGNORECASE)
_OOM_USED_RE = re.compile(r'Used\s+([\d.]+)([KMGT]?)i?B?\s+of\s+([\d.]+)([KMGT]?)i?B?\s+hbm',
                          re.IGNORECASE)
_UNITS = {'': 1, 'K': 2**10, 'M': 2**20, 'G': 2**30, 'T': 2**40}


@dataclasses.dataclass
class Plan:
  """One compiled (or failed) train step on one topology."""
  config: str
  topology: str
  slices: int
  chips: int
  chip: str
  hbm_bytes: int
  peak_flops: float  # dense bf16 FLOP/s of one chip
  mesh: str
  rules: str
  remat: str
  batch_size: int
  grad_accum_steps: int
  seq_len: int
  parameters: int
  compile_s: float
  fits: bool
  error: str = ''  # why it does not fit (RESOURCE_EXHAUSTED's numbers), or ''
  memory: dict = dataclasses.field(default_factory=dict)  # per-chip bytes
  sharded_argument_bytes: int = 0  # per chip: state + batch by their shardings (no compile)
  model_flops: float = 0.0  # per step, all chips (models/counting.py)
  recompute_flops: float = 0.0  # per step, all chips: forward work remat repeats (analytic)
  compiled_flops: float = 0.0  # per step, one chip (cost_analysis; loop bodies counted once)
  loops: int = 0  # while loops in the compiled program
  collectives: list = dataclasses.field(default_factory=list)  # [op, axes, count, runs, bytes]
  unknown_loops: int = 0
  notes: list = dataclasses.field(default_factory=list)

  @property
  def tokens_per_step(self) -> int:
    return self.batch_size * self.seq_len

  def step_seconds(self, mfu: float) -> float:
    """Model FLOPs / (chips x peak x mfu)."""
    return self.model_flops / (self.chips * self.peak_flops * mfu)

  def hardware_step_seconds(self, mfu: float) -> float:
    """(Model + remat recompute FLOPs) / (chips x peak x mfu)."""
    return (self.model_flops + self.recompute_flops) / (self.chips * self.peak_flops * mfu)

  @property
  def collective_bytes(self) -> int:
    return sum(row[4] for row in self.collectives)


def recompute_flops_per_token(cfg: TransformerConfig, seq_len: int, remat: str) -> float:
  """Forward FLOPs per token that a remat policy (models/remat.py) computes a second time in
  the backward pass, counted like `flops_per_token`: 'full' repeats each block's forward (2 x its
  matmul parameters + the attention scores and values, 4 L H Dh T); 'dots_no_batch' keeps the
  weight matmuls and repeats the attention matmuls (which have batch dims); 'dots' and 'none'
  repeat no matmul (the elementwise work they redo is not counted)."""
  cfg = cfg.derived()
  attention = 4 * cfg.n_layers * cfg.n_heads * cfg.head_dim * seq_len
  blocks = 2 * (matmul_param_count(cfg) - cfg.padded_vocab * cfg.d_model)
  return {'full': blocks + attention, 'dots_no_batch': attention}.get(remat, 0.0)


def chip_specs(topology: str) -> tuple[str, int, float]:
  """(chip name, HBM bytes, dense bf16 FLOP/s) of a topology's chip, from train/hardware.py."""
  chip = chip_name(topology)
  _, peak = published_peak(chip)
  return chip, PUBLISHED_HBM_BYTES[chip], peak


def _bytes(number: str, unit: str) -> int:
  return int(float(number) * _UNITS[unit.upper()])


def out_of_memory_message(error: Exception, hbm_bytes: int) -> str | None:
  """One line with the numbers of a RESOURCE_EXHAUSTED compile error; None if it is not one."""
  reason = out_of_memory_reason(error)
  if reason is None:
    return None
  text = str(error)
  required = _OOM_REQUIRED_RE.search(text)
  if required:
    need, have = _bytes(*required.group(2, 3)), _bytes(*required.group(4, 5))
    return (f'{required.group(1)} alone need {need / 2**30:,.2f} GiB per chip, '
            f'{have / 2**30:,.2f} GiB of HBM is available (XLA: RESOURCE_EXHAUSTED)')
  used = _OOM_USED_RE.search(text)
  if used:
    need, have = _bytes(*used.group(1, 2)), _bytes(*used.group(3, 4))
    return (f'needs {need / 2**30:,.2f} GiB per chip, {have / 2**30:,.2f} GiB of HBM is '
            f'available (XLA: RESOURCE_EXHAUSTED, over by {(need - have) / 2**30:,.2f} GiB)')
  return f'XLA: {reason[:300]} (HBM {hbm_bytes / 2**30:,.1f} GiB per chip)'


def _memory(compiled) -> dict:
  stats = compiled.memory_analysis()
  memory = {'argument': stats.argument_size_in_bytes, 'output': stats.output_size_in_bytes,
            'alias': stats.alias_size_in_bytes, 'temp': stats.temp_size_in_bytes,
            'generated_code': stats.generated_code_size_in_bytes}
  memory['total'] = (memory['argument'] + memory['output'] - memory['alias'] + memory['temp'] +
                     memory['generated_code'])
  return memory


def compile_plan(config, topology: str, slices: int = 1, devices=None) -> Plan:
  """Compiles the config's train step for `slices` x `topology` and measures it."""
  chip, hbm, peak = chip_specs(topology)
  devices = topology_devices(topology, slices) if devices is None else devices
  start = time.perf_counter()
  exp = build_experiment(config, with_data=False, devices=devices)
  t, m = config.train, config.model
  plan = Plan(config=config.name, topology=topology, slices=slices, chips=len(devices), chip=chip,
              hbm_bytes=hbm, peak_flops=peak, mesh=mesh_shape_text(exp.mesh),
              rules=config.sharding.rules, remat=m.remat, batch_size=t.batch_size,
              grad_accum_steps=t.grad_accum_steps, seq_len=config.data.seq_len,
              parameters=param_count(exp.model_cfg), compile_s=0.0, fits=False,
              notes=list(exp.notes))
  plan.model_flops = flops_per_token(exp.model_cfg, plan.seq_len) * plan.tokens_per_step
  plan.recompute_flops = (recompute_flops_per_token(exp.model_cfg, plan.seq_len, m.remat) *
                          plan.tokens_per_step)
  batch = jax.ShapeDtypeStruct((t.batch_size, plan.seq_len + 1), np.int32,
                               sharding=exp.batch_sharding)
  plan.sharded_argument_bytes = report.shard_bytes((exp.abstract_state, batch))
  try:
    compiled = compile_train_step(exp)
  except Exception as e:  # pylint: disable=broad-except  # XlaRuntimeError / JaxRuntimeError
    message = out_of_memory_message(e, hbm)
    if message is None:
      raise
    plan.compile_s, plan.error = time.perf_counter() - start, message
    return plan
  plan.compile_s = time.perf_counter() - start
  plan.memory = _memory(compiled)
  plan.compiled_flops = float((compiled.cost_analysis() or {}).get('flops', 0.0))
  hlo_text = compiled.as_text()
  plan.loops = hlo_text.count(' while(')
  found, plan.unknown_loops = hlo_collectives.step_collectives(hlo_text, exp.mesh)
  plan.collectives = [[op, list(axes), count, runs, size] for (op, axes), (count, runs, size)
                      in hlo_collectives.summarize(found).items()]
  plan.fits = plan.memory['total'] <= hbm
  if not plan.fits:
    plan.error = (f"needs {plan.memory['total'] / 2**30:,.2f} GiB per chip by memory_analysis(), "
                  f'the chip has {hbm / 2**30:,.2f} GiB')
  return plan


def _gib(n: float) -> str:
  return f'{n / 2**30:,.2f} GiB' if n >= 2**30 else f'{n / 2**20:,.1f} MiB'


def _seconds(s: float) -> str:
  return f'{s * 1e3:,.1f} ms' if s < 1 else f'{s:,.2f} s'


def format_plan(plan: Plan, mfu: float) -> str:
  """The report `launch.py plan` prints."""
  slices = f' x {plan.slices} slices' if plan.slices > 1 else ''
  lines = [f'{plan.config}: {plan.parameters:,} parameters, batch {plan.batch_size} x '
           f'{plan.seq_len} tokens (grad_accum_steps={plan.grad_accum_steps}), '
           f'remat={plan.remat}',
           f'{plan.topology}{slices}: {plan.chips} x {plan.chip} '
           f'({_gib(plan.hbm_bytes)} HBM, {plan.peak_flops / 1e12:,.0f} TFLOP/s bf16 each)',
           f'mesh {plan.mesh}, sharding.rules={plan.rules}; compiled in {plan.compile_s:,.0f} s',
           *(f'note: {note}' for note in plan.notes)]
  if not plan.memory:
    lines.append(f'arguments by their shardings (state + batch): '
                 f'{_gib(plan.sharded_argument_bytes)} per chip')
    lines.append(f'DOES NOT FIT: {plan.error}')
    lines.append('(fewer tokens per chip at once: raise train.grad_accum_steps, or set '
                 'model.remat=full; --search tries both)')
    return '\n'.join(lines)
  mem = plan.memory
  lines.append('per-chip memory (compiled.memory_analysis()):')
  lines.append(f"  {'arguments by their shardings':<38} {_gib(plan.sharded_argument_bytes):>12}")
  for key, label in (('argument', 'arguments (state + batch)'), ('output', 'outputs'),
                     ('alias', 'outputs aliased to donated arguments'),
                     ('temp', 'temporaries'), ('generated_code', 'generated code')):
    lines.append(f'  {label:<38} {_gib(mem[key]):>12}')
  share = mem['total'] / plan.hbm_bytes
  lines.append(f"  {'total (arg + out - alias + temp + code)':<38} {_gib(mem['total']):>12}  "
               f'= {share:.0%} of {_gib(plan.hbm_bytes)} HBM')
  per_chip_model = plan.model_flops / plan.chips
  loops = (f'; its {plan.loops} loop bodies counted once' if plan.loops else '')
  lines.append(f'FLOPs per step: model {plan.model_flops:.3e} (6N + attention; '
               f'{per_chip_model:.3e} per chip), remat={plan.remat} recomputes '
               f'{plan.recompute_flops / plan.model_flops:+.0%}; compiled program (cost_analysis) '
               f'{plan.compiled_flops:.3e} per chip{loops}')
  if plan.collectives:
    lines.append('collectives per step (per chip; loops counted by their trip counts):')
    for op, axes, count, runs, size in plan.collectives:
      lines.append(f'  {op:<18} over {",".join(axes):<18} {count:>4} in program, {runs:>5} '
                   f'runs, {_gib(size):>12}')
  if plan.unknown_loops:
    lines.append(f'  ({plan.unknown_loops} loops of unknown trip count counted once)')
  step, busy = plan.step_seconds(mfu), plan.hardware_step_seconds(mfu)
  lines.append(f'at {mfu:.0%} MFU: {_seconds(step)} per step, '
               f'{plan.tokens_per_step / step:,.0f} tokens/s '
               f'({plan.tokens_per_step / step / plan.chips:,.0f} per chip); with the remat '
               f'recompute at the same rate: {_seconds(busy)}, '
               f'{plan.tokens_per_step / busy:,.0f} tokens/s')
  lines.append(f'FITS: {_gib(mem["total"])} of {_gib(plan.hbm_bytes)} per chip' if plan.fits
               else f'DOES NOT FIT: {plan.error}')
  return '\n'.join(lines)


def plan_command(config, topology: str, slices: int, mfu: float, as_json: bool) -> int:
  """`launch.py plan` without --search: prints one plan; exit 2 if it does not fit."""
  if not 0 < mfu <= 1:
    raise UserError(f'--mfu {mfu}: give a fraction in (0, 1], e.g. 0.4')
  plan = compile_plan(config, topology, slices)
  print(json.dumps(dataclasses.asdict(plan)) if as_json else format_plan(plan, mfu))
  return 0 if plan.fits else EXIT_USER_ERROR
