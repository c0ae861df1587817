"""`launch.py convert`: a Hugging Face model folder <-> a run directory of this codebase.

Hugging Face -> run: `to_run_dir(folder, run_dir)` writes `config.json` (configs/base.py with the
model.* settings of the folder's config.json and data.tokenizer pointing at the copied
tokenizer.json), `tokenizer.json` and a step-0 checkpoint in train/checkpoint.py's format (the
weights and a fresh optimizer state), so `eval`, `sample` and `train` (which resumes from it)
work on it. The weights are read one memory-mapped tensor at a time (models/hf_checkpoint.py).

run -> Hugging Face: `to_hf_folder(run_dir, folder)` restores the parameters of the newest
checkpoint (or of `step`) without the optimizer state and writes `config.json`, the weights as
`model.safetensors` (or shards of at most `max_shard_mb`, made and written one at a time, with
model.safetensors.index.json), `tokenizer.json` and a `tokenizer_config.json` naming its
BOS / EOS tokens, which `transformers` loads.
"""

import json
import shutil
from pathlib import Path

import jax
import ml_dtypes
import numpy as np

from data.tokenizers import HFTokenizer, load_tokenizer
from errors import UserError
from models import hf_checkpoint, hf_config
from models.hf_safetensors import SINGLE_FILE, write_index, write_tensors
from storage import as_path
from train import checkpoint
from train.experiment import build_experiment
from train.init_from import (is_run_dir, restore_params, source_settings, tokenizer_of_run,
                             unscanned)
from train.config import validate
from train.run_dir import load_run_config, write_run_config
from train.state import TrainState

EXPORT_DTYPES = {'float32': np.float32, 'bfloat16': ml_dtypes.bfloat16, 'float16': np.float16}


def convert(source, dest, step: int | None = None, dtype: str = 'float32',
            max_shard_mb: int = 5000, seq_len: int | None = None,
            data: str | None = None) -> int:
  """`launch.py convert SOURCE DEST`: the direction follows from what SOURCE is."""
  if as_path(dest).exists() and any(as_path(dest).iterdir()):
    raise UserError(f'{dest} exists and is not empty; pass a new destination folder')
  if is_run_dir(source):
    if seq_len is not None or data is not None:
      raise UserError('--seq_len and --data apply to a Hugging Face -> run directory conversion')
    to_hf_folder(source, dest, step, dtype, max_shard_mb)
  else:
    if step is not None or dtype != 'float32':
      raise UserError('--step and --dtype apply to a run directory -> Hugging Face conversion')
    to_run_dir(source, dest, seq_len, data)
  return 0


def to_run_dir(folder, run_dir, seq_len: int | None = None, data: str | None = None) -> None:
  """Converts the Hugging Face folder into a new run directory (see the module docstring)."""
  from configs.base import get_config  # pylint: disable=import-outside-toplevel
  from train.init_from import with_source_model  # pylint: disable=import-outside-toplevel
  folder, run_dir = Path(folder), as_path(run_dir)
  settings, tokenizer = source_settings(folder)
  config = get_config()
  config.name = run_dir.name
  config = with_source_model(config, settings, str((run_dir / 'tokenizer.json').absolute()))
  config.data.seq_len = min(seq_len or config.data.seq_len, config.model.max_len)
  config.data.source = data or config.data.source
  vocab = HFTokenizer.load(tokenizer).vocab_size
  if vocab > config.model.vocab_size:
    raise UserError(f'{folder}/tokenizer.json has {vocab} tokens, more than the model\'s '
                    f'vocab_size {config.model.vocab_size}; pass the tokenizer of this model')
  validate(config)
  exp = build_experiment(config, with_data=False, progress=False)
  leaves, tree = jax.tree.flatten(hf_checkpoint.load_folder_params(folder, exp.model_cfg))
  shardings = tree.flatten_up_to(exp.state_shardings.params)
  for i, sharding in enumerate(shardings):  # one tensor at a time: never two copies
    leaves[i] = jax.device_put(leaves[i], sharding)
  params = jax.tree.unflatten(tree, leaves)
  del leaves
  replicated = exp.state_shardings.step
  with exp.mesh_context():
    opt_state = jax.jit(exp.tx.init, out_shardings=exp.state_shardings.opt_state)(params)
  rng = jax.random.split(jax.random.PRNGKey(config.seed))[1]  # as train/state.make_init_fn
  zero = jax.device_put(np.zeros((), np.int32), replicated)
  state = TrainState(step=zero, params=params, opt_state=opt_state,
                     rng=jax.device_put(rng, replicated), skipped_steps=zero)
  run_dir.mkdir(parents=True, exist_ok=True)
  shutil.copyfile(tokenizer, run_dir / 'tokenizer.json')
  write_run_config(run_dir, config)
  manager = checkpoint.open_manager(checkpoint.checkpoint_dir(run_dir), config.checkpoint)
  checkpoint.save(manager, state, checkpoint.make_meta(config, 0, {}))
  manager.close()
  n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
  print(f'{folder} -> {run_dir}: {hf_config.family_of(hf_config.read_config(folder))} '
        f'model, {n_params:,} parameters, step-0 checkpoint, data.seq_len '
        f'{config.data.seq_len}')


