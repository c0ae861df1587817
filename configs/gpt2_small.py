"""GPT-2 small (124M): 12 layers, d 768, 12 heads, learned positions, LayerNorm, GELU, biases, tied.

Exactly 124,439,808 parameters with the GPT-2 vocabulary (50,257) and context 1,024. Bring a GPT-2
`tokenizer.json` (or train a BPE of that size) and run:

    python launch.py train --config configs/gpt2_small.py --config.data.tokenizer=path/to/tokenizer.json
"""

from configs import base


def get_config():
  c = base.get_config()
  c.name = 'gpt2_small'
  m = c.model
  m.vocab_size, m.d_model, m.n_layers, m.n_heads, m.max_len = 50257, 768, 12, 12, 1024
  m.norm, m.position, m.mlp, m.use_bias, m.tie_embeddings = 'layernorm', 'learned', 'gelu', True, True
  c.data.seq_len = 1024
  c.data.tokenizer = 'bpe'
  c.data.bpe_vocab_size = 50257
  c.train.batch_size = 512
  c.train.steps = 20000
  c.optim.lr = 6e-4
  c.optim.warmup_steps = 700
  c.mesh.data, c.mesh.fsdp = 1, -1
  c.sharding.rules = 'fsdp'
  return c
