"""The PyTorch reference trains the same model as ours: same parameter count, and with our
weights copied in, the same logits (float32 round-off); the comparison alternates and reports
the ratio's spread; without PyTorch both scripts stop in one line."""

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.core import meta

from benchmarks import compare_torch
from benchmarks.shapes import BASE_CONFIG, shape_overrides
from models.config import TransformerConfig
from models.counting import param_count
from models.transformer import Transformer, init_params
from tests.tiny_run import ROOT
from train.config import load_config


def small_gpt_config():
  return load_config(BASE_CONFIG, shape_overrides('gpt_byte') + [
      '--config.model.d_model=32', '--config.model.n_layers=2', '--config.model.n_heads=2',
      '--config.model.max_len=16', '--config.data.seq_len=16', '--config.train.batch_size=2'])


def copy_into_torch(params, model, cfg: TransformerConfig):
  import torch
  p = jax.tree.map(lambda x: torch.from_numpy(np.asarray(x).copy()), meta.unbox(params))
  with torch.no_grad():
    model.embedding.weight.copy_(p['embedding'])
    model.position_embedding.weight.copy_(p['position_embedding'])
    for i, block in enumerate(model.blocks):
      layer, d = p[f'layer_{i}'], cfg.d_model
      attn, mlp = layer['attn'], layer['mlp']
      block.qkv.weight.copy_(torch.cat([attn[n]['kernel'].reshape(d, -1)
                                        for n in ('query', 'key', 'value')], 1).T)
      block.qkv.bias.copy_(torch.cat([attn[n]['bias'].reshape(-1)
                                      for n in ('query', 'key', 'value')]))
      block.out.weight.copy_(attn['out']['kernel'].reshape(-1, d).T)
      block.out.bias.copy_(attn['out']['bias'])
      for ours, theirs in ((mlp['up'], block.up), (mlp['down'], block.down)):
        theirs.weight.copy_(ours['kernel'].T)
        theirs.bias.copy_(ours['bias'])
      for name in ('attn_norm', 'mlp_norm'):
        getattr(block, name).weight.copy_(layer[name]['scale'])
        getattr(block, name).bias.copy_(layer[name]['bias'])
    model.final_norm.weight.copy_(p['final_norm']['scale'])
    model.final_norm.bias.copy_(p['final_norm']['bias'])


def test_same_parameter_count_and_same_logits_as_our_model():
  torch = pytest.importorskip('torch')
  from benchmarks import torch_reference
  config = small_gpt_config()
  cfg = TransformerConfig.from_dict(config.model)
  model = torch_reference.Gpt(cfg)
  assert sum(p.numel() for p in model.parameters()) == param_count(cfg)
  params = init_params(cfg, jax.random.PRNGKey(0), 16)
  params = jax.tree.map(  # nonzero biases and norm offsets, so a misplaced one shows
      lambda x: x + 0.05 * jax.random.normal(jax.random.PRNGKey(1), x.shape), params)
  copy_into_torch(params, model, cfg)
  tokens = np.random.default_rng(0).integers(0, 256, (2, 16))
  ours = Transformer(cfg).apply({'params': params}, jnp.asarray(tokens))
  theirs = model(torch.from_numpy(tokens)).detach().numpy()
  np.testing.assert_allclose(theirs, np.asarray(ours), atol=2e-5, rtol=1e-4)


def test_reference_trains_and_reports_tokens_per_second():
  pytest.importorskip('torch')
  from benchmarks import torch_reference
  result = torch_reference.benchmark(small_gpt_config(), steps=2, warmup_steps=1)
  assert result['parameters'] == result['parameters_ours'] and result['tokens_per_s'] > 0
  assert 'parameters' in torch_reference.format_result(result)


def test_comparison_alternates_and_reports_the_ratio_spread():
  calls = []

  def fake_run(command):
    framework = 'jax' if 'launch.py' in command[1] else 'pytorch'
    calls.append(framework)
    rate = {'jax': [100.0, 90.0, 120.0], 'pytorch': [100.0, 100.0, 100.0]}[framework]
    tokens_per_s = rate[calls.count(framework) - 1]
    return {'tokens_per_s': tokens_per_s, 'compile_s': 1.0, 'batch': 16, 'seq_len': 256,
            'parameters': 10, 'step_s_min': 0.5 * 4096 / tokens_per_s}

  summary = compare_torch.compare('gpt_byte', 0, 3, 2, run=fake_run)
  assert calls == ['jax', 'pytorch', 'pytorch', 'jax', 'jax', 'pytorch']
  assert summary['ratios'] == pytest.approx([1.0, 0.9, 1.2])
  assert 'ratio JAX/PyTorch  0.90 / 1.00 / 1.20' in compare_torch.format_summary(summary)
  assert 'ratio of the fastest steps  0.90 / 1.00 / 1.20' in compare_torch.format_summary(summary)
  assert summary['jax_command'].startswith('python launch.py bench --config configs/gpt2_small.py')


def test_without_torch_both_scripts_stop_in_one_line(tmp_path):
  (tmp_path / 'torch').mkdir()
  (tmp_path / 'torch' / '__init__.py').write_text('raise ImportError("no torch here")\n')
  done = subprocess.run([sys.executable, '-m', 'benchmarks.torch_reference'], cwd=ROOT,
                        env={'PYTHONPATH': str(tmp_path)}, capture_output=True, text=True)
  assert done.returncode == 1 and done.stderr.strip().splitlines() == [
      'benchmarks/torch_reference.py needs PyTorch, an optional benchmark dependency: '
      'pip install -r requirements-bench.in']


def test_comparison_without_torch_stops_in_one_line(monkeypatch):
  monkeypatch.setattr(compare_torch.importlib.util, 'find_spec', lambda name: None)
  with pytest.raises(SystemExit, match='needs PyTorch'):
    compare_torch.main(['--rounds', '1'])
