"""`launch.py mup coord-check` end to end: under muP the activations stay flat in width, under SP
the hidden outputs and logits grow.

A 1-layer byte model on the small synthetic corpus, widths 32 to 256, 3 AdamW steps at lr 1e-2;
the CLI runs in a subprocess with XLA's quick compile flags (8 models compile). The slope of
log mean |activation| against log width, fitted from the CSV it writes at the last step, must
be within 0.2 of zero for every activation under muP and above 0.5 for the attention and MLP
outputs and the logits under SP (measured: muP -0.10 .. +0.02, SP +0.83 .. +2.88).
"""

import csv
import os
import subprocess

import pytest

from experiments.mup_coord_check import slopes
from tests.tiny_run import cli_command, write_corpus

FAST_COMPILE = '--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true'


@pytest.mark.slow
def test_coord_check_is_flat_under_mup_and_grows_under_sp(tmp_path):
  write_corpus(tmp_path)
  out = tmp_path / 'coord'
  args = ['mup', 'coord-check', '--config', 'configs/tiny.py', '--widths', '32,64,128,256',
          '--steps', '3', '--out', str(out),
          f'--config.data.source={tmp_path / "corpus.txt"}',
          f'--config.data.cache_dir={tmp_path / "cache"}', '--config.data.validation_fraction=0.1',
          '--config.data.seq_len=16', '--config.model.n_layers=1', '--config.model.n_heads=2',
          '--config.train.batch_size=4', '--config.optim.lr=1e-2']
  env = dict(os.environ, XLA_FLAGS=FAST_COMPILE)
  done = subprocess.run(cli_command(args), env=env, capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  assert (out / 'coord_check.png').stat().st_size > 10_000
  with open(out / 'coord_check.csv') as f:
    records = [dict(r, width=int(r['width']), step=int(r['step']), value=float(r['value']))
               for r in csv.DictReader(f)]
  fitted = slopes(records, step=3)
  assert {name for _, name in fitted} == {'embedding', 'layer_0.attn', 'layer_0.mlp', 'logits'}
  for (parameterization, name), slope in fitted.items():
    if parameterization == 'mup':
      assert abs(slope) < 0.2, (name, slope)
    elif name != 'embedding':  # the embedding is width-independent under both
      assert slope > 0.5, (name, slope)
  assert '| logits |' in (out / 'slopes.md').read_text()
