"""GPT-2 medium (355M): 24 layers, d 1024, 16 heads; otherwise as configs/gpt2_small.py.

    python launch.py train --config configs/gpt2_medium.py --config.data.tokenizer=path/to/tokenizer.json
"""

from configs import gpt2_small


def get_config():
  c = gpt2_small.get_config()
  c.name = 'gpt2_medium'
  c.model.d_model, c.model.n_layers, c.model.n_heads = 1024, 24, 16
  c.optim.lr = 3e-4
  return c
