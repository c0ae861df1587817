"""A classifier that starts from a trained run (`task.init_from`): its shape and its weights.

`adopt_model(config)` copies the trained run's model section (and its tokenizer, resolved to a
file when it was a BPE trained on its corpus) into the classifier's config before anything is
built, so the classifier's config.json describes its own model and later commands (resume,
`train/classify.predict`) never need the trained run again. An encoder-decoder lends its encoder
(model.kind becomes 'encoder'). `with_backbone(exp, params)` then replaces the freshly
initialised backbone of the classifier's parameters by the trained run's latest good
checkpoint, restored onto the classifier's own mesh and shardings; the head stays as
initialised.
"""

import jax

from errors import UserError
from storage import as_path
from train import checkpoint
from train.run_dir import load_run_config

_ENCODER_OF = 'encoder'  # EncoderDecoder's encoder submodule


def _source_config(config):
  source = as_path(config.task.init_from)
  if not (source / 'config.json').exists():
    raise UserError(f'task.init_from={config.task.init_from} is not a run directory (no '
                    'config.json); pass the --run_dir of a trained run')
  source_config = load_run_config(source)
  if source_config.task.name == 'classify':
    raise UserError(f'task.init_from={config.task.init_from} is a classifier; start from a '
                    'language model or span-corruption run')
  return source_config


def adopt_model(config) -> None:
  """Sets config.model and config.data.tokenizer to those of the run in task.init_from."""
  from train.init_from import tokenizer_of_run  # pylint: disable=import-outside-toplevel
  source_config = _source_config(config)
  for key, value in source_config.model.items():
    config.model[key] = value
  if config.model.kind == 'encoder_decoder':
    config.model.kind = 'encoder'
  config.data.tokenizer = tokenizer_of_run(source_config)


def with_backbone(exp, params):
  """`params` with params['backbone'] replaced by the trained run's (same shardings)."""
  from train.experiment import build_experiment  # pylint: disable=import-outside-toplevel
  source_config = _source_config(exp.config)
  source_config.mesh = exp.config.mesh
  source_config.sharding = exp.config.sharding
  source_config.train.batch_size = exp.config.train.batch_size
  source_config.train.grad_accum_steps = 1
  source_exp = build_experiment(source_config, with_data=False,
                                devices=list(exp.mesh.devices.flat))
  with source_exp.mesh_context():
    state, step, _ = checkpoint.restore_latest(
        checkpoint.checkpoint_dir(as_path(exp.config.task.init_from)), source_exp.abstract_state)
  if state is None:
    raise UserError(f'task.init_from={exp.config.task.init_from} has no checkpoint; train it '
                    'first')
  source = state.params
  if source_config.model.kind == 'encoder_decoder':
    source = source[_ENCODER_OF]
  target = params['backbone']
  missing = sorted(set(target) - set(source))
  if missing:
    raise UserError(f'the run in task.init_from has no {missing[0]!r} parameters; its model '
                    'does not match the classifier backbone')
  backbone = {name: source[name] for name in target}  # an untied lm_head is left behind
  shardings = jax.tree.map(lambda leaf: leaf.sharding, target)
  if jax.process_index() == 0:
    print(f'classifier backbone from {exp.config.task.init_from} (step {step})', flush=True)
  return {**params, 'backbone': jax.device_put(backbone, shardings)}
