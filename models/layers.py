"""Building blocks with logically-named parameters: projections, norms, MLPs, rotary positions.

Every parameter is created through `nn.with_logical_partitioning`, so a rule set in `sharding/`
decides where it lives; nothing here knows about devices. Tensor names carry their shapes:
B batch, L length, D d_model, H heads, K kv heads, Dh head dim, F d_ff.
"""

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from models import cpu_matmul, mup
from models.config import TransformerConfig
from models.rope import RopeScaling, inverse_frequencies

Axes = tuple[str | None, ...]


def dtype_of(name: str) -> jnp.dtype:
  return jnp.dtype(name)


def param_with_axes(module: nn.Module, name: str, init, shape: Sequence[int], axes: Axes,
                    cfg: TransformerConfig) -> jax.Array:
  """Declares a parameter with logical axis names and casts it to the compute dtype (under muP
  its initial values scaled for its role, models/mup.py)."""
  if cfg.parameterization == 'mup':
    init = mup.scaled_init(init, axes, cfg)
  value = module.param(name, nn.with_logical_partitioning(init, axes), tuple(shape),
                       dtype_of(cfg.param_dtype))
  return jnp.asarray(value, dtype_of(cfg.dtype))


class DenseGeneral(nn.Module):
  """y = x . W (+ b), contracting the last `len(in_shape)` dims of x with W's leading dims."""
  cfg: TransformerConfig
  in_shape: tuple[int, ...]
  out_shape: tuple[int, ...]
  kernel_axes: Axes
  init_scale: float = 1.0

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    init = nn.initializers.normal(self.cfg.init_std * self.init_scale)
    kernel = param_with_axes(self, 'kernel', init, self.in_shape + self.out_shape,
                             self.kernel_axes, self.cfg)
    n_in = len(self.in_shape)
    lead_shape = x.shape[:x.ndim - n_in]
    # One 2-D matmul [rows, in] x [in, out]: XLA:CPU runs the weight gradient of a 3-D
    # contraction about 2x slower than the same FLOPs as a plain matrix product.
    x_2d = x.astype(kernel.dtype).reshape(int(np.prod(lead_shape)), int(np.prod(self.in_shape)))
    kernel_2d = kernel.reshape(int(np.prod(self.in_shape)), int(np.prod(self.out_shape)))
    y = matmul_2d(x_2d, kernel_2d, self.cfg).reshape(lead_shape + self.out_shape)
    if self.cfg.use_bias:
      bias_axes = self.kernel_axes[n_in:]
      y = y + param_with_axes(self, 'bias', nn.initializers.zeros, self.out_shape, bias_axes,
                              self.cfg)
    return y


def matmul_2d(x_MxK: jax.Array, w: jax.Array, cfg: TransformerConfig,
              transpose_w: bool = False) -> jax.Array:
  """x . w (w [K, N]), or x . w^T (w [N, K]) when `transpose_w`: through OpenBLAS when
  `model.matmul_impl` resolved to openblas (models/cpu_matmul.py) and both are float32, else
  XLA's dot. `auto` left unresolved (a model built outside a run, a test) means XLA's dot."""
  if cfg.matmul_impl == 'openblas' and x_MxK.dtype == w.dtype == jnp.float32:
    return cpu_matmul.matmul(x_MxK, w, transpose_w)
  return x_MxK @ (w.T if transpose_w else w)


def add_positions(x_BxLxD: jax.Array, positions_LxD: jax.Array) -> jax.Array:
  """x + positions (broadcast over the batch). The positions' gradient, a sum over the batch, is
  computed as a product with a vector of ones: XLA:CPU reduced [16, 256, 384] over its leading
  axis in 7.5 ms, the product takes 0.1-0.2 ms (the same sum, float32 accumulation)."""
  dtype = jnp.result_type(x_BxLxD, positions_LxD)
  return _add_over_batch(x_BxLxD.astype(dtype), positions_LxD.astype(dtype))


@jax.custom_vjp
def _add_over_batch(x_BxLxD, positions_LxD):
  return x_BxLxD + positions_LxD[None]


def _add_over_batch_fwd(x_BxLxD, positions_LxD):
  return _add_over_batch(x_BxLxD, positions_LxD), None


