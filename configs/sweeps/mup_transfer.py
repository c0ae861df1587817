"""Learning-rate transfer across width: SP against muP, 4 widths x 7 learning rates each.

A 2-layer byte-level model (GELU MLP, so d_ff = 4 d_model exactly; 4 heads, head_dim growing with
width) at d_model 32, 64, 128 and 256, each under standard parameterization and under muP with
base width 32 (where the two are the same model), over 7 learning rates a factor 2 apart: 56
trials of 200 steps of 16 x 64 tokens on the Python standard library.

    python launch.py sweep --config configs/sweeps/mup_transfer.py --workers 2
    python -m experiments.mup_transfer_plot runs/sweeps/mup_transfer --out docs/mup_transfer.png

Under muP the best learning rate should stay put as width grows and wider should be better at
it; under SP the best rate should drift down. README "muP" has the measured table and plot.
"""

from configs import base
from configs.sweeps.base import sweep_section


def get_config():
  c = base.get_config()
  c.name = 'mup_transfer'
  c.model.d_model = 32
  c.model.n_layers = 2
  c.model.n_heads = 4
  c.model.mlp = 'gelu'
  c.model.max_len = 64
  c.model.mup_base_width = 32
  c.data.seq_len = 64
  c.train.steps = 200
  c.train.batch_size = 16
  c.train.log_every = 25
  c.train.eval_every = 0
  c.train.eval_batches = 8
  c.train.sample_tokens = 0
  c.checkpoint.every = 0
  c.optim.warmup_steps = 20

  c.sweep = sweep_section()
  c.sweep.space.model = {'d_model': 'choice(32, 64, 128, 256, log=True)',
                         'parameterization': "choice('sp', 'mup')"}
  c.sweep.space.optim = {
      'lr': 'choice(1.25e-3, 2.5e-3, 5e-3, 1e-2, 2e-2, 4e-2, 8e-2, log=True)'}
  c.sweep.sampler = 'grid'
  return c
