"""Compression: int8 per-channel quantisation checked by hand, magnitude pruning to an exact
sparsity, the Zhu & Gupta schedule against its formula, pruned weights staying zero through
training steps, and the CLI (`prune`, `eval`/`sample --quantize int8`) on a tiny trained run."""

import functools
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

import launch
from configs.base import get_config
from models.config import TransformerConfig
from models.quantize import (QuantizedTensor, dequantize_params, params_bytes, quantize,
                             quantize_params)
from models.transformer import Transformer, init_params
from train.optim import make_optimizer
from train.pruning import (make_prune_fn, prune_matrix, prune_params, scheduled_sparsity,
                           sparsity_of)
from train.schedules import make_schedule
from train.state import TrainState
from train.step import train_step
from tests.tiny_run import shared_trained_run  # noqa: F401  pylint: disable=unused-import

MODEL = dict(vocab_size=32, d_model=16, n_layers=2, n_heads=2, max_len=8)


@functools.lru_cache
def tiny_params(**overrides):
  cfg = TransformerConfig(**{**MODEL, **overrides}).derived()
  init = jax.jit(lambda: nn.meta.unbox(init_params(cfg, jax.random.PRNGKey(0), 8)))
  return cfg, init()


def test_int8_scales_and_values_by_hand():
  w = jnp.array([[1.0, -0.2], [-2.54, 0.1]])  # an input-by-output kernel: a scale per column
  q = quantize(w, axes=(0,))
  np.testing.assert_allclose(q.scale, [[2.54 / 127, 0.2 / 127]], rtol=1e-6)
  np.testing.assert_array_equal(q.values, [[50, -127], [-127, 64]])  # 63.5 rounds to even 64
  assert q.values.dtype == jnp.int8
  error = np.abs(np.asarray(q.dequantize()) - np.asarray(w))
  assert np.all(error <= np.asarray(q.scale) / 2 + 1e-7)


def test_every_matrix_is_int8_within_half_a_step_of_its_channel():
  cfg, params = tiny_params(n_kv_heads=1)
  quantized = quantize_params(params)
  layer = quantized['layer_0']
  assert layer['attn']['query']['kernel'].scale.shape == (1, 2, 8)  # [D, H, Dh]: per (h, dh)
  assert layer['attn']['out']['kernel'].scale.shape == (1, 1, 16)  # [H, Dh, D]: per d
  assert layer['mlp']['down']['kernel'].scale.shape == (1, 16)
  assert quantized['embedding'].scale.shape == (32, 1)  # per token row
  assert not isinstance(layer['attn_norm']['scale'], QuantizedTensor)  # norms stay float
  restored = jax.jit(dequantize_params)(quantized)
  for original, q, back in zip(jax.tree.leaves(params), jax.tree.leaves(
      quantized, is_leaf=lambda x: isinstance(x, QuantizedTensor)), jax.tree.leaves(restored)):
    if isinstance(q, QuantizedTensor):
      assert np.all(np.abs(np.asarray(back) - np.asarray(original))
                    <= np.asarray(q.scale) / 2 + 1e-8)
      assert np.all(np.abs(q.values) <= 127)
    else:
      np.testing.assert_array_equal(back, original)
  matrices = sum(w.size for w in jax.tree.leaves(params) if w.ndim > 1)
  assert params_bytes(params) - params_bytes(quantized) > 0.7 * 3 * matrices  # 4 -> ~1 byte
  apply = jax.jit(lambda p: Transformer(cfg).apply({'params': dequantize_params(p)},
                                                   jnp.arange(8)[None] % 32))
  float_logits, int8_logits = apply(params), apply(quantized)
  assert 0 < float(jnp.max(jnp.abs(float_logits - int8_logits))) < 0.05


def test_scanned_layers_get_scales_per_layer():
  _, params = tiny_params(scan_layers=True)
  quantized = quantize_params(params)
  assert quantized['layers']['mlp']['up']['kernel'].scale.shape == (2, 1, 64)


def test_pruning_reaches_the_sparsity_exactly_even_with_ties():
  w = jnp.array([[0.5, -0.1, 0.1], [0.1, 2.0, -0.3], [0.0, 0.1, 1.0]])
  pruned = prune_matrix(w, 0.5)  # round(4.5) = 4 zeros: 0.0 and three of the four 0.1s
  assert int(jnp.sum(pruned == 0)) == 4
  np.testing.assert_array_equal(pruned[pruned != 0], w[(w != 0) & (pruned != 0)])
  assert {round(float(x), 3) for x in np.abs(np.asarray(w[pruned == 0]))} == {0.0, 0.1}
  _, params = tiny_params(scan_layers=True)
  pruned = jax.jit(prune_params)(params, 0.7)
  layers = pruned['layers']
  for w in (layers['attn']['query']['kernel'][1], layers['mlp']['up']['kernel'][0]):
    assert int(jnp.sum(w == 0)) == round(0.7 * w.size)  # each layer's slice on its own
  np.testing.assert_array_equal(pruned['embedding'], params['embedding'])  # kept dense
  assert sparsity_of(pruned) == pytest.approx(0.7, abs=1e-3)


