"""`launch.py info` and `launch.py data`: what a config's model and corpus are, without training.

`info` prints the resolved model shape, its parameter count, training FLOPs per token by each
convention and optionally a model ladder;
`data` prepares the config's corpus into token shards (reused by later runs) and describes it.
"""

from data.manifest import describe, load_manifest
from data.prepare import prepare
from experiments.scaling_info import format_info
from models.config import TransformerConfig
from models.counting import param_count


def info(config, args) -> int:
  """Prints the model shape, parameter count, FLOPs per token by each convention and, if
  `args.ladder`, a model ladder (experiments/scaling_info.py) of `config`."""
  model = TransformerConfig.from_dict(config.model)
  print(f'config: {config.name}')
  print(f'model: {model}')
  print(f'parameters: {param_count(model):,}')
  print(format_info(args, config, model))
  return 0


def prepare_corpus(config) -> int:
  """Prepares the corpus of `config` (if not cached yet) and prints where and what it is."""
  corpus_dir = prepare(config.data, progress=True)
  print(f'corpus: {corpus_dir}')
  print(describe(load_manifest(corpus_dir)))
  return 0