def _add_over_batch_bwd(_, dy_BxLxD):
  ones_B = jnp.ones(dy_BxLxD.shape[:1], dy_BxLxD.dtype)
  d_positions = jnp.einsum('b,bld->ld', ones_B, dy_BxLxD, preferred_element_type=jnp.float32)
  return dy_BxLxD, d_positions.astype(dy_BxLxD.dtype)


_add_over_batch.defvjp(_add_over_batch_fwd, _add_over_batch_bwd)


class Norm(nn.Module):
  """RMSNorm or LayerNorm over the last axis, computed in float32."""
  cfg: TransformerConfig

  @nn.compact
  def __call__(self, x_BxLxD: jax.Array) -> jax.Array:
    cfg = self.cfg
    x = x_BxLxD.astype(jnp.float32)
    if cfg.norm == 'layernorm':
      x = x - jnp.mean(x, axis=-1, keepdims=True)
    y = x * jax.lax.rsqrt(jnp.mean(jnp.square(x), axis=-1, keepdims=True) + cfg.norm_eps)
    scale = param_with_axes(self, 'scale', nn.initializers.ones, (x.shape[-1],), ('embed',), cfg)
    y = y.astype(scale.dtype) * scale
    if cfg.norm == 'layernorm' and cfg.use_bias:
      y = y + param_with_axes(self, 'bias', nn.initializers.zeros, (x.shape[-1],), ('embed',), cfg)
    return y.astype(dtype_of(cfg.dtype))


class Mlp(nn.Module):
  """GELU MLP (two matrices) or SwiGLU (gate, up, down)."""
  cfg: TransformerConfig

  @nn.compact
  def __call__(self, x_BxLxD: jax.Array) -> jax.Array:
    cfg = self.cfg
    d, f = (cfg.d_model,), (cfg.d_ff,)
    up_BxLxF = DenseGeneral(cfg, d, f, ('embed', 'mlp'), name='up')(x_BxLxD)
    if cfg.mlp == 'swiglu':
      gate_BxLxF = DenseGeneral(cfg, d, f, ('embed', 'mlp'), name='gate')(x_BxLxD)
      h_BxLxF = nn.silu(gate_BxLxF) * up_BxLxF
    else:
      h_BxLxF = nn.gelu(up_BxLxF, approximate=True)
    h_BxLxF = nn.with_logical_constraint(h_BxLxF, ('act_batch', 'act_length', 'act_mlp'))
    out_scale = 1.0 / np.sqrt(2 * cfg.n_layers)  # GPT-2 style scaled init of residual outputs
    return DenseGeneral(cfg, f, d, ('mlp', 'embed'), out_scale, name='down')(h_BxLxF)


def rotary(x_BxLxNxDh: jax.Array, theta: float, positions_BxL: jax.Array | None = None,
           scaling: RopeScaling | None = None) -> jax.Array:
  """Applies rotary position embeddings (rotate-half form) for positions 0..L-1, or for the
  given per-row positions (decoding with a KV cache, where a row's tokens start at an offset);
  `scaling`: Llama 3.x's frequency scaling (models/rope.py)."""
  length, head_dim = x_BxLxNxDh.shape[1], x_BxLxNxDh.shape[-1]
  half = head_dim // 2
  inv_freq = inverse_frequencies(head_dim, theta, scaling)
  if positions_BxL is None:
    angles_LxHalf = np.arange(length, dtype=np.float32)[:, None] * inv_freq[None, :]
    sin = jnp.asarray(np.sin(angles_LxHalf))[None, :, None, :]
    cos = jnp.asarray(np.cos(angles_LxHalf))[None, :, None, :]
  else:
    angles_BxLxHalf = positions_BxL.astype(jnp.float32)[..., None] * jnp.asarray(inv_freq)
    sin, cos = jnp.sin(angles_BxLxHalf)[:, :, None, :], jnp.cos(angles_BxLxHalf)[:, :, None, :]
  x = x_BxLxNxDh.astype(jnp.float32)
  x1, x2 = x[..., :half], x[..., half:]
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x_BxLxNxDh.dtype)
