"""Every knob of a sweep, with its default: the `sweep` section a sweep config adds to a run config.

A sweep config (e.g. configs/sweeps/lr_tiny.py) is a run config plus `c.sweep = sweep_section()`
with its search space filled in; experiments/sweep_space.py explains the space's spelling.
Any value here can be overridden on the command line, e.g. `--config.sweep.trials=8`.
"""

import ml_collections


def sweep_section() -> ml_collections.ConfigDict:
  s = ml_collections.ConfigDict()
  s.name = ''  # '' : the run config's name; names the study and the directory <run_root>/sweeps/<name>/
  # The search space mirrors the run config: each leaf is a config key and says how to vary it:
  #   'choice(1e-3, 3e-3, log=True)' | 'uniform(0.9, 0.99)' | 'loguniform(1e-4, 1e-1)' | 'int(1, 8)'
  s.space = ml_collections.ConfigDict()
  s.sampler = 'grid'  # grid (every combination of the choices) | random | tpe
  s.trials = 0  # trials to finish (complete, pruned or failed); 0: the whole grid (grid only)
  s.seed = 0  # seed of the random and TPE samplers
  s.metric = 'validation_loss'  # minimised: validation_loss | validation_bits_per_byte |
  #                               train_loss | train_bits_per_byte (of the run's final summary)
  s.pruner = 'none'  # none | median | successive_halving (on the validation loss at evaluations)
  s.prune_startup_trials = 2  # median: this many trials finish before any is pruned
  s.prune_warmup_steps = 0  # median: no trial is pruned before this step
  s.storage = ''  # '' : sqlite:///<sweep dir>/study.db; many machines: a PostgreSQL URL,
  #                 postgresql+psycopg://user@host:5432/db (also --storage URL)
  s.heartbeat_s = 10  # a worker records that its running trial is alive this often
  s.stale_after_s = 60  # a trial without a heartbeat for this long is failed and retried
  s.max_retries = 3  # retries of a trial whose worker vanished (SIGKILL, crash, lost machine)
  s.best_curves = 5  # loss curves of this many best trials in curves.png
  return s
