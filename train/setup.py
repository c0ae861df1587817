"""Assembles a run from its config: data, tokenizer, mesh, rules, model, optimizer, jitted steps.

`build_experiment(config)` does every check that can fail before any compute starts (data
present, vocabulary fits, batch divides the mesh), so a bad run stops in its first second.
"""

import dataclasses
import functools
from pathlib import Path
from typing import Any, Callable

import flax.linen as nn
import jax
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from data import loader
from data.manifest import load_manifest
from data.prepare import prepare
from data.tokenizers import Tokenizer, load_tokenizer
from errors import UserError
from models.config import TransformerConfig
from models.transformer import Transformer
from sharding.mesh import build_mesh
from sharding.rules import rules_for
from train.optim import make_optimizer
from train.schedules import make_schedule
from train.state import TrainState, create_state
from train.step import eval_step, train_step


@dataclasses.dataclass
class Experiment:
  config: Any
  model_cfg: TransformerConfig
  model: Transformer
  tx: optax.GradientTransformation
  schedule: Callable
  mesh: Mesh
  rules: tuple
  corpus_dir: Path
  manifest: dict
  tokenizer: Tokenizer
  train_tokens: np.ndarray
  validation_tokens: np.ndarray

  @property
  def batch_sharding(self) -> NamedSharding:
    return NamedSharding(self.mesh, PartitionSpec(('data', 'fsdp'), None))

  def global_batch(self, local_rows: np.ndarray) -> jax.Array:
    """This process's rows -> one global array sharded over the batch axes."""
    global_shape = (self.config.train.batch_size, local_rows.shape[1])
    return jax.make_array_from_process_local_data(self.batch_sharding, local_rows, global_shape)

  def train_batch(self, step: int) -> jax.Array:
    t = self.config.train
    rows = loader.train_batch(self.train_tokens, self.config.seed, step, t.batch_size,
                              self.config.data.seq_len, jax.process_index(), jax.process_count())
    return self.global_batch(rows)

  def eval_batches(self):
    t = self.config.train
    for rows in loader.eval_batches(self.validation_tokens, t.eval_batches, t.batch_size,
                                    self.config.data.seq_len, jax.process_index(),
                                    jax.process_count()):
      yield self.global_batch(rows)

  def init_state(self) -> tuple[TrainState, TrainState]:
    return create_state(self.model_cfg, self.tx, self.config.seed, self.config.data.seq_len,
                        self.mesh, self.rules)

  def mesh_context(self):
    """Enter with `with exp.mesh_context():` around anything that traces the model."""
    return _MeshAndRules(self.mesh, self.rules)

  def jit_train_step(self, shardings: TrainState):
    step = functools.partial(train_step, model=self.model, tx=self.tx, schedule=self.schedule,
                             accum_steps=self.config.train.grad_accum_steps)
    return jax.jit(step, in_shardings=(shardings, self.batch_sharding),
                   out_shardings=(shardings, None), donate_argnums=(0,))

  def jit_eval_step(self, shardings: TrainState):
    return jax.jit(functools.partial(eval_step, model=self.model),
                   in_shardings=(shardings.params, self.batch_sharding))


class _MeshAndRules:
  def __init__(self, mesh, rules):
    self._mesh_ctx, self._rules_ctx = jax.set_mesh(mesh), nn.logical_axis_rules(rules)

  def __enter__(self):
    self._mesh_ctx.__enter__()
    self._rules_ctx.__enter__()

  def __exit__(self, *exc):
    self._rules_ctx.__exit__(*exc)
    return self._mesh_ctx.__exit__(*exc)


def _check_mesh_fits(config, mesh: Mesh, model_cfg: TransformerConfig) -> None:
  batch_shards = mesh.shape['data'] * mesh.shape['fsdp']
  t = config.train
  micro_batch = t.batch_size // t.grad_accum_steps
  if micro_batch % batch_shards:
    raise UserError(f'train.batch_size={t.batch_size} (micro-batch {micro_batch}) is not divisible '
                    f'by the data-parallel size {batch_shards} (mesh data x fsdp); change one')
  tensor = mesh.shape['tensor']
  for name, size in (('n_heads', model_cfg.n_heads), ('d_ff', model_cfg.d_ff)):
    if size % tensor:
      raise UserError(f'model.{name}={size} is not divisible by the tensor axis ({tensor}); '
                      'change mesh.tensor or the model')


def build_experiment(config, progress: bool = True) -> Experiment:
  """Everything a run needs, with every user mistake reported before compute starts."""
  model_cfg = TransformerConfig.from_dict(config.model)
  mesh = build_mesh(config.mesh)
  _check_mesh_fits(config, mesh, model_cfg)
  corpus_dir = prepare(config.data, progress=progress and jax.process_index() == 0)
  manifest = load_manifest(corpus_dir)
  if manifest['vocab_size'] > model_cfg.vocab_size:
    raise UserError(f"the tokenizer has {manifest['vocab_size']:,} tokens but model.vocab_size="
                    f'{model_cfg.vocab_size:,}; set --config.model.vocab_size='
                    f"{manifest['vocab_size']} or more")
  train_tokens = loader.open_split(corpus_dir, 'train')
  validation_tokens = loader.open_split(corpus_dir, 'validation')
  for split, tokens in (('train', train_tokens), ('validation', validation_tokens)):
    if tokens.size < config.data.seq_len + 2:
      raise UserError(f'data.seq_len={config.data.seq_len} is longer than the {split} split '
                      f'({tokens.size:,} tokens); lower data.seq_len or use a larger corpus')
  total_steps = config.train.steps
  return Experiment(
      config=config, model_cfg=model_cfg, model=Transformer(model_cfg),
      tx=make_optimizer(config.optim, total_steps),
      schedule=make_schedule(config.optim, total_steps), mesh=mesh,
      rules=rules_for(config.sharding.rules, model_cfg.n_kv_heads, mesh.shape['tensor']),
      corpus_dir=corpus_dir, manifest=manifest,
      tokenizer=load_tokenizer(config.data.tokenizer, corpus_dir),
      train_tokens=train_tokens, validation_tokens=validation_tokens)
