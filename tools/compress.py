"""Compression of a trained run: int8 weights for `eval` and `sample` (`--quantize int8`), and
one-shot magnitude pruning into a new run directory (`launch.py prune`).

`quantized(run, 'int8')` returns the loaded run with its params quantised (models/quantize.py)
and an eval step jitted for them; every model runner dequantises inside its jitted function, so
nothing else changes. `prune_run` prunes every projection matrix of a run's latest good
checkpoint to a sparsity (train/pruning.py) and writes a new run directory: the same config with
`prune.sparsity` set and pruning points at the checkpoint's step, so `eval`, `sample`, `generate`
and `serve` read it as any run, and training it further (with those `prune.*` values) keeps the
pruned weights at zero.
"""

import dataclasses
import functools
import json
import sys

import jax

from errors import UserError
from models.quantize import params_bytes, quantize_params
from storage import absolute, as_path
from train import checkpoint
from train.pruning import check_sparsity, prune_params, sparsity_of
from train.run_dir import write_run_config
from train.step import eval_step

QUANTIZATIONS = ('none', 'int8')


def quantized(run, quantization: str | None):
  """`run` (tools/trained_run.LoadedRun) with int8 params, or itself for None / 'none'."""
  if quantization in (None, 'none'):
    return run
  if quantization not in QUANTIZATIONS:
    raise UserError(f'--quantize={quantization} is not one of {", ".join(QUANTIZATIONS)}')
  with run.exp.mesh_context():
    params = quantize_params(run.state.params)
  exp = dataclasses.replace(run.exp, eval_step=jax.jit(functools.partial(eval_step,
                                                                         model=run.exp.model)))
  return dataclasses.replace(run, exp=exp, state=run.state.replace(params=params))


def prune_run(run_dir, sparsity: float, output_dir, as_json: bool = False) -> int:
  """`launch.py prune`: writes `output_dir`, the run's latest good checkpoint pruned."""
  from tools.trained_run import load_run  # pylint: disable=import-outside-toplevel
  check_sparsity(sparsity)
  output_dir = as_path(output_dir)
  if str(absolute(run_dir)) == str(absolute(output_dir)):
    raise UserError('--output_dir is the run directory itself; name a new directory')
  if output_dir.exists() and any(output_dir.iterdir()):
    raise UserError(f'{output_dir} exists and is not empty; name a new --output_dir')
  run = load_run(run_dir)
  config = run.exp.config
  config.prune.sparsity = float(sparsity)
  config.prune.start_step = config.prune.end_step = int(run.step)
  with run.exp.mesh_context():
    params = jax.jit(prune_params, out_shardings=run.exp.state_shardings.params)(
        run.state.params, sparsity)
    state = run.state.replace(params=params)
    output_dir.mkdir(parents=True, exist_ok=True)
    write_run_config(output_dir, config)
    manager = checkpoint.open_manager(checkpoint.checkpoint_dir(output_dir), config.checkpoint)
    meta = checkpoint.make_meta(config, run.step, {})
    checkpoint.save(manager, state, meta)
    manager.close()
  result = {'run_dir': str(run_dir), 'output_dir': str(output_dir), 'step': run.step,
            'sparsity': sparsity_of(params), 'params_bytes': params_bytes(params)}
  if as_json:
    print(json.dumps(result))
  else:
    print(f"pruned step {run.step} of {run_dir} to {result['sparsity']:.4f} sparsity of its "
          f'projection matrices; wrote {output_dir}', file=sys.stderr)
  return 0
