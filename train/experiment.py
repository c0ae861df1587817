"""One run, assembled from its config: mesh, rules, model, optimizer, state, jitted steps, data.

`build_experiment(config)` returns one `Experiment` holding everything the loop needs, the
train and eval steps already jitted with their shardings (`exp.train_step(state, batch)` is the
compiled step). It does every check that can fail before any compute starts (mesh fits the
devices, batch divides the mesh, data present, vocabulary fits), so a bad run stops in its first
second. The state is built abstractly (`jax.eval_shape`), each array's sharding derived from
the logical axis names and the rule set (train/state.py), and `init_state()` creates it
directly sharded: no array is ever whole on one device. `abstract_state` is also the restore
target of a checkpoint, on this or any other mesh.

What the model is trained for comes from `config.task` (train/objectives.py): the model module
(decoder, encoder, encoder-decoder, classifier) and the loss are the objective's; a classifier
reads a labelled file (`labelled`, train/labelled.py) instead of a token corpus.

The data part (the prepared corpus and its tokenizer) is optional: `build_experiment(config,
with_data=False)` is all `launch.py memory`, `bench` and the sharding tests need, without
preparing a corpus; `compile_train_step(exp)` compiles the step from shapes alone.
"""

import dataclasses
import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from etils import epath
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from data import loader
from data.manifest import load_manifest
from data.prepare import prepare
from data.tokenizers import Tokenizer, load_tokenizer
from errors import UserError
from models.attention import check_attention_platform, for_platform
from models.config import TransformerConfig
from models.cpu_attention import resolve_attention_impl
from models.cpu_matmul import resolve_matmul_impl
from models.transformer import Transformer
from sharding.mesh import build_mesh
from sharding.rules import Rules, batch_axes, rules_for
from train import labelled, objectives, pretrained
from train.labelled import LabelledSet
from train.mup import lr_multipliers
from train.objectives import Objective
from train.optim import make_optimizer, make_penalty
from train.pruning import make_prune_fn
from train.schedules import make_schedule
from train.state import TrainState, make_init_fn, state_shardings
from train.step import LM, eval_step, train_step


@dataclasses.dataclass
class Corpus:
  """A prepared corpus: its manifest (counts, unigram baseline), tokenizer and token splits."""
  directory: epath.Path  # local or gs://
  manifest: dict
  tokenizer: Tokenizer
  train_tokens: np.ndarray
  validation_tokens: np.ndarray


@dataclasses.dataclass
class Experiment:
  config: Any
  model_cfg: TransformerConfig
  model: Transformer
  tx: optax.GradientTransformation
  schedule: Callable  # step -> learning rate
  mesh: Mesh
  rules: Rules
  notes: list[str]  # where the rule set had to fall back (a dim that does not divide)
  abstract_state: TrainState  # ShapeDtypeStructs carrying their shardings: a restore target
  state_shardings: TrainState
  train_step: Callable  # jitted (state, batch) -> (state, metrics); donates the state
  eval_step: Callable  # jitted (params, batch) -> mean loss
  corpus: Corpus | None  # None when built with_data=False, or for a classifier
  objective: Objective = LM
  labelled: LabelledSet | None = None  # a classifier's data (with_data=True)

  @property
  def batch_sharding(self) -> NamedSharding:
    return batch_sharding(self.mesh, self.rules)

  def mesh_context(self):
    """Enter with `with exp.mesh_context():` around anything that runs the model."""
    return mesh_and_rules(self.mesh, self.rules)

  def init_state(self) -> TrainState:
    """The initial state, created directly with `state_shardings`."""
    seq_len = self.config.data.seq_len
    init = make_init_fn(self.model_cfg, self.tx, self.config.seed, seq_len,
                        lambda rng: self.objective.init_params(self.model, rng, seq_len))
    with self.mesh_context():
      state = jax.jit(init, out_shardings=self.state_shardings)()
    if self.config.task.init_from:  # a classifier starting from a trained run's backbone
      state = state.replace(params=pretrained.with_backbone(self, state.params))
    return state

  def global_batch(self, local_rows: np.ndarray) -> jax.Array:
    """This process's rows -> one global array sharded over the batch axes."""
    global_shape = (self.config.train.batch_size, local_rows.shape[1])
    return jax.make_array_from_process_local_data(self.batch_sharding, local_rows, global_shape)

  def train_batch(self, step: int) -> jax.Array:
    t = self.config.train
    if self.labelled is not None:
      return self.global_batch(labelled.train_batch(
          self.labelled.train_rows, self.config.seed, step, t.batch_size, jax.process_index(),
          jax.process_count()))
    rows = loader.train_batch(self.corpus.train_tokens, self.config.seed, step, t.batch_size,
                              self.config.data.seq_len, jax.process_index(), jax.process_count())
    return self.global_batch(rows)

  def eval_batches(self):
    t = self.config.train
    if self.labelled is not None:
      for rows in labelled.eval_batches(self.labelled.validation_rows, t.batch_size,
                                        jax.process_index(), jax.process_count()):
        yield self.global_batch(rows)
      return
    for rows in loader.eval_batches(self.corpus.validation_tokens, t.eval_batches, t.batch_size,
                                    self.config.data.seq_len, jax.process_index(),
                                    jax.process_count()):
      yield self.global_batch(rows)


