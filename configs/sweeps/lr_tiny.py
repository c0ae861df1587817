"""Learning rate x warmup on a small byte-level model: the U-shape of loss against learning rate.

A grid of 7 learning rates (1e-4 to 1e-1, log-spaced) by 2 warmups, 14 trials of a 2-layer
d=64 model on the Python standard library; 3 minutes on an idle 2-core CPU (17 minutes while
other jobs shared it):

    python launch.py sweep --config configs/sweeps/lr_tiny.py

It writes runs/sweeps/lr_tiny/ (one run directory per trial, trials.md, metric_vs_optim.lr.png,
best_config.py ...). Fewer trials: --config.sweep.space.optim.lr='choice(1e-3, 1e-2, log=True)'.
"""

from configs import base
from configs.sweeps.base import sweep_section


def get_config():
  c = base.get_config()
  c.name = 'lr_tiny'
  c.model.d_model = 64
  c.model.n_layers = 2
  c.model.n_heads = 2
  c.model.max_len = 64
  c.data.seq_len = 64
  c.train.steps = 500
  c.train.batch_size = 16
  c.train.log_every = 25
  c.train.eval_every = 100
  c.train.eval_batches = 8
  c.train.sample_tokens = 0
  c.checkpoint.every = 250

  c.sweep = sweep_section()
  c.sweep.space.optim = {'lr': 'choice(1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, log=True)',
                         'warmup_steps': 'choice(10, 100)'}
  c.sweep.sampler = 'grid'
  return c
