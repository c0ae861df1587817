"""A T5-style encoder-decoder trained by span corruption on the Python standard library.

    python launch.py train --config configs/span_tiny.py

Each 256-byte window loses 15% of its bytes in spans of mean length 3 (38 bytes in 13 spans),
each span replaced by a sentinel id from the top of the vocabulary (256 bytes + 13 sentinels:
vocab_size 272); the decoder writes the spans back. `--config.model.kind=encoder` trains a
bidirectional encoder alone on the same noise (masked-span prediction).
"""

from configs import base


def get_config():
  c = base.get_config()
  c.name = 'span_tiny'
  c.task.name = 'span_corruption'
  c.model.kind = 'encoder_decoder'
  c.model.vocab_size = 272
  c.model.d_model = 256
  c.model.n_layers = 4
  c.model.n_heads = 4
  c.model.max_len = 256
  c.data.seq_len = 256
  c.train.steps = 400
  c.train.batch_size = 16
  c.train.eval_every = 100
  c.train.sample_tokens = 0
  c.optim.lr = 3e-3
  c.optim.warmup_steps = 50
  return c
