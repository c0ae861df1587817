"""This codebase against the PyTorch reference, alternating, several rounds: tokens/s and ratio.

    python -m benchmarks.compare_torch --shape gpt_byte [--rounds 3] [--steps 5]
    python -m benchmarks.compare_torch --shape gpt2_small --rounds 2 --steps 2

Each round runs `launch.py bench --config configs/gpt2_small.py <the shape's overrides> --json`
(tools/bench.py `benchmark_step`) and `python -m benchmarks.torch_reference --shape <shape>
--json`, each in its own process (no shared threads or caches), the order swapped every round
so neither always runs first on a machine whose load drifts. Prints every round, then tokens/s
of each and the JAX/PyTorch ratio (one per round) as min / median / max, both of the median
steps and of each process's fastest step (less sensitive to other jobs on a shared machine).
"""

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
from pathlib import Path

from benchmarks.shapes import BASE_CONFIG, SHAPES, shape_overrides

ROOT = Path(__file__).resolve().parent.parent


def jax_command(shape: str, batch: int, steps: int) -> list[str]:
  return [sys.executable, 'launch.py', 'bench', '--config', BASE_CONFIG,
          *shape_overrides(shape, batch), '--steps', str(steps), '--json']


def torch_command(shape: str, batch: int, steps: int) -> list[str]:
  return [sys.executable, '-m', 'benchmarks.torch_reference', '--shape', shape,
          '--batch', str(batch), '--steps', str(steps), '--json']


def run_json(command: list[str]) -> dict:
  """Runs a benchmark process and returns the JSON of its last stdout line."""
  done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
  if done.returncode != 0:
    sys.exit(f"{' '.join(command)} failed ({done.returncode}): "
             f"{(done.stderr.strip().splitlines() or [''])[-1]}")
  return json.loads(done.stdout.strip().splitlines()[-1])


def spread(values: list[float], digits: int = 0) -> str:
  return ' / '.join(f'{v:,.{digits}f}' for v in (min(values), statistics.median(values),
                                                 max(values)))


def compare(shape: str, batch: int, rounds: int, steps: int, run=run_json) -> dict:
  """Alternating rounds; returns tokens/s per round of each and the per-round ratios."""
  commands = {'jax': jax_command(shape, batch, steps), 'pytorch': torch_command(shape, batch, steps)}
  results = {'jax': [], 'pytorch': []}
  for index in range(rounds):
    order = ('jax', 'pytorch') if index % 2 == 0 else ('pytorch', 'jax')
    for name in order:
      results[name].append(run(commands[name]))
    jax_tps, torch_tps = (results[n][-1]['tokens_per_s'] for n in ('jax', 'pytorch'))
    print(f'round {index + 1} ({order[0]} first): JAX {jax_tps:,.0f} tokens/s '
          f'(compile {results["jax"][-1]["compile_s"]:.1f} s), PyTorch {torch_tps:,.0f} '
          f'tokens/s, ratio {jax_tps / torch_tps:.2f}', flush=True)
  jax_tps = [r['tokens_per_s'] for r in results['jax']]
  torch_tps = [r['tokens_per_s'] for r in results['pytorch']]
  # The fastest step of each process: what the code can do when no other job interrupts it.
  fastest = [results['pytorch'][i]['step_s_min'] / results['jax'][i]['step_s_min']
             for i in range(rounds)]
  return {'shape': shape, 'batch': results['jax'][0]['batch'],
          'seq_len': results['jax'][0]['seq_len'], 'rounds': rounds, 'steps': steps,
          'parameters': results['pytorch'][0]['parameters'],
          'jax_tokens_per_s': jax_tps, 'pytorch_tokens_per_s': torch_tps,
          'ratios': [j / t for j, t in zip(jax_tps, torch_tps)], 'fastest_step_ratios': fastest,
          'jax_command': ' '.join(['python', *commands['jax'][1:]]),
          'pytorch_command': ' '.join(['python', *commands['pytorch'][1:]])}


def format_summary(summary: dict) -> str:
  return '\n'.join([
      f"{summary['shape']} (batch {summary['batch']} x {summary['seq_len']}, "
      f"{summary['parameters']:,} parameters), {summary['rounds']} alternating rounds of "
      f"{summary['steps']} timed steps; min / median / max:",
      f"  JAX      {spread(summary['jax_tokens_per_s'])} tokens/s",
      f"  PyTorch  {spread(summary['pytorch_tokens_per_s'])} tokens/s",
      f"  ratio JAX/PyTorch  {spread(summary['ratios'], 2)}",
      f"  ratio of the fastest steps  {spread(summary['fastest_step_ratios'], 2)}"])


def main(argv: list[str]) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--shape', default='gpt_byte', choices=sorted(SHAPES))
  parser.add_argument('--batch', type=int, default=0, help="batch size (default: the shape's)")
  parser.add_argument('--rounds', type=int, default=3, help='alternating rounds (default 3)')
  parser.add_argument('--steps', type=int, default=5, help='timed steps per run (default 5)')
  parser.add_argument('--json', action='store_true', help='also print the summary as JSON')
  args = parser.parse_args(argv)
  if importlib.util.find_spec('torch') is None:
    sys.exit('benchmarks/compare_torch.py needs PyTorch, an optional benchmark dependency: '
             'pip install -r requirements-bench.in')
  summary = compare(args.shape, args.batch, args.rounds, args.steps)
  print(format_summary(summary))
  if args.json:
    print(json.dumps(summary))


if __name__ == '__main__':
  main(sys.argv[1:])
