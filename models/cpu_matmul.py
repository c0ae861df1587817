"""Float32 matrix products on a CPU through OpenBLAS, as an XLA FFI custom call.

On the 2-core AMD EPYC this project is measured on, XLA:CPU's own matrix kernels (YNNPACK) ran
the training step's products at 115-162 GFLOP/s and OpenBLAS's sgemm (the scipy-openblas32
wheel) at 180-187, timed alone; products are most of a float32 step (README, "Matrix products
through OpenBLAS on a CPU"). `matmul` computes `a . b` (or `a . b^T`) with that sgemm, forward
and backward: its gradient is two more sgemm calls that read their operands transposed in
place. The kernel (`cpu_matmul.cc`) runs OpenBLAS single-threaded on blocks of the product that
XLA's own intra-op thread pool computes, so no second thread pool competes with XLA's.
`models/layers.py` uses it when `model.matmul_impl` resolves to `openblas`
(`resolve_matmul_impl`): one CPU device, float32.

The kernel is built and registered with the other CPU kernels (models/cpu_kernels.py): without
a compiler or the OpenBLAS wheel, `auto` falls back to XLA's products and logs why; an explicit
`openblas` is an error.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from errors import UserError
from models.config import MATMUL_IMPLS
from models.cpu_kernels import choose

TARGET_NAME = 'cpu_openblas_sgemm'


def resolve_matmul_impl(impl: str, platform: str, n_devices: int, dtype: str,
                        remat: str) -> str:
  """What `model.matmul_impl` means for this run: `auto` is `openblas` on one CPU device in
  float32 (unless the kernel is unavailable, or a `dots` remat policy needs XLA's dot ops to
  find the products to keep), else `xla`; an explicit `openblas` that cannot run is an error."""
  if impl not in MATMUL_IMPLS:
    raise UserError(f'model.matmul_impl={impl!r} is not one of {", ".join(MATMUL_IMPLS)}')
  if impl == 'xla':
    return impl
  dots_remat = (f'model.remat={remat} keeps XLA dot outputs, and these products are not',)
  return choose('matmul_impl', impl, 'openblas', 'xla', platform, n_devices, dtype,
                'matrix products use XLA:CPU, not OpenBLAS',
                dots_remat if remat.startswith('dots') else ())


def _sgemm(a: jax.Array, b: jax.Array, transpose_a: bool, transpose_b: bool) -> jax.Array:
  rows = a.shape[1] if transpose_a else a.shape[0]
  cols = b.shape[0] if transpose_b else b.shape[1]
  call = jax.ffi.ffi_call(TARGET_NAME, jax.ShapeDtypeStruct((rows, cols), jnp.float32),
                          vmap_method='sequential')
  return call(a, b, transpose_a=np.int32(transpose_a), transpose_b=np.int32(transpose_b))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def matmul(a_MxK: jax.Array, b: jax.Array, transpose_b: bool = False) -> jax.Array:
  """a . b for b [K, N], or a . b^T for b [N, K] when `transpose_b`; float32, 2-D, one CPU
  device, after `cpu_kernels.unavailable_reason()` has returned None."""
  return _sgemm(a_MxK, b, False, transpose_b)


def _matmul_fwd(a_MxK, b, transpose_b):
  return _sgemm(a_MxK, b, False, transpose_b), (a_MxK, b)


def _matmul_bwd(transpose_b, residuals, dy_MxN):
  a_MxK, b = residuals
  if transpose_b:  # y = a b^T: da = dy b, db = dy^T a
    return _sgemm(dy_MxN, b, False, False), _sgemm(dy_MxN, a_MxK, True, False)
  # y = a b: da = dy b^T, db = a^T dy
  return _sgemm(dy_MxN, b, False, True), _sgemm(a_MxK, dy_MxN, True, False)


matmul.defvjp(_matmul_fwd, _matmul_bwd)
