"""A Llama-3.2-1B-shaped model: 16 layers, d 2048, 32 heads, 8 KV heads, SwiGLU 8192, tied, vocab 128,256.

1,235,814,400 parameters. Meant for pods (FSDP + tensor parallel); on one CPU use it for
`launch.py memory` reports, not training:

    python launch.py train --config configs/llama_1b.py --config.data.tokenizer=path/to/tokenizer.json
"""

from configs import base


def get_config():
  c = base.get_config()
  c.name = 'llama_1b'
  m = c.model
  m.vocab_size, m.d_model, m.n_layers, m.n_heads, m.n_kv_heads = 128256, 2048, 16, 32, 8
  m.d_ff, m.max_len, m.rope_theta, m.tie_embeddings = 8192, 2048, 500000.0, True
  m.dtype = 'bfloat16'
  m.scan_layers, m.remat = True, 'dots_no_batch'
  c.data.seq_len = 2048
  c.data.tokenizer = 'bpe'
  c.data.bpe_vocab_size = 128256
  c.train.batch_size = 256
  c.train.steps = 50000
  c.optim.lr = 3e-4
  c.optim.warmup_steps = 2000
  c.mesh.data, c.mesh.fsdp, c.mesh.tensor = 1, -1, 1
  c.sharding.rules = 'fsdp_tp'
  return c
