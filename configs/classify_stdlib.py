"""A text classifier: which standard-library package a source file belongs to (10 classes).

Write the labelled file, then train a byte-level bidirectional encoder with a mean-pooled head:

    python -m data.stdlib_labels --out data_cache/stdlib_packages.jsonl
    python launch.py train --config configs/classify_stdlib.py

The run directory (runs/classify_stdlib) gets classification.json (accuracy, macro and
per-class precision/recall/F1, the confusion matrix) and confusion_matrix.png; a quarter of
the files, chosen by the hash of their record name, are held out for them. To start from a
trained language model instead: --config.task.init_from=runs/tiny (its shape and tokenizer are
taken over; mean or last-token pooling).
"""

from configs import base


def get_config():
  c = base.get_config()
  c.name = 'classify_stdlib'
  c.task.name = 'classify'
  c.task.label_field = 'label'
  c.task.pooling = 'mean'
  c.data.source = 'data_cache/stdlib_packages.jsonl'
  c.data.text_field = 'text'
  c.data.validation_fraction = 0.25
  c.data.seq_len = 256  # the first 256 bytes of each file
  c.model.kind = 'encoder'
  c.model.d_model = 128
  c.model.n_layers = 2
  c.model.n_heads = 4
  c.model.max_len = 256
  c.train.steps = 300
  c.train.batch_size = 32
  c.train.eval_every = 100
  c.train.sample_tokens = 0
  c.optim.lr = 1e-3
  c.optim.warmup_steps = 30
  c.checkpoint.every = 100
  return c
