"""Gradient accumulation and early stopping, each against an independent expectation."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import launch
from models.config import TransformerConfig
from models.transformer import Transformer
from tests.tiny_run import tiny_flags, write_corpus
from train import decisions, loop
from train.metrics import read_metrics
from train.step import loss_and_grads


def test_accumulated_gradient_equals_the_full_batch_gradient():
  cfg = TransformerConfig(vocab_size=64, d_model=32, n_layers=2, n_heads=2, max_len=16).derived()
  model = Transformer(cfg)
  params = nn.meta.unbox(model.init(jax.random.PRNGKey(0), jnp.zeros((1, 16), jnp.int32))['params'])
  batch = jnp.asarray(np.random.default_rng(0).integers(0, 64, (8, 17)), jnp.int32)
  rng = jax.random.PRNGKey(1)
  full_loss, full_grads = loss_and_grads(params, model, batch, rng, accum_steps=1)
  for accum in (2, 4, 8):
    loss, grads = jax.jit(loss_and_grads, static_argnums=(1, 4))(params, model, batch, rng, accum)
    np.testing.assert_allclose(loss, full_loss, rtol=1e-5)
    for g, g_full in zip(jax.tree.leaves(grads), jax.tree.leaves(full_grads)):
      np.testing.assert_allclose(g, g_full, rtol=1e-4, atol=1e-7)


def test_early_stopping_counts_evaluations_without_improvement():
  early = decisions.EarlyStopping(patience=2)
  assert [early.should_stop(v) for v in (3.0, 2.0, 2.5, 1.9, 2.0, 2.0)] == [
      False, False, False, False, False, True]
  never = decisions.EarlyStopping(patience=0)
  assert not any(never.should_stop(v) for v in (1.0, 2.0, 3.0, 4.0))


@pytest.mark.slow
def test_run_stops_after_patience_evaluations_without_improvement(tmp_path, monkeypatch):
  write_corpus(tmp_path)
  validation_losses = iter([3.0, 2.0, 2.1, 2.2, 1.0, 1.0, 1.0])  # worse at steps 15 and 20

  def scripted_evaluate(*_):
    return next(validation_losses)

  monkeypatch.setattr(loop, 'evaluate', scripted_evaluate)
  run_dir = tmp_path / 'run'
  args = tiny_flags(tmp_path, run_dir, train__eval_every=5, train__patience=2, train__steps=40)
  assert launch.main(['train'] + args) == 0
  evals = read_metrics(run_dir, 'eval')
  assert [r['step'] for r in evals][:4] == [5, 10, 15, 20]
  assert read_metrics(run_dir, 'summary')[0]['steps'] == 20  # stopped, not 40
