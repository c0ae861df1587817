"""Every knob of an IsoFLOP study, with its default: the `study` section a scaling config adds.

A scaling config (e.g. configs/scaling/tiny_isoflop.py) is a run config, whose model is the base
of the ladder and whose data, batch, optimizer and warmup every run shares, plus
`c.study = study_section()`. `launch.py scaling run --config FILE` plans the runs
(experiments/isoflop_plan.py), trains them through the sweep engine (resumable, any number of
workers and hosts) and fits the scaling laws (experiments/scaling_fits.py). Any value here can
be overridden on the command line, e.g. `--config.study.budgets=1e12,3e12`.
"""

import ml_collections


def study_section() -> ml_collections.ConfigDict:
  s = ml_collections.ConfigDict()
  s.budgets = '1e12,3e12,1e13'  # training FLOPs of each IsoFLOP curve, comma-separated
  s.sizes = 5  # rungs of the model ladder (log-spaced non-embedding parameter counts)
  s.min_params = 2e5  # smallest target non-embedding parameter count
  s.max_params = 5e6  # largest target non-embedding parameter count
  s.min_steps = 50  # a (budget, size) point with fewer steps than this is left out, said why
  s.samples = 100  # bootstrap resamples of the fits' confidence intervals
  s.lbfgs_starts = 20  # approach 3: L-BFGS from the best this many of the paper's grid starts
  s.storage = ''  # '': an SQLite file in the study directory; many hosts: a PostgreSQL URL
  return s
