"""The parallel layout of a run, without any data: mesh, fitted rules, shardings, jitted step.

`build_layout(config)` is what `train/setup.py` builds an experiment on, and all that
`launch.py memory` needs to compile a step for any config and mesh without preparing a corpus.
`abstract_state` gives the state as `ShapeDtypeStruct`s carrying their shardings, which is
also the restore target of a checkpoint on another mesh.
"""

import dataclasses
import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from errors import UserError
from models.config import TransformerConfig
from models.transformer import Transformer
from sharding.mesh import build_mesh
from sharding.rules import Rules, batch_axes, rules_for
from train.optim import make_optimizer
from train.schedules import make_schedule
from train.state import TrainState, make_init_fn, state_shardings
from train.step import train_step


def logical_dims(model_cfg: TransformerConfig) -> dict[str, int]:
  """The size of every logical parameter axis a rule set may split."""
  return {'vocab': model_cfg.padded_vocab, 'embed': model_cfg.d_model,
          'heads': model_cfg.n_heads, 'kv_heads': model_cfg.n_kv_heads, 'mlp': model_cfg.d_ff}


def batch_sharding(mesh: Mesh, rules: Rules) -> NamedSharding:
  """[batch, length] split on the rule set's batch axes."""
  return NamedSharding(mesh, PartitionSpec(batch_axes(rules), None))


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


@dataclasses.dataclass
class Layout:
  model_cfg: TransformerConfig
  model: Transformer
  tx: optax.GradientTransformation
  schedule: Callable
  mesh: Mesh
  rules: Rules
  notes: list[str]  # where the rule set had to fall back (a dim that does not divide)

  @property
  def batch_sharding(self) -> NamedSharding:
    return batch_sharding(self.mesh, self.rules)

  def context(self):
    """`with layout.context():` around anything that traces the model."""
    return mesh_and_rules(self.mesh, self.rules)


def build_layout(config, devices=None) -> Layout:
  """Mesh, rules, model and optimizer of `config`; every sharding mistake is a UserError."""
  model_cfg = TransformerConfig.from_dict(config.model)
  mesh = build_mesh(config.mesh, devices)
  rules, notes = rules_for(config.sharding.rules, dict(mesh.shape), logical_dims(model_cfg))
  check_batch_fits(config, mesh, rules)
  steps = config.train.steps
  return Layout(model_cfg=model_cfg, model=Transformer(model_cfg),
                tx=make_optimizer(config.optim, steps), schedule=make_schedule(config.optim, steps),
                mesh=mesh, rules=rules, notes=notes)


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


def abstract_state(layout: Layout, seed: int, seq_len: int) -> tuple[TrainState, TrainState]:
  """(state as ShapeDtypeStructs with shardings, the shardings); nothing is allocated."""
  init = make_init_fn(layout.model_cfg, layout.tx, seed, seq_len)
  with layout.context():
    shapes = jax.eval_shape(init)
    shardings = state_shardings(shapes, layout.model_cfg, seq_len, layout.mesh, layout.rules)
  abstract = jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                          shapes, shardings)
  return abstract, shardings


def jit_train_step(layout: Layout, shardings: TrainState, accum_steps: int = 1):
  """The train step jitted with explicit shardings, donating the state."""
  step = functools.partial(train_step, model=layout.model, tx=layout.tx, schedule=layout.schedule,
                           accum_steps=accum_steps)
  return jax.jit(step, in_shardings=(shardings, layout.batch_sharding),
                 out_shardings=(shardings, None), donate_argnums=(0,))


def compile_train_step(config, devices=None) -> tuple[Any, Layout, TrainState]:
  """(compiled step, layout, abstract state) of `config` for one global batch; no data needed."""
  layout = build_layout(config, devices)
  seq_len = config.data.seq_len
  abstract, shardings = abstract_state(layout, config.seed, seq_len)
  batch = jax.ShapeDtypeStruct((config.train.batch_size, seq_len + 1), jnp.int32,
                               sharding=layout.batch_sharding)
  with layout.context():
    step = jit_train_step(layout, shardings, config.train.grad_accum_steps)
    compiled = step.lower(abstract, batch).compile()
  return compiled, layout, abstract
