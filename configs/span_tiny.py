"""A T5-style encoder-decoder trained by span corruption on the Python standard library.

    python launch.py train --config configs/span_tiny.py

Each 256-byte window loses 15% of its bytes in spans of mean length 3 (38 bytes in 13 spans),
each span replaced by a sentinel id from the top of the vocabulary (256 bytes + 13 sentinels:
vocab_size 272); the decoder writes the spans back. `--config.model.kind=encoder` trains a
bidirectional encoder alone on the same noise (masked-span prediction).
"""

from configs import tiny


def get_config():
  c = tiny.get_config()  # the default model's shape, steps and optimizer
  c.name = 'span_tiny'
  c.task.name = 'span_corruption'
  c.model.kind = 'encoder_decoder'
  c.model.vocab_size = 272
  c.train.sample_tokens = 0
  return c
