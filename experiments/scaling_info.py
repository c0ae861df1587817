"""What `launch.py info` shows about scaling: parameter and FLOPs accounting, and a model ladder.

The ladder flags (`--ladder 5 --ladder_min 2e5 --ladder_max 5e6`) are added to the info parser
here, so launch.py only calls `add_info_arguments` and `format_info`.
"""

import argparse

from experiments.ladder import ASPECT_TOLERANCE, COUNT_TOLERANCE, format_ladder, ladder
from models.config import TransformerConfig
from models.counting import (FLOPS_CONVENTION_NAMES, FLOPS_CONVENTIONS, embedding_param_count,
                             non_embedding_param_count, training_flops_per_token)


def add_info_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument('--ladder', type=int, default=0,
                      help='also show a model ladder of this many sizes (shapes by the rule in '
                           'experiments/ladder.py, from the config\'s scaling.ladder_* keys)')
  parser.add_argument('--ladder_min', type=float, default=2e5,
                      help='smallest target non-embedding parameter count (default 2e5)')
  parser.add_argument('--ladder_max', type=float, default=5e6,
                      help='largest target non-embedding parameter count (default 5e6)')


def format_accounting(model: TransformerConfig, seq_len: int, convention: str) -> str:
  lines = [f'embedding parameters: {embedding_param_count(model):,}  '
           f'non-embedding: {non_embedding_param_count(model):,}',
           f'training FLOPs/token at seq_len {seq_len}:']
  for name in FLOPS_CONVENTIONS:
    mark = '  <- scaling.flops_convention' if name == convention else ''
    lines.append(f'  {name:<13} {training_flops_per_token(model, seq_len, name):.4g}  '
                 f'{FLOPS_CONVENTION_NAMES[name]}{mark}')
  return '\n'.join(lines)


def format_info(args: argparse.Namespace, config, model: TransformerConfig) -> str:
  scaling = config.scaling
  text = format_accounting(model, config.data.seq_len, scaling.flops_convention)
  if args.ladder:
    rule = (f'd_model/n_layers within x{ASPECT_TOLERANCE:g} of {scaling.ladder_aspect_ratio:g}, '
            f'head_dim {scaling.ladder_head_dim}; within x{COUNT_TOLERANCE:g} of the target count '
            'the nearest aspect ratio, else the nearest count')
    rungs = ladder(model, args.ladder, args.ladder_min, args.ladder_max,
                   scaling.ladder_aspect_ratio, scaling.ladder_head_dim)
    text += '\n' + format_ladder(rungs, rule)
  return text
