"""The train state, its initialiser and the sharding of each of its arrays.

train/experiment.py builds the state abstractly (`jax.eval_shape` of `make_init_fn`), derives
each array's `NamedSharding` here from the parameters' logical axis names and the rule set, and
then creates it with `jax.jit(init, out_shardings=...)`: no array is ever whole on one device.
Optimizer-state leaves that mirror a parameter (Adam's moments, ...) take its sharding; any
other leaf (counts, factored second moments) is replicated.
"""

from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from models.config import TransformerConfig
from models.transformer import init_params


@flax.struct.dataclass
class TrainState:
  step: jax.Array  # int32 scalar: steps taken (batches consumed), applied or skipped
  params: Any
  opt_state: Any
  rng: jax.Array  # uint32[2] key for dropout; folded with the step inside the train step
  skipped_steps: jax.Array  # int32 scalar: updates skipped for non-finite loss or gradient


def logical_param_specs(model_cfg: TransformerConfig, seq_len: int, init=None):
  """A tree of PartitionSpecs in logical axis names, one per parameter; `init(rng)` gives the
  boxed parameters of another model than the decoder (train/objectives.py)."""
  init = init or (lambda rng: init_params(model_cfg, rng, seq_len))
  boxed = jax.eval_shape(lambda: init(jax.random.PRNGKey(0)))
  return nn.get_partition_spec(boxed)


def path_names(path) -> tuple[str, ...]:
  """A pytree key path as names: ('layer_0', 'attn', 'query', 'kernel'), list indices as digits."""
  return tuple(str(getattr(p, 'key', getattr(p, 'name', getattr(p, 'idx', p)))) for p in path)


def _mirror_param_shardings(tree, param_shardings, param_shapes, replicated):
  """Shardings for `tree` (e.g. optimizer state): a leaf whose path ends with a parameter's path
  and which has that parameter's shape gets the parameter's sharding; anything else is replicated."""
  by_path = {}
  for (path, sharding), shape in zip(jax.tree_util.tree_flatten_with_path(param_shardings)[0],
                                     jax.tree.leaves(param_shapes)):
    by_path[path_names(path)] = (sharding, shape.shape)

  def pick(path, leaf):
    key = path_names(path)
    for start in range(len(key)):
      match = by_path.get(key[start:])
      if match and match[1] == leaf.shape:
        return match[0]
    return replicated

  return jax.tree_util.tree_map_with_path(pick, tree)


def state_shardings(abstract_state: TrainState, model_cfg: TransformerConfig, seq_len: int,
                    mesh: Mesh, rules, init=None) -> TrainState:
  """NamedShardings for every leaf of the state (call inside the mesh/rules context)."""
  replicated = NamedSharding(mesh, PartitionSpec())
  param_shardings = nn.logical_to_mesh_sharding(logical_param_specs(model_cfg, seq_len, init),
                                                mesh, rules)
  opt_shardings = _mirror_param_shardings(abstract_state.opt_state, param_shardings,
                                          abstract_state.params, replicated)
  return TrainState(step=replicated, params=param_shardings, opt_state=opt_shardings,
                    rng=replicated, skipped_steps=replicated)


def make_init_fn(model_cfg: TransformerConfig, tx: optax.GradientTransformation, seed: int,
                 seq_len: int, init_params_fn=None):
  """A pure function () -> TrainState with freshly initialised parameters (`init_params_fn(rng)`
  when given, else the decoder's)."""
  init_params_fn = init_params_fn or (lambda rng: init_params(model_cfg, rng, seq_len))

  def init() -> TrainState:
    params_rng, dropout_rng = jax.random.split(jax.random.PRNGKey(seed))
    params = nn.meta.unbox(init_params_fn(params_rng))
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                      rng=dropout_rng, skipped_steps=jnp.zeros((), jnp.int32))
  return init
