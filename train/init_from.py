"""Fine-tuning: start a run from the weights of another run or of a Hugging Face folder.

`train.init_from` names the source: a run directory (its newest good checkpoint) or a Hugging
Face model folder (LlamaForCausalLM / GPT2LMHeadModel, read as `launch.py convert` reads it).
The run then takes its model shape and its tokenizer from the source (`with_source_model`:
every `model.*` key but those that only change how it computes, listed in `COMPUTE_ONLY`,
and `data.tokenizer`), so any config can fine-tune any source; the written config.json holds
what was taken, and a resumed run takes the same again. Only a run that starts (no checkpoint
in its directory) uses the source: its step is 0, its optimizer state fresh, and
`start_from_source` swaps the initialised parameters for the source's.
"""

import copy
import json
import sys

import jax
import numpy as np

from data.prepare import corpus_path
from errors import UserError
from models.config import TransformerConfig
from models.hf_checkpoint import load_folder_params
from models.hf_config import model_settings, read_config
from storage import as_path

COMPUTE_ONLY = ('dtype', 'param_dtype', 'scan_layers', 'remat', 'attention_query_chunk',
                'attention_cache_bytes', 'dropout', 'init_std')


def is_run_dir(path) -> bool:
  """True for a run directory (its config.json has a `model` section), False for a Hugging
  Face folder; UserError for neither."""
  path = as_path(path)
  config = path / 'config.json'
  if not config.is_file():
    raise UserError(f'{path} has no config.json: train.init_from (and launch.py convert) take a '
                    'run directory or a Hugging Face model folder')
  try:
    return isinstance(json.loads(config.read_text()).get('model'), dict)
  except (UnicodeDecodeError, json.JSONDecodeError, AttributeError):
    raise UserError(f'{config} is not a config; pass a run directory or a Hugging Face '
                    'model folder') from None


def tokenizer_of_run(config) -> str:
  """A run's data.tokenizer as a spec that works from anywhere ('bpe' names its file)."""
  spec = config.data.tokenizer
  if spec == 'bytes':
    return spec
  path = corpus_path(config.data) / 'tokenizer.json' if spec == 'bpe' else as_path(spec)
  return str(path.absolute())


def source_settings(source) -> tuple[dict, str]:
  """(the model.* settings, the data.tokenizer spec) of a run directory or a HF folder."""
  source = as_path(source)
  if is_run_dir(source):
    from train.run_dir import load_run_config  # pylint: disable=import-outside-toplevel
    config = load_run_config(source)
    return dict(config.model), tokenizer_of_run(config)
  settings = model_settings(read_config(source))
  tokenizer = source / 'tokenizer.json'
  if not tokenizer.is_file():
    raise UserError(f'{source} has no tokenizer.json; save the tokenizer with the model '
                    '(tokenizer.save_pretrained) or convert a folder that has one')
  return settings, str(tokenizer.absolute())


def with_source_model(config, settings: dict, tokenizer: str):
  """A copy of `config` whose model shape and tokenizer are the source's."""
  config = copy.deepcopy(config)
  for key, value in settings.items():
    if key not in COMPUTE_ONLY:
      config.model[key] = value
  config.data.tokenizer = tokenizer
  return config


def apply_init_from(config):
  """`config` with its model and tokenizer taken from train.init_from (unchanged if unset)."""
  if not config.train.init_from:
    return config
  settings, tokenizer = source_settings(config.train.init_from)
  from train.config import validate  # pylint: disable=import-outside-toplevel
  config = with_source_model(config, settings, tokenizer)
  validate(config)
  return config


