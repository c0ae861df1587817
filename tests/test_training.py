"""End to end: a short training run through the CLI falls in loss and writes every artefact."""

import json
import struct

import pytest
from tensorboardX.proto import event_pb2

import launch
from train.metrics import read_metrics

CORPUS = ''.join(f'def function_{i}(x):\n    return x * {i} + {i % 7}\n\n' for i in range(400))


def read_tensorboard_scalars(event_file) -> dict[str, list[float]]:
  """Parses a TensorBoard event file (TFRecord framing + Event protos) independently of the writer."""
  scalars, data = {}, event_file.read_bytes()
  offset = 0
  while offset < len(data):
    (length,) = struct.unpack('<Q', data[offset:offset + 8])
    record = data[offset + 12:offset + 12 + length]
    offset += 12 + length + 4
    event = event_pb2.Event.FromString(record)
    for value in event.summary.value:
      scalars.setdefault(value.tag, []).append(value.simple_value)
  return scalars


@pytest.mark.slow
def test_short_run_learns_and_writes_artefacts(tmp_path, capsys):
  (tmp_path / 'corpus.txt').write_text(CORPUS)
  run_dir = tmp_path / 'run'
  code = launch.main([
      'train', '--config', 'configs/tiny.py', '--run_dir', str(run_dir),
      f'--config.data.source={tmp_path / "corpus.txt"}',
      f'--config.data.cache_dir={tmp_path / "cache"}',
      '--config.data.validation_fraction=0.1',
      '--config.model.d_model=64', '--config.model.n_layers=2', '--config.model.n_heads=2',
      '--config.model.max_len=64', '--config.data.seq_len=64', '--config.train.batch_size=8',
      '--config.train.steps=60', '--config.train.log_every=10', '--config.train.eval_every=20',
      '--config.optim.warmup_steps=10', '--config.train.sample_tokens=40',
      '--config.train.sample_prompt=def '])
  assert code == 0
  out = capsys.readouterr().out
  assert 'validation loss' in out and 'bits/byte' in out and 'sample:' in out

  train = read_metrics(run_dir, 'train')
  evals = read_metrics(run_dir, 'eval')
  summary = read_metrics(run_dir, 'summary')[0]
  assert [r['step'] for r in train] == [10, 20, 30, 40, 50, 60]
  assert [r['step'] for r in evals] == [20, 40, 60]
  assert train[-1]['loss'] < 0.5 * train[0]['loss']
  assert evals[-1]['loss'] < evals[0]['loss']
  assert summary['validation_bits_per_byte'] < summary['unigram_bits_per_byte']
  assert json.loads((run_dir / 'config.json').read_text())['model']['d_model'] == 64
  assert (run_dir / 'loss.png').stat().st_size > 10_000
  assert (run_dir / 'sample.txt').read_text().startswith('def ')

  event_files = list((run_dir / 'tb').glob('events.out.tfevents.*'))
  assert len(event_files) == 1
  scalars = read_tensorboard_scalars(event_files[0])
  assert scalars['train/loss'] == pytest.approx([r['loss'] for r in train])
  assert scalars['eval/loss'] == pytest.approx([r['loss'] for r in evals])


def test_bits_per_byte_conversion():
  from train.evaluation import bits_per_byte
  import math
  # 2 ln(2) nats/token = 2 bits/token; 4 bytes per token -> 0.5 bits/byte.
  assert bits_per_byte(2 * math.log(2), {'tokens': 100, 'bytes': 400}) == pytest.approx(0.5)