class mesh_and_rules:  # pylint: disable=invalid-name
  """Context manager: `jax.set_mesh(mesh)` and linen's logical axis rules together."""

  def __init__(self, mesh: Mesh, rules: Rules):
    self._contexts = (jax.set_mesh(mesh), nn.logical_axis_rules(rules))

  def __enter__(self):
    for context in self._contexts:
      context.__enter__()

  def __exit__(self, *exc):
    for context in reversed(self._contexts):
      context.__exit__(*exc)


def batch_sharding(mesh: Mesh, rules: Rules) -> NamedSharding:
  """[batch, length] split on the rule set's batch axes."""
  return NamedSharding(mesh, PartitionSpec(batch_axes(rules), None))


def logical_dims(model_cfg: TransformerConfig) -> dict[str, int]:
  """The size of every logical parameter axis a rule set may split."""
  return {'vocab': model_cfg.padded_vocab, 'embed': model_cfg.d_model,
          'heads': model_cfg.n_heads, 'kv_heads': model_cfg.n_kv_heads, 'mlp': model_cfg.d_ff}


def check_batch_fits(config, mesh: Mesh, rules: Rules) -> None:
  """The (micro-)batch must split evenly over the batch axes."""
  shards = 1
  for axis in batch_axes(rules):
    shards *= mesh.shape[axis]
  t = config.train
  micro_batch = t.batch_size // t.grad_accum_steps
  if micro_batch % shards:
    raise UserError(f'train.batch_size={t.batch_size} (micro-batch {micro_batch}) is not divisible '
                    f'by the data-parallel size {shards} (mesh {" x ".join(batch_axes(rules))} '
                    f'under sharding.rules={config.sharding.rules}); change one')


def open_corpus(config, vocab_size: int, progress: bool) -> Corpus:
  """The config's corpus, prepared if needed; UserError if it does not fit the model."""
  directory = prepare(config.data, progress=progress and jax.process_index() == 0)
  manifest = load_manifest(directory)
  if manifest['vocab_size'] > vocab_size:
    raise UserError(f"the tokenizer has {manifest['vocab_size']:,} tokens but model.vocab_size="
                    f"{vocab_size:,}; set --config.model.vocab_size={manifest['vocab_size']} "
                    'or more')
  objectives.check_vocabulary(config, manifest['vocab_size'])
  train_tokens = loader.open_split(directory, 'train', config.data.mirror_dir)
  validation_tokens = loader.open_split(directory, 'validation', config.data.mirror_dir)
  for split, tokens in (('train', train_tokens), ('validation', validation_tokens)):
    loader.check_long_enough(tokens.size, config.data.seq_len, f'the {split} split')
  return Corpus(directory=directory, manifest=manifest,
                tokenizer=load_tokenizer(config.data.tokenizer, directory),
                train_tokens=train_tokens, validation_tokens=validation_tokens)


