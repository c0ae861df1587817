"""OpenBLAS matrix products (models/cpu_matmul.py): the kernel's values and gradients against
XLA's dot, what `model.matmul_impl` resolves to, and a training run that takes it."""

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from errors import UserError
from models import cpu_kernels, cpu_matmul
from models.cpu_matmul import resolve_matmul_impl
from tests.tiny_run import ROOT, train_steps

BIASED = dict(model__use_bias=True, model__mlp='gelu', model__norm='layernorm')


@pytest.fixture(scope='module', autouse=True)
def kernel():
  reason = cpu_kernels.unavailable_reason()
  assert reason is None, reason  # the CPU lock installs scipy-openblas32; CI has g++


def _operands(shape_a, shape_b, seed=0):
  rng = np.random.default_rng(seed)
  return (jnp.asarray(rng.standard_normal(shape_a, np.float32)),
          jnp.asarray(rng.standard_normal(shape_b, np.float32)))


@pytest.mark.parametrize('m,k,n', [(64, 48, 80), (1, 7, 3), (37, 129, 5), (300, 1, 17)])
@pytest.mark.parametrize('transpose_b', [False, True])
def test_values_and_gradients_match_xla_dot(m, k, n, transpose_b):
  a, b = _operands((m, k), (n, k) if transpose_b else (k, n))
  dy = _operands((m, n), (1,), seed=1)[0]

  def plain(a, b):
    return a @ (b.T if transpose_b else b)

  def blas(a, b):
    return cpu_matmul.matmul(a, b, transpose_b)

  np.testing.assert_allclose(jax.jit(blas)(a, b), plain(a, b), rtol=1e-5, atol=1e-5 * k)
  _, pullback_plain = jax.vjp(plain, a, b)
  _, pullback_blas = jax.vjp(blas, a, b)
  for got, want in zip(jax.jit(pullback_blas)(dy), pullback_plain(dy)):
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * max(m, n))


def test_hand_computed_product():
  a = jnp.asarray([[1., 2.], [3., 4.], [5., 6.]])
  b = jnp.asarray([[1., 0., -1.], [2., 1., 0.]])
  np.testing.assert_array_equal(cpu_matmul.matmul(a, b),
                                [[5., 2., -1.], [11., 4., -3.], [17., 6., -5.]])
  np.testing.assert_array_equal(cpu_matmul.matmul(a, b.T, True), [[5., 2., -1.], [11., 4., -3.],
                                                                 [17., 6., -5.]])


def test_vmap_runs_one_product_per_member():
  a, b = _operands((4, 6, 5), (5, 3))
  got = jax.vmap(lambda a: cpu_matmul.matmul(a, b))(a)
  np.testing.assert_allclose(got, jnp.einsum('vmk,kn->vmn', a, b), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('args,expected', [
    (('auto', 'cpu', 1, 'float32', 'none'), 'openblas'),
    (('auto', 'cpu', 1, 'float32', 'full'), 'openblas'),
    (('openblas', 'cpu', 1, 'float32', 'none'), 'openblas'),
    (('auto', 'tpu', 1, 'float32', 'none'), 'xla'),
    (('auto', 'gpu', 1, 'bfloat16', 'none'), 'xla'),
    (('auto', 'cpu', 8, 'float32', 'none'), 'xla'),
    (('auto', 'cpu', 1, 'bfloat16', 'none'), 'xla'),
    (('auto', 'cpu', 1, 'float32', 'dots'), 'xla'),
    (('xla', 'cpu', 1, 'float32', 'none'), 'xla'),
])
def test_auto_takes_openblas_only_on_one_cpu_device_in_float32(args, expected):
  assert resolve_matmul_impl(*args) == expected


@pytest.mark.parametrize('args,fragment', [
    (('openblas', 'tpu', 4, 'float32', 'none'), 'the devices are tpu, not cpu; the mesh has 4'),
    (('openblas', 'cpu', 1, 'bfloat16', 'none'), 'model.dtype=bfloat16'),
    (('openblas', 'cpu', 1, 'float32', 'dots_no_batch'), 'model.remat=dots_no_batch'),
    (('blas', 'cpu', 1, 'float32', 'none'), "model.matmul_impl='blas' is not one of"),
])
def test_an_explicit_choice_that_cannot_run_names_the_fix(args, fragment):
  with pytest.raises(UserError, match='matmul_impl') as error:
    resolve_matmul_impl(*args)
  assert fragment in str(error.value)


def test_without_a_compiler_the_kernel_is_unavailable_with_the_fix(tmp_path):
  """A fresh process (the kernel's registration is per process), an empty cache, no compiler."""
  code = ('from models import cpu_kernels, cpu_matmul; '
          'print(cpu_kernels.unavailable_reason()); '
          "print(cpu_matmul.resolve_matmul_impl('auto', 'cpu', 1, 'float32', 'none'))")
  env = {'XDG_CACHE_HOME': str(tmp_path), 'CXX': str(tmp_path / 'no-such-g++'),
         'JAX_PLATFORMS': 'cpu', 'PATH': '/usr/bin:/bin', 'PYTHONPATH': str(ROOT)}
  done = subprocess.run([sys.executable, '-c', code], cwd=ROOT, env=env, capture_output=True,
                        text=True, check=True)
  reason, resolved = done.stdout.strip().splitlines()
  assert 'no C++ compiler' in reason and 'install g++' in reason
  assert resolved == 'xla'
  assert 'matrix products use XLA:CPU, not OpenBLAS: no C++ compiler' in done.stderr
  assert not list(tmp_path.rglob('*.so'))


def test_a_training_run_through_openblas_matches_xla_to_round_off(tmp_path):
  """The tiny model on one CPU device: `auto` takes OpenBLAS, and three AdamW steps give the
  losses and parameters of XLA's products to float32 round-off."""
  blas_exp, blas_losses, blas_params = train_steps(tmp_path / 'blas', **BIASED,
                                                   model__matmul_impl='auto')
  xla_exp, xla_losses, xla_params = train_steps(tmp_path / 'xla', **BIASED,
                                                model__matmul_impl='xla')
  assert (blas_exp.model_cfg.matmul_impl, xla_exp.model_cfg.matmul_impl) == ('openblas', 'xla')
  hlo = blas_exp.train_step.lower(blas_exp.init_state(), jnp.zeros((8, 33), jnp.int32)).as_text()
  # Each layer's q, k, v, out, up and down projections and the tied logits, forward and the
  # two backward products: (2 * 6 + 1) * 3 calls.
  assert hlo.count(cpu_matmul.TARGET_NAME) == (2 * 6 + 1) * 3
  np.testing.assert_allclose(blas_losses, xla_losses, rtol=1e-5)
  assert blas_losses[-1] < blas_losses[0]
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
               blas_params, xla_params)
