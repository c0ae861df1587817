"""The C++ causal attention kernel (models/cpu_attention.py): values and gradients against the
float64 NumPy reference and the chunked path, what `model.attention_impl` resolves to, and a
training run that takes it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from errors import UserError
from models import cpu_attention, cpu_kernels
from models.attention import causal_attention
from models.cpu_attention import resolve_attention_impl
from tests.test_attention import reference_attention, reference_attention_grads
from tests.tiny_run import train_steps

GROUPED = dict(model__n_kv_heads=1, model__n_heads=4, model__attention_query_chunk=8)


@pytest.fixture(scope='module', autouse=True)
def kernels():
  reason = cpu_kernels.unavailable_reason()
  assert reason is None, reason  # the CPU lock installs scipy-openblas32; CI has g++


def _operands(batch, length, heads, kv_heads, dim, seed=0):
  rng = np.random.default_rng(seed)
  return tuple(rng.standard_normal(shape).astype(np.float32) for shape in (
      (batch, length, heads, dim), (batch, length, kv_heads, dim), (batch, length, kv_heads, dim),
      (batch, length, heads, dim)))


# Lengths that the blocks divide, that they do not (a shorter last block), one block, one query.
@pytest.mark.parametrize('length,chunk', [(16, 4), (16, 5), (16, 0), (9, 16), (1, 4)])
@pytest.mark.parametrize('kv_heads', [4, 2, 1])  # multi-head, grouped-query, multi-query
def test_values_and_gradients_match_the_float64_reference(length, chunk, kv_heads):
  q, k, v, dout = _operands(2, length, 4, kv_heads, 8)
  out = jax.jit(cpu_attention.causal_attention, static_argnums=3)(q, k, v, chunk)
  np.testing.assert_allclose(out, reference_attention(q, k, v), rtol=1e-5, atol=1e-5)
  grads = jax.jit(jax.grad(lambda q, k, v: (cpu_attention.causal_attention(q, k, v, chunk) *
                                            dout).sum(), argnums=(0, 1, 2)))(q, k, v)
  for got, expected in zip(grads, reference_attention_grads(q, k, v, dout)):
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_large_scores_stay_finite_and_match_the_chunked_path():
  """Scores in the hundreds (an exp overflow without the row maximum) and a head dim of 64."""
  q, k, v, dout = _operands(1, 64, 2, 2, 64, seed=1)
  q = q * 8.0
  grouped = (1, 64, 2, 1, 64)

  def loss(impl):
    return lambda q, k, v: (causal_attention(q.reshape(grouped), k, v, 16, impl)
                            .reshape(q.shape) * dout).sum()
  ours = jax.value_and_grad(loss('cpu'), argnums=(0, 1, 2))(q, k, v)
  chunked = jax.value_and_grad(loss('chunked'), argnums=(0, 1, 2))(q, k, v)
  for got, expected in zip(jax.tree.leaves(ours), jax.tree.leaves(chunked)):
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, expected, rtol=2e-4, atol=2e-4)


def test_one_visible_key_copies_its_value():
  """Hand-computed: the first query sees only the first key, so its output is v[0] exactly."""
  q, k, v, _ = _operands(1, 3, 1, 1, 4)
  out = cpu_attention.causal_attention(q, k, v, 2)
  np.testing.assert_allclose(out[0, 0, 0], v[0, 0, 0], rtol=1e-6)


def test_shapes_that_do_not_fit_are_an_error():
  q, k, v, _ = _operands(1, 8, 3, 2, 4)  # 2 kv heads do not divide 3 query heads
  with pytest.raises(Exception, match='K dividing H'):
    jax.block_until_ready(cpu_attention.causal_attention(q, k, v, 4))


@pytest.mark.parametrize('args,expected', [
    (('auto', 'chunked', 'cpu', 1, 'float32'), 'cpu'),
    (('cpu', 'cpu', 'cpu', 1, 'float32'), 'cpu'),
    (('auto', 'chunked', 'cpu', 8, 'float32'), 'chunked'),
    (('auto', 'chunked', 'cpu', 1, 'bfloat16'), 'chunked'),
    (('auto', 'chunked', 'tpu', 1, 'float32'), 'chunked'),
    (('auto', 'cudnn', 'gpu', 1, 'bfloat16'), 'cudnn'),
    (('chunked', 'chunked', 'cpu', 1, 'float32'), 'chunked'),
    (('xla', 'xla', 'cpu', 1, 'float32'), 'xla'),
])
def test_auto_takes_the_kernel_only_on_one_cpu_device_in_float32(args, expected):
  assert resolve_attention_impl(*args) == expected


def test_an_explicit_kernel_that_cannot_run_names_the_fix():
  with pytest.raises(UserError, match='attention_impl=cpu cannot run: the devices are gpu, not '
                     'cpu; model.dtype=bfloat16.*attention_impl=chunked'):
    resolve_attention_impl('cpu', 'cpu', 'gpu', 1, 'bfloat16')


def test_a_training_run_through_the_kernel_matches_the_chunked_path(tmp_path):
  """A grouped-query tiny model on one CPU device: `auto` takes the kernel, and three AdamW
  steps give the chunked path's losses and parameters to float32 round-off."""
  ours_exp, ours_losses, ours_params = train_steps(tmp_path / 'cpu', **GROUPED,
                                                   model__attention_impl='auto')
  chunked_exp, chunked_losses, chunked_params = train_steps(
      tmp_path / 'chunked', **GROUPED, model__attention_impl='chunked')
  assert (ours_exp.model_cfg.attention_impl, chunked_exp.model_cfg.attention_impl) == (
      'cpu', 'chunked')
  hlo = ours_exp.train_step.lower(ours_exp.init_state(), jnp.zeros((8, 33), jnp.int32)).as_text()
  assert hlo.count(cpu_attention.FORWARD_TARGET) == 2  # one a layer (the backward's too)
  assert hlo.count(cpu_attention.BACKWARD_TARGET) == 2
  np.testing.assert_allclose(ours_losses, chunked_losses, rtol=1e-5)
  assert ours_losses[-1] < ours_losses[0]
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
               ours_params, chunked_params)