def source_params(source, model_cfg: TransformerConfig) -> dict:
  """The source's parameters as nested dicts of numpy arrays, unscanned."""
  if not is_run_dir(source):
    return load_folder_params(source, model_cfg)
  from train.experiment import build_experiment  # pylint: disable=import-outside-toplevel
  from train.run_dir import load_run_config  # pylint: disable=import-outside-toplevel
  exp = build_experiment(load_run_config(source), with_data=False, progress=False)
  with exp.mesh_context():
    params, _ = restore_params(source, exp.abstract_state.params)
  params = jax.tree.map(np.asarray, params)
  return unscanned(params, exp.model_cfg.n_layers) if exp.model_cfg.scan_layers else params


def restore_params(run_dir, abstract_params, step: int | None = None):
  """(the parameters of the run's newest checkpoint or of `step`, that step), reading none of
  the optimizer state (orbax partial restore): a third of the memory of the whole state."""
  import logging  # pylint: disable=import-outside-toplevel
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
  from train.checkpoint import checkpoint_dir  # pylint: disable=import-outside-toplevel
  directory = checkpoint_dir(run_dir)
  if not directory.is_dir():
    raise UserError(f'{run_dir} has no checkpoint; train it or convert into it')
  absl_logger = logging.getLogger('absl')
  level = absl_logger.level
  absl_logger.setLevel(logging.ERROR)  # read_only is worth no warning
  try:
    manager = ocp.CheckpointManager(
        directory.absolute(), options=ocp.CheckpointManagerOptions(read_only=True),
        item_handlers={'state': ocp.PyTreeCheckpointHandler()})
  finally:
    absl_logger.setLevel(level)
  steps = sorted(manager.all_steps())
  step = steps[-1] if step is None and steps else step
  if step not in steps:
    raise UserError(f'{directory} has no checkpoint of step {step}; it has '
                    f'{", ".join(map(str, steps)) or "none"}')
  item = {'params': abstract_params}
  restore_args = jax.tree.map(lambda s: ocp.ArrayRestoreArgs(
      sharding=s.sharding, global_shape=s.shape, dtype=s.dtype), item)
  try:
    restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
        item=item, restore_args=restore_args, partial_restore=True)))
  except Exception as e:  # pylint: disable=broad-except  # a damaged or foreign checkpoint
    raise UserError(f'checkpoint step {step} in {directory} does not restore '
                    f'({" ".join(str(e).split())[:160]}); pick another --step') from None
  return restored['state']['params'], step


def unscanned(params: dict, n_layers: int) -> dict:
  """Parameters of a scanned stack ('layers', leading axis) as 'layer_0' ... 'layer_{N-1}'."""
  out = {k: v for k, v in params.items() if k != 'layers'}
  for i in range(n_layers):
    out[f'layer_{i}'] = jax.tree.map(lambda x, i=i: x[i], params['layers'])
  return out


def scanned(params: dict, n_layers: int) -> dict:
  """The reverse of `unscanned`."""
  out = {k: v for k, v in params.items() if not k.startswith('layer_')}
  out['layers'] = jax.tree.map(lambda *xs: np.stack(xs),
                               *[params[f'layer_{i}'] for i in range(n_layers)])
  return out


def start_from_source(exp, state):
  """`state` (freshly initialised, step 0) with the parameters of train.init_from."""
  source = exp.config.train.init_from
  params = source_params(source, exp.model_cfg)
  if exp.model_cfg.scan_layers:
    params = scanned(params, exp.model_cfg.n_layers)

  def take(path, like):
    value = params
    for key in path:
      value = value[key.key]
    if value.shape != like.shape:
      raise UserError(f'{source}: {"/".join(k.key for k in path)} has shape {value.shape}, '
                      f'the model here {like.shape}')
    return value.astype(like.dtype)

  loaded = jax.tree_util.tree_map_with_path(take, exp.abstract_state.params)
  if jax.process_index() == 0:
    print(f'initialised from {source} (step 0, fresh optimizer state)', file=sys.stderr,
          flush=True)
  placed = jax.tree.map(lambda value, sharding: jax.make_array_from_callback(
      value.shape, sharding, lambda index: value[index]), loaded, exp.state_shardings.params)
  return state.replace(params=placed)
