"""The model shapes the PyTorch comparison runs, as `launch.py` config overrides.

Both start from configs/gpt2_small.py (LayerNorm with biases, GELU, learned positions, tied
embeddings, biases in every projection), so `launch.py bench --config configs/gpt2_small.py
<overrides>` and `python -m benchmarks.torch_reference --shape NAME` train the same model:

  gpt_byte     6 layers, d 384, 6 heads, byte vocabulary (256), sequence 256, batch 16, and
               64-query attention blocks (on this CPU 4-5% faster than 128 at sequence 256,
               the same at 1,024)
  gpt2_small   GPT-2 small itself (12 layers, d 768, vocabulary 50,257), sequence 1,024, and
               a batch of 2 (a step takes seconds on a 2-core CPU; --batch changes it)
"""

from errors import UserError

BASE_CONFIG = 'configs/gpt2_small.py'
SHAPES = {
    'gpt_byte': {'model.vocab_size': 256, 'model.d_model': 384, 'model.n_layers': 6,
                 'model.n_heads': 6, 'model.max_len': 256, 'data.tokenizer': 'bytes',
                 'data.seq_len': 256, 'train.batch_size': 16,
                 'model.attention_query_chunk': 64},
    'gpt2_small': {'data.seq_len': 1024, 'train.batch_size': 2},
}


def shape_overrides(name: str, batch: int = 0) -> list[str]:
  """The `--config.key=value` overrides of a shape (`batch` > 0 replaces its batch size)."""
  if name not in SHAPES:
    raise UserError(f'unknown shape {name!r}; use one of {", ".join(SHAPES)}')
  values = dict(SHAPES[name], **({'train.batch_size': batch} if batch > 0 else {}))
  return [f'--config.{key}={value}' for key, value in values.items()]