def build_experiment(config, with_data: bool = True, progress: bool = True,
                     devices=None, n_classes: int = 2) -> Experiment:
  """Everything a run needs, every user mistake reported before compute starts.

  `devices` (default: all) lays the mesh over a subset; `with_data=False` skips the corpus (a
  classifier then has `n_classes` classes; with data, its labelled file's)."""
  if config.task.init_from:
    pretrained.adopt_model(config)  # the backbone's shape and tokenizer are the trained run's
  mesh = build_mesh(config.mesh, devices)
  platform = mesh.devices.flat[0].platform
  model_cfg = for_platform(TransformerConfig.from_dict(config.model), platform)
  model_cfg = dataclasses.replace(model_cfg, matmul_impl=resolve_matmul_impl(
      model_cfg.matmul_impl, platform, mesh.devices.size, model_cfg.dtype, model_cfg.remat),
      attention_impl=resolve_attention_impl(config.model.attention_impl, model_cfg.attention_impl,
                                            platform, mesh.devices.size, model_cfg.dtype))
  objective = objectives.objective_of(config)
  labelled_set = labelled.load_labelled(config) if with_data and objective.name == 'classify' \
      else None
  model = objectives.make_model(model_cfg, config.task,
                                len(labelled_set.labels) if labelled_set else n_classes)
  check_attention_platform(model_cfg.attention_impl, platform)
  rules, notes = rules_for(config.sharding.rules, dict(mesh.shape), logical_dims(model_cfg))
  check_batch_fits(config, mesh, rules)
  steps, seq_len = config.train.steps, config.data.seq_len
  tx = make_optimizer(config.optim, steps, lr_multipliers(model_cfg, config.optim.name, seq_len))
  schedule = make_schedule(config.optim, steps)
  init_params = functools.partial(objective.init_params, model, seq_len=seq_len)
  with mesh_and_rules(mesh, rules):
    shapes = jax.eval_shape(make_init_fn(model_cfg, tx, config.seed, seq_len, init_params))
    shardings = state_shardings(shapes, model_cfg, seq_len, mesh, rules, init_params)
  abstract = jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                          shapes, shardings)
  batch = batch_sharding(mesh, rules)
  jitted_train_step = jax.jit(
      functools.partial(train_step, model=model, tx=tx, schedule=schedule,
                        accum_steps=config.train.grad_accum_steps, objective=objective,
                        penalty=make_penalty(config.optim),
                        prune=make_prune_fn(config.prune, steps) if 'prune' in config else None),
      in_shardings=(shardings, batch), out_shardings=(shardings, None),
      donate_argnums=(0,))
  jitted_eval_step = jax.jit(functools.partial(eval_step, model=model, objective=objective),
                             in_shardings=(shardings.params, batch))
  corpus = None
  if with_data and labelled_set is None:
    corpus = open_corpus(config, model_cfg.vocab_size, progress)
  return Experiment(config=config, model_cfg=model_cfg, model=model, tx=tx, schedule=schedule,
                    mesh=mesh, rules=rules, notes=notes, abstract_state=abstract,
                    state_shardings=shardings, train_step=jitted_train_step,
                    eval_step=jitted_eval_step, corpus=corpus, objective=objective,
                    labelled=labelled_set)


def compile_train_step(exp: Experiment):
  """The train step compiled for one global batch, from shapes alone (no data, no state)."""
  batch = jax.ShapeDtypeStruct((exp.config.train.batch_size, exp.config.data.seq_len + 1),
                               jnp.int32, sharding=exp.batch_sharding)
  with exp.mesh_context():
    return exp.train_step.lower(exp.abstract_state, batch).compile()
