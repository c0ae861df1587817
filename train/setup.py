"""Assembles a run from its config: data, tokenizer, mesh, rules, model, optimizer, jitted steps.

`build_experiment(config)` does every check that can fail before any compute starts (data
present, vocabulary fits, batch divides the mesh), so a bad run stops in its first second.
"""

import dataclasses
import functools
from typing import Any

import jax
import numpy as np
from etils import epath
from jax.sharding import NamedSharding

from data import loader
from data.manifest import load_manifest
from data.prepare import prepare
from data.tokenizers import Tokenizer, load_tokenizer
from errors import UserError
from train.parallel import Layout, abstract_state, build_layout, jit_train_step
from train.state import TrainState, init_sharded
from train.step import eval_step


@dataclasses.dataclass
class Experiment:
  config: Any
  layout: Layout  # mesh, rules, model, optimizer, schedule
  corpus_dir: epath.Path  # local or gs://
  manifest: dict
  tokenizer: Tokenizer
  train_tokens: np.ndarray
  validation_tokens: np.ndarray

  @property
  def model(self):
    return self.layout.model

  @property
  def model_cfg(self):
    return self.layout.model_cfg

  @property
  def batch_sharding(self) -> NamedSharding:
    return self.layout.batch_sharding

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

  def abstract_state(self) -> tuple[TrainState, TrainState]:
    """(state as ShapeDtypeStructs carrying their shardings, the shardings): a restore target."""
    return abstract_state(self.layout, self.config.seed, self.config.data.seq_len)

  def init_state(self, shardings: TrainState) -> TrainState:
    """A fresh state with `shardings` (from `abstract_state`; inside `mesh_context`)."""
    return init_sharded(self.model_cfg, self.layout.tx, self.config.seed,
                        self.config.data.seq_len, shardings)

  def mesh_context(self):
    """Enter with `with exp.mesh_context():` around anything that traces the model."""
    return self.layout.context()

  def jit_train_step(self, shardings: TrainState):
    return jit_train_step(self.layout, shardings, self.config.train.grad_accum_steps)

  def jit_eval_step(self, shardings: TrainState):
    return jax.jit(functools.partial(eval_step, model=self.model),
                   in_shardings=(shardings.params, self.batch_sharding))


def build_experiment(config, progress: bool = True) -> Experiment:
  """Everything a run needs, with every user mistake reported before compute starts."""
  layout = build_layout(config)
  corpus_dir = prepare(config.data, progress=progress and jax.process_index() == 0)
  manifest = load_manifest(corpus_dir)
  if manifest['vocab_size'] > layout.model_cfg.vocab_size:
    raise UserError(f"the tokenizer has {manifest['vocab_size']:,} tokens but model.vocab_size="
                    f'{layout.model_cfg.vocab_size:,}; set --config.model.vocab_size='
                    f"{manifest['vocab_size']} or more")
  train_tokens = loader.open_split(corpus_dir, 'train', config.data.mirror_dir)
  validation_tokens = loader.open_split(corpus_dir, 'validation', config.data.mirror_dir)
  for split, tokens in (('train', train_tokens), ('validation', validation_tokens)):
    loader.check_long_enough(tokens.size, config.data.seq_len, f'the {split} split')
  return Experiment(config=config, layout=layout, corpus_dir=corpus_dir, manifest=manifest,
                    tokenizer=load_tokenizer(config.data.tokenizer, corpus_dir),
                    train_tokens=train_tokens, validation_tokens=validation_tokens)