def prune_config(**values) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict({'sparsity': 0.8, 'start_step': 10, 'end_step': 50,
                                    'every': 10, **values})


def test_schedule_against_the_zhu_gupta_formula():
  cfg = prune_config()
  def formula(t_k):  # s_f + (s_i - s_f) (1 - (t - t0) / (n dt))^3 with s_i = 0
    return 0.8 + (0.0 - 0.8) * (1 - (t_k - 10) / 40) ** 3
  expected = {1: 0.0, 9: 0.0, 10: 0.0, 15: 0.0, 20: formula(20), 29: formula(20),
              30: formula(30), 49: formula(40), 50: 0.8, 500: 0.8}
  for t, s in expected.items():
    assert float(scheduled_sparsity(t, cfg, 100)) == pytest.approx(s, abs=1e-6), t
  uneven = prune_config(start_step=0, end_step=0)  # end: train.steps = 25, not on the grid
  assert float(scheduled_sparsity(24, uneven, 25)) == pytest.approx(0.8 * (1 - 0.2 ** 3))
  assert float(scheduled_sparsity(25, uneven, 25)) == pytest.approx(0.8)
  at_once = prune_config(start_step=5, end_step=5)
  assert [float(scheduled_sparsity(t, at_once, 25)) for t in (4, 5, 6)] == pytest.approx(
      [0.0, 0.8, 0.8])


@pytest.mark.slow
def test_gradual_pruning_during_training_keeps_pruned_weights_at_zero():
  cfg, params = tiny_params()
  config = get_config()
  config.optim.warmup_steps = 0
  prune_cfg = prune_config(sparsity=0.6, start_step=2, end_step=6, every=2)
  tx = make_optimizer(config.optim, 8)
  step = jax.jit(functools.partial(
      train_step, model=Transformer(cfg), tx=tx, schedule=make_schedule(config.optim, 8),
      accum_steps=1, prune=make_prune_fn(prune_cfg, 8)))
  state = TrainState(step=jnp.int32(0), params=params, opt_state=tx.init(params),
                     rng=jax.random.PRNGKey(1), skipped_steps=jnp.int32(0))
  zeros_before = None
  for t in range(1, 9):
    tokens = jax.random.randint(jax.random.PRNGKey(t), (2, 9), 0, 32)
    state, _ = step(state, tokens)
    kernel = state.params['layer_1']['mlp']['gate']['kernel']
    target = float(scheduled_sparsity(t, prune_cfg, 8))
    assert int(jnp.sum(kernel == 0)) == round(target * kernel.size), t
    zeros = np.asarray(kernel == 0)
    if zeros_before is not None:
      assert np.all(zeros[zeros_before]), f'a pruned weight came back at update {t}'
    zeros_before = zeros
  assert sparsity_of(state.params) == pytest.approx(0.6, abs=2e-3)


def run_json(capsys, *argv) -> dict:
  capsys.readouterr()
  assert launch.main(list(argv)) == 0
  return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.mark.slow
def test_cli_prune_and_int8_on_a_trained_run(shared_trained_run, tmp_path, capsys):
  run_dir = str(shared_trained_run)
  base = run_json(capsys, 'eval', '--run_dir', run_dir, '--json')
  int8 = run_json(capsys, 'eval', '--run_dir', run_dir, '--json', '--quantize', 'int8')
  assert int8['quantize'] == 'int8' and int8['loss'] != base['loss']
  assert int8['loss'] == pytest.approx(base['loss'], abs=0.02)
  pruned_dir = tmp_path / 'pruned'
  result = run_json(capsys, 'prune', '--run_dir', run_dir, '--sparsity', '0.5', '--output_dir',
                    str(pruned_dir), '--json')
  assert result['step'] == 20 and result['sparsity'] == pytest.approx(0.5, abs=1e-3)
  pruned = run_json(capsys, 'eval', '--run_dir', str(pruned_dir), '--json')
  assert pruned['step'] == 20 and pruned['loss'] > base['loss']
  config = json.loads((pruned_dir / 'config.json').read_text())
  assert config['prune'] == {'sparsity': 0.5, 'start_step': 20, 'end_step': 20, 'every': 100}
  capsys.readouterr()
  assert launch.main(['sample', '--run_dir', run_dir, '--prompt', 'def ', '--tokens', '6',
                      '--temperature', '0', '--quantize', 'int8']) == 0
  assert capsys.readouterr().out.startswith('def ')
  assert launch.main(['prune', '--run_dir', run_dir, '--sparsity', '1.5', '--output_dir',
                      str(tmp_path / 'x')]) == 2
  assert launch.main(['prune', '--run_dir', run_dir, '--sparsity', '0.5', '--output_dir',
                      str(pruned_dir)]) == 2  # not empty
  assert 'is not empty' in capsys.readouterr().err
