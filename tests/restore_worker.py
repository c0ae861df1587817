"""Trains a tiny model for a few steps on one mesh, checkpoints, restores on another; JSON lines.

    python tests/restore_worker.py --devices 8 --jobs '[{"model": "gpt2", "rules": "fsdp",
        "mesh": [1, 8, 1], "steps": [0, 2], "save": "DIR"}, {"model": "gpt2", "rules": "dp",
        "mesh": [8, 1, 1], "steps": [2, 4], "restore": "DIR"}]'

A job runs synthetic batches steps[0]..steps[1]-1 (those of tests/sharding_worker.py) on its
mesh and rule set, starting from a fresh sharded state, or, with "restore", from the newest
checkpoint in that directory restored onto its own shardings (`train/checkpoint.py`, an
abstract state from `train/experiment.py` as the target); with "save" it checkpoints at the end.
Each job prints its losses and the step it started from.
"""

import argparse
import json
import os
import sys

import sharding_worker  # tests/ is this script's directory, hence on sys.path

STEPS = 4


def run_job(job: dict, devices):
  import jax
  from train import checkpoint
  from train.experiment import build_experiment
  config = sharding_worker.tiny_config(job['model'], job['rules'], tuple(job['mesh']))
  exp = build_experiment(config, with_data=False, devices=devices)
  if job.get('restore'):
    state, step, _ = checkpoint.restore_latest(job['restore'], exp.abstract_state)
    assert step == job['steps'][0], (step, job)
  else:
    state = exp.init_state()
  batches = sharding_worker.synthetic_batches(config.model.vocab_size, STEPS)
  rows = sharding_worker.BATCH // jax.process_count()
  first = jax.process_index() * rows
  losses = []
  with exp.mesh_context():
    for tokens in batches[job['steps'][0]:job['steps'][1]]:
      batch = jax.make_array_from_process_local_data(
          exp.batch_sharding, tokens[first:first + rows], tokens.shape)
      state, metrics = exp.train_step(state, batch)
      losses.append(float(metrics['loss']))
  if job.get('save'):
    manager = checkpoint.open_manager(job['save'])
    checkpoint.save(manager, state, checkpoint.make_meta(config, int(state.step), {}))
    manager.wait_until_finished()
    manager.close()
  return losses, int(state.step)


def main(argv):
  parser = argparse.ArgumentParser()
  parser.add_argument('--devices', type=int, default=8, help='simulated CPU devices')
  parser.add_argument('--jobs', required=True)
  args = parser.parse_args(argv)
  os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                             f' --xla_force_host_platform_device_count={args.devices}'
                             ' --xla_backend_optimization_level=0'
                             ' --xla_llvm_disable_expensive_passes=true')
  import jax
  import numpy as np
  for job in json.loads(args.jobs):
    losses, final_step = run_job(job, jax.devices()[:int(np.prod(job['mesh']))])
    print(json.dumps(dict(job, losses=losses, final_step=final_step)), flush=True)


if __name__ == '__main__':
  main(sys.argv[1:])
