"""The embedded default: a byte-level Llama-style model trained on the Python standard library.

Trains on a 2-core CPU in a few minutes and ends well below the corpus's unigram baseline:

    python launch.py train --config configs/tiny.py

(`make train` runs exactly this, after installing the pinned dependencies.)
"""

from configs import base


def get_config():
  c = base.get_config()
  c.name = 'tiny'
  c.model.d_model = 256
  c.model.n_layers = 4
  c.model.n_heads = 4
  c.model.max_len = 256
  c.data.seq_len = 256
  c.train.steps = 400
  c.train.batch_size = 16
  c.train.eval_every = 100
  c.train.eval_batches = 8
  c.optim.lr = 3e-3
  c.optim.warmup_steps = 50
  return c
