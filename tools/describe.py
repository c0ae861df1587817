"""`launch.py info` and `launch.py data`: what a config's model and corpus are, without training.

`info` prints the resolved model shape, its parameter count and training FLOPs per token;
`data` prepares the config's corpus into token shards (reused by later runs) and describes it.
"""

from data.manifest import describe, load_manifest
from data.prepare import prepare
from models.config import TransformerConfig
from models.counting import flops_per_token, param_count


def info(config) -> int:
  """Prints the model shape, parameter count and FLOPs per token of `config`."""
  model = TransformerConfig.from_dict(config.model)
  seq_len = config.data.seq_len
  print(f'config: {config.name}')
  print(f'model: {model}')
  print(f'parameters: {param_count(model):,}')
  print(f'training FLOPs/token (6N + 12 L H Dh T, PaLM, attention not halved): '
        f'{flops_per_token(model, seq_len):.4g} at seq_len {seq_len}')
  return 0


def prepare_corpus(config) -> int:
  """Prepares the corpus of `config` (if not cached yet) and prints where and what it is."""
  corpus_dir = prepare(config.data, progress=True)
  print(f'corpus: {corpus_dir}')
  print(describe(load_manifest(corpus_dir)))
  return 0
