"""Opens an existing run directory for `launch.py eval` and `launch.py sample`.

`load_run(run_dir)` reads the run's `config.json`, rebuilds its experiment (corpus, tokenizer,
mesh, model) and restores the newest checkpoint that restores cleanly, without writing anything
into the directory (a run may still be training in it).
"""

import dataclasses
import sys
from typing import Any

import jax

from errors import UserError
from storage import as_path
from train import checkpoint
from train.config import validate
from train.run_dir import load_run_config
from train.setup import Experiment, build_experiment


@dataclasses.dataclass
class LoadedRun:
  exp: Experiment
  state: Any  # the TrainState of the checkpoint
  shardings: Any  # its shardings
  step: int


def load_run(run_dir, eval_batches: int | None = None) -> LoadedRun:
  """The run's experiment and its newest good checkpoint (UserError if it has none); `run_dir`
  is local or gs://."""
  run_dir = as_path(run_dir)
  if not run_dir.is_dir():
    raise UserError(f'{run_dir} is not a run directory; pass the --run_dir of a training run')
  config = load_run_config(run_dir)
  if eval_batches is not None:
    if eval_batches < 1:
      raise UserError(f'--eval_batches={eval_batches} must be at least 1')
    config.train.eval_batches = eval_batches
  validate(config)
  exp = build_experiment(config, progress=False)
  directory = checkpoint.checkpoint_dir(run_dir)
  with exp.mesh_context():
    abstract, shardings = exp.abstract_state()
    state, step, message = checkpoint.restore_latest(directory, abstract)
  if state is None:
    raise UserError(f'{run_dir} has no checkpoint yet; train it first (launch.py train '
                    f'--run_dir {run_dir})')
  if message and jax.process_index() == 0:
    print(message.replace('resumed from', 'using'), file=sys.stderr)
  return LoadedRun(exp=exp, state=state, shardings=shardings, step=step)
