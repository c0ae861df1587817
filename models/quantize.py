"""int8 weight-only quantisation: matrices stored as int8 with one float32 scale per output
channel, dequantised inside the jitted forward (the params held in memory stay int8).

`quantize_params(params)` replaces every matrix (projection kernels, the embedding table and
learned positions) by a `QuantizedTensor`: symmetric, per output channel,

    scale_c = max_i |w_ic| / 127,   q_ic = round(w_ic / scale_c) in [-127, 127],

so each weight comes back within scale_c / 2 of its value. The max runs over the axes a kernel
contracts with its input (`INPUT_AXES`: the leading axes of a `DenseGeneral` kernel; under
`model.scan_layers` after the 'layers' axis), so a column of the kernel, one output unit, shares
one scale; an embedding row (one token: a lookup and, tied, one logit) shares one. Norm scales
and biases stay float32: they are a few hundred numbers.

`dequantize_params(tree)` turns every `QuantizedTensor` back into `q * scale` (and leaves any
other array alone): the jitted functions that run the model (train/step.py `loss_fn`,
train/evaluation.py, models/decoding.py) call it on their params first, so one code path serves
float and int8 params, and XLA fuses the multiply into the weights' first use.
"""

import flax
import jax
import jax.numpy as jnp

INPUT_AXES = {'query': 1, 'key': 1, 'value': 1, 'out': 2, 'up': 1, 'gate': 1, 'down': 1,
              'lm_head': 1}  # kernel of module name -> how many leading axes it contracts
TABLES = ('embedding', 'position_embedding')  # one scale per row
SCAN_AXIS = 'layers'  # the leading parameter axis of model.scan_layers
LEVELS = 127


@flax.struct.dataclass
class QuantizedTensor:
  values: jax.Array  # int8, the weight's shape
  scale: jax.Array  # float32, the weight's shape with the reduced axes kept as size 1

  def dequantize(self) -> jax.Array:
    return self.values.astype(self.scale.dtype) * self.scale

  @property
  def nbytes(self) -> int:
    return self.values.nbytes + self.scale.nbytes


def _names(path) -> tuple[str, ...]:
  return tuple(str(getattr(p, 'key', getattr(p, 'name', p))) for p in path)


def reduced_axes(path: tuple[str, ...], ndim: int) -> tuple[int, ...] | None:
  """The axes one scale is shared over (None: the param stays float)."""
  lead = 1 if path[0] == SCAN_AXIS else 0
  if path[-1] in TABLES:
    return (ndim - 1,)
  if path[-1] != 'kernel':
    return None
  module = path[-2]
  if module not in INPUT_AXES:
    raise ValueError(f"parameter {'/'.join(path)}: int8 quantisation does not know which axes "
                     f'the kernel of {module!r} contracts; add it to INPUT_AXES in '
                     'models/quantize.py')
  return tuple(range(lead, lead + INPUT_AXES[module]))


def quantize(w: jax.Array, axes: tuple[int, ...]) -> QuantizedTensor:
  """Symmetric int8 with one scale per index of the axes not in `axes`."""
  w = w.astype(jnp.float32)
  scale = jnp.max(jnp.abs(w), axis=axes, keepdims=True) / LEVELS
  scale = jnp.where(scale == 0, 1.0, scale)  # an all-zero channel (pruned) stays zero
  values = jnp.clip(jnp.round(w / scale), -LEVELS, LEVELS).astype(jnp.int8)
  return QuantizedTensor(values=values, scale=scale)


@jax.jit
def quantize_params(params):
  """Every matrix of `params` as a QuantizedTensor (module docstring); the rest unchanged."""
  def one(path, w):
    axes = reduced_axes(_names(path), w.ndim)
    return w if axes is None else quantize(w, axes)
  return jax.tree_util.tree_map_with_path(one, params)


def is_quantized(leaf) -> bool:
  return isinstance(leaf, QuantizedTensor)


def dequantize_params(params):
  """`params` with every QuantizedTensor replaced by its float values (call inside jit)."""
  return jax.tree.map(lambda leaf: leaf.dequantize() if is_quantized(leaf) else leaf, params,
                      is_leaf=is_quantized)


def params_bytes(params) -> int:
  """Bytes the params take in memory (int8 values and their scales counted as stored)."""
  return sum(leaf.nbytes for leaf in jax.tree.leaves(params, is_leaf=is_quantized))
