"""A Llama-2-7B-shaped model: 32 layers, d 4096, 32 heads, SwiGLU 11008, untied, vocab 32,000.

6,738,415,616 parameters. For pods (FSDP + tensor parallel):

    python launch.py train --config configs/llama_7b.py --config.data.tokenizer=path/to/tokenizer.json
"""

from configs import llama_1b


def get_config():
  c = llama_1b.get_config()
  c.name = 'llama_7b'
  m = c.model
  m.vocab_size, m.d_model, m.n_layers, m.n_heads, m.n_kv_heads = 32000, 4096, 32, 32, 32
  m.d_ff, m.max_len, m.rope_theta, m.tie_embeddings = 11008, 4096, 10000.0, False
  c.data.seq_len = 4096
  c.data.bpe_vocab_size = 32000
  c.train.batch_size = 1024
  c.mesh.tensor = 8
  return c
