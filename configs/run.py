"""The config of an existing run directory, e.g. to go on training a converted Hugging Face model
in the run directory `launch.py convert` wrote (its step-0 checkpoint is resumed):

    python launch.py train --config configs/run.py:runs/tiny-llama --run_dir runs/tiny-llama --config.train.steps=100

`get_config(run_dir)` is the run's config.json on top of configs/base.py (as `eval` and `sample`
read it, train/run_dir.load_run_config); overrides apply on top, and the keys a resumed run may
change are those of train/run_dir.SAFE_TO_CHANGE. To start a new run from a run's or a Hugging
Face folder's weights with another config, use train.init_from instead.
"""


def get_config(run_dir: str):
  from train.run_dir import load_run_config  # pylint: disable=import-outside-toplevel
  return load_run_config(run_dir)
