"""The one entry point: `python launch.py VERB --config FILE [--config.key=value ...]`.

Verbs:
  train   train a model; writes runs/<name>/ (config.json, metrics.jsonl, tb/, loss.png)
  data    prepare the config's corpus into token shards (reused by later runs) and describe it
  info    parameter count, FLOPs per token and the resolved model shape of a config
  bench   tokens/s and MFU of a config's train step on synthetic data

`python launch.py VERB --help` explains each. Mistakes in the input end in one line on stderr
and exit status 2, without a traceback.
"""

import argparse
import json
import os
import sys
from pathlib import Path

from errors import UserError

EXIT_USER_ERROR = 2


def _config_parser(verb: str, description: str) -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog=f'launch.py {verb}', description=description,
      epilog='Any config value can be overridden: --config.optim.lr=3e-3 --config.train.steps=100 '
             '(every key and its default is in configs/base.py).')
  parser.add_argument('--config', default='configs/tiny.py',
                      help='config file, optionally file.py:arg (default: configs/tiny.py)')
  return parser


def _parse(parser: argparse.ArgumentParser, argv: list[str]):
  """Splits argv into known flags and --config.* overrides; loads the config."""
  overrides, rest = [], []
  args_iter = iter(argv)
  for arg in args_iter:
    if arg.startswith('--config.'):
      if '=' not in arg:  # --config.key value
        value = next(args_iter, None)
        if value is None:
          raise UserError(f'{arg} has no value; write it as {arg}=VALUE')
        arg = f'{arg}={value}'
      overrides.append(arg)
    else:
      rest.append(arg)
  args = parser.parse_args(rest)
  from train.config import load_config
  return args, load_config(args.config, overrides)


def cmd_train(argv: list[str]) -> int:
  parser = _config_parser('train', 'Train a model from a config file (default: the tiny CPU model).')
  parser.add_argument('--run_dir', default=None, help='run directory (default: <run_root>/<name>)')
  parser.add_argument('--no_progress', action='store_true', help='no progress bar or log lines')
  args, config = _parse(parser, argv)
  from train.loop import format_summary, train
  run_dir = Path(args.run_dir or Path(config.run_root) / config.name)
  _check_writable(run_dir)
  summary = train(config, run_dir, progress_enabled=not args.no_progress)
  import jax
  if jax.process_index() == 0:
    print(format_summary(summary, run_dir))
  return 0


def cmd_data(argv: list[str]) -> int:
  parser = _config_parser('data', 'Prepare the corpus named by config.data into token shards.')
  _, config = _parse(parser, argv)
  from data.manifest import describe, load_manifest
  from data.prepare import prepare
  corpus_dir = prepare(config.data, progress=True)
  print(f'corpus: {corpus_dir}')
  print(describe(load_manifest(corpus_dir)))
  return 0


def cmd_info(argv: list[str]) -> int:
  parser = _config_parser('info', 'Show the model shape, parameter count and FLOPs of a config.')
  _, config = _parse(parser, argv)
  from models.config import TransformerConfig
  from models.counting import flops_per_token, param_count
  model = TransformerConfig.from_dict(config.model)
  seq_len = config.data.seq_len
  print(f'config: {config.name}')
  print(f'model: {model}')
  print(f'parameters: {param_count(model):,}')
  print(f'training FLOPs/token (6N + 12 L H Dh T, PaLM, attention not halved): '
        f'{flops_per_token(model, seq_len):.4g} at seq_len {seq_len}')
  return 0


def cmd_bench(argv: list[str]) -> int:
  parser = _config_parser('bench', 'Time the train step of a config on synthetic tokens (no corpus).')
  parser.add_argument('--steps', type=int, default=10, help='timed steps after compiling (default 10)')
  parser.add_argument('--json', action='store_true', help='print the measurements as JSON')
  args, config = _parse(parser, argv)
  from train.benchmark import benchmark_step, format_benchmark
  result = benchmark_step(config, steps=args.steps)
  print(json.dumps(result) if args.json else format_benchmark(result))
  return 0


def _check_writable(run_dir: Path) -> None:
  probe = run_dir
  while not probe.exists():
    probe = probe.parent
  if not os.access(probe, os.W_OK):
    raise UserError(f'cannot write to {probe}; choose another --run_dir or --config.run_root')


VERBS = {'train': cmd_train, 'data': cmd_data, 'info': cmd_info, 'bench': cmd_bench}


def main(argv: list[str]) -> int:
  if not argv or argv[0] in ('-h', '--help') or argv[0] not in VERBS:
    print(__doc__.strip(), file=sys.stderr if argv and argv[0] not in ('-h', '--help') else sys.stdout)
    if argv and argv[0] not in ('-h', '--help'):
      print(f'\nerror: unknown verb {argv[0]!r}; use one of {", ".join(VERBS)}', file=sys.stderr)
      return EXIT_USER_ERROR
    return 0
  try:
    return VERBS[argv[0]](argv[1:])
  except UserError as e:
    print(f'error: {e}', file=sys.stderr)
    return EXIT_USER_ERROR


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))
