"""muP's per-parameter learning rates: a tree of multipliers and the optax step that applies them.

`lr_multipliers(model_cfg, optim_name, seq_len)` gives, under `model.parameterization = 'mup'`,
one float per parameter from its role (models/mup.py reads the role off its logical axes), with
m = d_model / mup_base_width:

  role       Adam-like (adam, adamw, lion, adafactor)   SGD-like (sgd, momentum, nesterov)
  hidden     1/m                                         1
  input      1                                           m
  vector     1                                           m
  readout    1 (the 1/m sits in the forward pass)        m

(Tensor Programs V, Table 3 for SGD and Adam, in the output-multiplier form of its Table 8 and
of the `mup` package's MuAdam/MuSGD.) Adam, Lion and Adafactor normalise each entry of the
gradient, so their updates are Theta(1) per entry whatever the width: a hidden matrix, summing
fan_in ~ width of them, needs 1/m. SGD's raw gradients of hidden matrices already scale as 1/width
per entry; vectors' do not shrink enough, hence m.

`scale_by_multipliers(tree)` multiplies each update by its parameter's multiplier. The optimizer
(train/optim.py) applies it right after the update direction, before decoupled weight decay and
the learning rate: decay stays lr * wd * param for every parameter, as in the `mup` package
(whose MuAdamW divides lr and multiplies weight_decay by m for hidden matrices). Under `sp`
there are no multipliers and the chain is the one without muP, bit for bit.
"""

from typing import Any

import jax
import jax.numpy as jnp
import optax

from models import mup
from models.config import TransformerConfig
from train.state import logical_param_specs

SGD_LIKE = ('sgd', 'momentum', 'nesterov')  # every other optimizer normalises entrywise


def role_multiplier(role: str, m: float, optim_name: str) -> float:
  """The learning rate multiplier of one role at width multiplier m (the table above)."""
  if optim_name in SGD_LIKE:
    return 1.0 if role == 'hidden' else m
  return 1.0 / m if role == 'hidden' else 1.0


def param_roles(model_cfg: TransformerConfig, seq_len: int) -> Any:
  """The muP role of every parameter, a tree shaped like the params."""
  specs = logical_param_specs(model_cfg, seq_len)
  return jax.tree.map(lambda spec: mup.role_of(tuple(spec)), specs,
                      is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))


def lr_multipliers(model_cfg: TransformerConfig, optim_name: str, seq_len: int) -> Any | None:
  """A tree of floats shaped like the params under muP; None under SP (nothing to scale)."""
  if model_cfg.parameterization != 'mup':
    return None
  m = mup.width_mult(model_cfg)
  return jax.tree.map(lambda role: role_multiplier(role, m, optim_name),
                      param_roles(model_cfg, seq_len))


def scale_by_multipliers(multipliers: Any) -> optax.GradientTransformation:
  """Multiplies each update by the float at its place in `multipliers` (stateless)."""

  def init(params):
    del params
    return optax.EmptyState()

  def update(updates, state, params=None):
    del params
    scaled = jax.tree.map(lambda u, k: u if k == 1.0 else u * jnp.asarray(k, u.dtype), updates,
                          multipliers)
    return scaled, state

  return optax.GradientTransformation(init, update)
