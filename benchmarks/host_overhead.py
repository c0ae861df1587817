"""What the training loop's host work adds to a real train step: data loading, metric fetching
and checkpoint saves, each against a pure step loop on a device-resident batch.

    python -m benchmarks.host_overhead --config configs/tiny.py [--steps 100] [--rounds 3]

Every mode runs `--steps` steps of the config's own jitted train step (train/experiment.py),
the state carried from one to the next, and adds one piece of the loop (train/loop.py) at a time:

  device       the same device-resident batch every step; the host only dispatches
  data         each step's batch from the loader, as the loop gets it (`exp.train_batch(step)`)
  metrics      data + each step's metrics read back one step behind through the loop's own
               `StepLog` (loss window, throughput, metrics.jsonl/TensorBoard every
               train.log_every steps; the console progress line is off)
  checkpoint   metrics + a save every checkpoint.every steps through train/checkpoint.py
               (async as configured), placed mid-round so its background write is inside the
               timed steps

Each mode ends by waiting for its last step. The modes run round-robin, the order rotated each
round so none always follows a save or runs first on a machine whose load drifts; reported per
mode: wall seconds per step (min / median / max over rounds) and the median's overhead over
`device`, and the same for the process's CPU time (all threads), which other jobs on a shared
machine disturb less: on a CPU backend the host work runs on the cores the step computes on.
The target for the default model (configs/tiny.py) is under 5%.
"""

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import jax

from train import checkpoint
from train.config import load_config
from train.experiment import Experiment, build_experiment
from train.loop import StepLog, Throughput
from train.metrics import MetricsWriter
from train.progress import Progress

MODES = ('device', 'data', 'metrics', 'checkpoint')


class Harness:
  """The pieces of the loop, wired as train/loop.py wires them, writing under `run_dir`."""

  def __init__(self, exp: Experiment, run_dir: Path):
    config = exp.config
    self.exp, self.step = exp, 0
    self.state = exp.init_state()
    with exp.mesh_context():
      self.fixed_batch = exp.train_batch(0)
    tokens_per_step = config.train.batch_size * config.data.seq_len
    run_dir.mkdir(parents=True, exist_ok=True)
    self.writer = MetricsWriter(run_dir)
    meter = Throughput(tokens_per_step, 0.0)  # FLOPs unused here; measures the peak once, now
    progress = Progress(0, 10**9, config.train.log_every, enabled=False)
    self.log = StepLog(self.writer, progress, meter, 0, float('nan'))
    self.manager = checkpoint.open_manager(run_dir / 'checkpoints', config.checkpoint)
    self.saves = []  # (step, seconds the loop was blocked)

  def run(self, mode: str, steps: int) -> tuple[float, float]:
    """Runs `steps` steps with the host work of `mode`; returns (wall, CPU) seconds per step."""
    exp, t = self.exp, self.exp.config.train
    every = max(int(self.exp.config.checkpoint.every), 1)
    pending = None
    with exp.mesh_context():
      start, cpu_start = time.perf_counter(), time.process_time()
      for index in range(steps):
        batch = self.fixed_batch if mode == 'device' else exp.train_batch(self.step)
        self.state, metrics = exp.train_step(self.state, batch)
        if mode in ('metrics', 'checkpoint'):
          if pending is not None:
            self.log.read(*pending)
          pending = (self.step, metrics, (self.step + 1) % t.log_every == 0)
        self.step += 1
        if mode == 'checkpoint' and (index + every // 2 + 1) % every == 0:
          meta = checkpoint.make_meta(exp.config, self.step, {})
          self.saves.append((self.step, checkpoint.save(self.manager, self.state, meta)))
      if pending is not None:
        self.log.read(*pending)
      jax.block_until_ready(self.state)
      seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    self.manager.wait_until_finished()  # not timed: a write left over from this mode
    return seconds / steps, cpu_seconds / steps

  def close(self) -> None:
    self.manager.close()
    self.writer.close()


def measure(exp: Experiment, run_dir: Path, steps: int, rounds: int, warmup: int = 2) -> dict:
  """Seconds per step of every mode, per round; the harness runs `warmup` untimed steps first
  (compilation)."""
  harness = Harness(exp, run_dir)
  try:
    harness.run('data', warmup)
    seconds, cpu_seconds = {mode: [] for mode in MODES}, {mode: [] for mode in MODES}
    for index in range(rounds):
      shift = index % len(MODES)
      for mode in MODES[shift:] + MODES[:shift]:
        wall, cpu = harness.run(mode, steps)
        seconds[mode].append(wall)
        cpu_seconds[mode].append(cpu)
  finally:
    harness.close()
  return {'seconds_per_step': seconds, 'cpu_seconds_per_step': cpu_seconds,
          'saves': harness.saves, 'steps_taken': harness.step}


def overheads(seconds: dict) -> dict:
  """Each mode's median seconds per step over `device`'s, minus one (0.05 = 5% more)."""
  base = statistics.median(seconds['device'])
  return {mode: statistics.median(values) / base - 1 for mode, values in seconds.items()}


def format_result(result: dict) -> str:
  lines = [f"{result['config']}: {result['rounds']} rounds of {result['steps']} steps per mode "
           f"(batch {result['batch']} x {result['seq_len']}); wall ms per step min / median / "
           "max and the median's overhead over device; the same for the process's CPU time:"]
  cpu_overhead = overheads(result['cpu_seconds_per_step'])
  for mode, values in result['seconds_per_step'].items():
    ms = [1000 * v for v in values]
    cpu_ms = [1000 * v for v in result['cpu_seconds_per_step'][mode]]
    lines.append(f'  {mode:<11} {min(ms):8.1f} / {statistics.median(ms):8.1f} / {max(ms):8.1f}'
                 f"  {100 * result['overhead'][mode]:+6.1f}%   CPU {min(cpu_ms):8.1f} / "
                 f'{statistics.median(cpu_ms):8.1f} / {max(cpu_ms):8.1f}  '
                 f'{100 * cpu_overhead[mode]:+6.1f}%')
  blocked = [seconds for _, seconds in result['saves']]
  if blocked:
    lines.append(f'  checkpoint saves: {len(blocked)}, the loop blocked {1000 * min(blocked):.0f}'
                 f'-{1000 * max(blocked):.0f} ms each')
  return '\n'.join(lines)


def main(argv: list[str]) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                   epilog='Other arguments are config overrides '
                                   '(--config.train.batch_size=8 ...).')
  parser.add_argument('--config', default='configs/tiny.py')
  parser.add_argument('--steps', type=int, default=100,
                      help='steps per mode and round (default 100: one save at the default '
                      'checkpoint.every)')
  parser.add_argument('--rounds', type=int, default=3, help='round-robin rounds (default 3)')
  parser.add_argument('--json', action='store_true', help='print the result as JSON')
  args, overrides = parser.parse_known_args(argv)
  config = load_config(args.config, overrides)
  exp = build_experiment(config, progress=False)
  with tempfile.TemporaryDirectory(prefix='host_overhead_') as run_dir:
    result = measure(exp, Path(run_dir), args.steps, args.rounds)
  result.update(config=args.config, steps=args.steps, rounds=args.rounds,
                batch=config.train.batch_size, seq_len=config.data.seq_len,
                overhead=overheads(result['seconds_per_step']),
                cpu_overhead=overheads(result['cpu_seconds_per_step']))
  print(json.dumps(result) if args.json else format_result(result))


if __name__ == '__main__':
  main(sys.argv[1:])
