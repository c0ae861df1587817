"""An IsoFLOP study on the embedded default corpus, sized for a 2-core CPU in under an hour.

Byte-level Llama-style models from about 2e4 to 1e6 non-embedding parameters (a ladder of
head-dim-32 shapes, aspect ratio d_model/n_layers near 32), trained at three compute budgets on
the Python standard library, each run with a cosine schedule as long as itself:

    python launch.py scaling run --config configs/scaling/tiny_isoflop.py --dry_run   # the plan
    python launch.py scaling run --config configs/scaling/tiny_isoflop.py

Writes runs/scaling/tiny_isoflop/ (one run directory per point, trials.md) and its fit/
(scaling_fit.json, scaling_report.md, IsoFLOP, allocation, loss-compute and contour plots).
`--config.study.budgets=2e11,6e11 --config.study.sizes=3` is the smoke version CI runs.
"""

from configs import base
from configs.scaling.base import study_section


def get_config():
  c = base.get_config()
  c.name = 'tiny_isoflop'
  c.model.d_model, c.model.n_layers, c.model.n_heads = 64, 2, 2  # the ladder's base model
  c.model.max_len = 128
  c.data.seq_len = 128
  c.train.batch_size = 16
  c.train.log_every = 10
  c.train.eval_every = 0  # the final validation loss is the study's metric
  c.train.eval_batches = 8
  c.train.sample_tokens = 0
  c.checkpoint.every = 500
  c.optim.lr = 3e-3
  c.optim.warmup_steps = 20
  c.optim.min_lr_ratio = 0.1
  c.scaling.ladder_head_dim = 32
  c.scaling.ladder_aspect_ratio = 32.0

  c.study = study_section()
  c.study.budgets = '6e11,2e12,6e12'
  c.study.sizes = 7
  c.study.min_params = 2e4
  c.study.max_params = 1.5e6
  c.study.min_steps = 60
  return c