def to_hf_folder(run_dir, folder, step: int | None = None, dtype: str = 'float32',
                 max_shard_mb: int = 5000) -> None:
  """Converts a run's newest good checkpoint (or `step`) into a Hugging Face folder."""
  if dtype not in EXPORT_DTYPES:
    raise UserError(f'--dtype {dtype} is not one of {", ".join(EXPORT_DTYPES)}')
  config = load_run_config(run_dir)
  validate(config)
  exp = build_experiment(config, with_data=False, progress=False)
  cfg = exp.model_cfg
  family = hf_config.family_of_model(cfg)
  tokenizer = load_tokenizer(tokenizer_of_run(config))
  with exp.mesh_context():
    params, step = restore_params(run_dir, exp.abstract_state.params, step)
  params = unscanned(params, cfg.n_layers) if cfg.scan_layers else params
  folder = Path(folder)
  folder.mkdir(parents=True, exist_ok=True)
  as_numpy = lambda tensors: [(name, np.asarray(array).astype(EXPORT_DTYPES[dtype]))
                              for name, array in tensors]
  groups = [as_numpy(hf_checkpoint.export_top(params, cfg, family))]
  groups += (as_numpy(hf_checkpoint.export_layer(params[f'layer_{i}'], i, cfg, family))
             for i in range(cfg.n_layers))
  n_shards = _write_shards(folder, groups, max_shard_mb * 2**20)
  bos_id = getattr(tokenizer, 'bos_id', None)
  hf = hf_config.hf_config(cfg, bos_id, tokenizer.eot_id)
  hf['torch_dtype'] = dtype
  (folder / 'config.json').write_text(json.dumps(hf, indent=2) + '\n')
  _write_tokenizer(tokenizer, folder)
  print(f'{run_dir} (step {step}) -> {folder}: {family} model in {n_shards} safetensors '
        f'file(s), {dtype}')


def _write_shards(folder: Path, groups, max_bytes: int) -> int:
  """Writes the tensor groups (a group is never split) into files of at most `max_bytes`;
  returns the number of files. Each file's arrays are made (from the parameters) only when it
  is written."""
  shards, current, size = [], [], 0
  paths, weight_map, total = [], {}, 0
  for group in groups:
    group_bytes = sum(a.nbytes for _, a in group)
    if current and size + group_bytes > max_bytes:
      shards.append(current)
      paths.append(folder / f'part-{len(paths)}.tmp')
      total += write_tensors(paths[-1], current)
      current, size = [], 0
    current += group
    size += group_bytes
  if current:
    paths.append(folder / f'part-{len(paths)}.tmp')
    shards.append(current)
    total += write_tensors(paths[-1], current)
  if len(paths) == 1:
    paths[0].rename(folder / SINGLE_FILE)
    return 1
  for index, (path, shard) in enumerate(zip(paths, shards)):
    name = f'model-{index + 1:05d}-of-{len(paths):05d}.safetensors'
    path.rename(folder / name)
    weight_map.update({tensor: name for tensor, _ in shard})
  write_index(folder, weight_map, total)
  return len(paths)


def _write_tokenizer(tokenizer, folder: Path) -> None:
  """tokenizer.json (a byte-level one for the bytes tokenizer) and tokenizer_config.json."""
  if isinstance(tokenizer, HFTokenizer):
    core = tokenizer.tokenizer
  else:
    core = byte_tokenizer()
  core.save(str(folder / 'tokenizer.json'))
  special = {}
  bos_id = getattr(tokenizer, 'bos_id', None)
  if bos_id is not None:
    special['bos_token'] = core.id_to_token(bos_id)
  if tokenizer.eot_id is not None:
    special['eos_token'] = core.id_to_token(tokenizer.eot_id)
  config = {'tokenizer_class': 'PreTrainedTokenizerFast', 'add_bos_token': bos_id is not None,
            'model_max_length': 10**9, **special}
  (folder / 'tokenizer_config.json').write_text(json.dumps(config, indent=2) + '\n')


def byte_tokenizer():
  """A `tokenizers.Tokenizer` whose ids are the UTF-8 bytes (data/tokenizers.ByteTokenizer):
  a byte-level BPE with the 256 byte symbols as its vocabulary, in byte order, and no merges."""
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers
  alphabet = sorted(pre_tokenizers.ByteLevel.alphabet(),
                    key=lambda ch: _BYTE_OF_SYMBOL[ch])
  core = Tokenizer(models.BPE(vocab={ch: i for i, ch in enumerate(alphabet)}, merges=[]))
  core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
  core.decoder = decoders.ByteLevel()
  return core


def _bytes_to_symbols() -> dict[str, int]:
  """GPT-2's byte -> printable symbol table (what the ByteLevel pre-tokenizer maps bytes to),
  inverted: symbol -> byte."""
  printable = (list(range(ord('!'), ord('~') + 1)) + list(range(ord('¡'), ord('¬') + 1))
               + list(range(ord('®'), ord('ÿ') + 1)))
  symbols, extra = {}, 0
  for byte in range(256):
    if byte in printable:
      symbols[chr(byte)] = byte
    else:
      symbols[chr(256 + extra)] = byte
      extra += 1
  return symbols


_BYTE_OF_SYMBOL = _bytes_to_symbols()
