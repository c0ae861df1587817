"""Several processes: two local processes of 4 CPU devices each equal one process of 8.

The processes join over loopback with `sharding/distributed.py` (explicit coordinator,
process count and id, as on a cluster without auto-detection); each feeds only its own rows of
the global batch. One job shards FSDP across both processes, the other is a two-level mesh
whose 'data' axis spans the processes (`mesh.dcn_data=2`, the processes standing in for
slices). A process whose peer never comes must report it and exit, not hang. Finally
`launch.py train` itself runs on two processes: same losses as one process, logged once.
"""

import json
import time

import numpy as np
import portpicker
import pytest

from tests import multidevice

SINGLE = [dict(model='gpt2', rules='fsdp', mesh=[1, 8, 1]),
          dict(model='gpt2', rules='dp_fsdp_tp', mesh=[2, 2, 2])]
MULTI = [dict(model='gpt2', rules='fsdp', mesh=[1, 8, 1]),
         dict(model='gpt2', rules='dp_fsdp_tp', mesh=[1, 2, 2], dcn_data=2)]


def _distributed_args(port: int, process_id: int, count: int = 2, timeout_s: int = 60):
  return ('--coordinator', f'127.0.0.1:{port}', '--num_processes', str(count), '--process_id',
          str(process_id), '--timeout_s', str(timeout_s))


@pytest.mark.slow
def test_two_processes_match_one(tmp_path):
  single_dir, multi_dir = tmp_path / 'single', tmp_path / 'multi'
  single_dir.mkdir()
  multi_dir.mkdir()
  port = portpicker.pick_unused_port()
  workers = [multidevice.start('sharding_worker.py', '--devices', '4', '--jobs',
                               multidevice.jobs_arg(MULTI), '--out', str(multi_dir),
                               *_distributed_args(port, index)) for index in (0, 1)]
  workers.append(multidevice.start('sharding_worker.py', '--devices', '8', '--jobs',
                                   multidevice.jobs_arg(SINGLE), '--out', str(single_dir)))
  results = multidevice.finish_all(workers, timeout_s=240)
  for who, (code, _, err) in zip(('process 0', 'process 1', 'single'), results):
    assert code == 0, f'{who} exited with {code}:\n{err[-3000:]}'
  multi, single = results[0][1], results[2][1]
  assert results[1][1] == []  # only process 0 reports
  assert len(multi) == len(single) == 2
  for one, two in zip(single, multi):
    assert two['losses'] == pytest.approx(one['losses'], rel=1e-5), two
  for index in range(len(SINGLE)):
    expected = np.load(single_dir / f'params_{index}.npz')
    got = np.load(multi_dir / f'params_{index}.npz')
    assert sorted(expected.files) == sorted(got.files)
    for name in expected.files:
      scale = max(np.abs(expected[name]).max(), 1e-2)
      np.testing.assert_allclose(got[name], expected[name], rtol=0, atol=1e-5 * scale,
                                 err_msg=name)


@pytest.mark.slow
def test_a_missing_peer_is_reported_not_hung_on():
  port = portpicker.pick_unused_port()
  start = time.monotonic()
  worker = multidevice.start('sharding_worker.py', '--devices', '4', '--jobs',
                             multidevice.jobs_arg(MULTI[:1]),
                             *_distributed_args(port, 0, timeout_s=3))
  code, lines, err = multidevice.finish(worker, timeout_s=90)
  assert code == 3 and lines == []
  assert 'did not come together within 3s' in err
  assert 'process 0 of 2 (coordinator 127.0.0.1:' in err
  assert time.monotonic() - start < 60


def _train_command(run_dir, corpus, *extra):
  return ['launch.py', 'train', '--config', 'configs/tiny.py', '--run_dir', str(run_dir),
          '--no_progress', f'--config.data.source={corpus}',
          f'--config.data.cache_dir={corpus.parent / "cache"}',
          '--config.data.validation_fraction=0.2', '--config.model.d_model=32',
          '--config.model.n_layers=1', '--config.model.max_len=32', '--config.data.seq_len=32',
          '--config.train.batch_size=8', '--config.train.steps=4', '--config.train.log_every=1',
          '--config.train.eval_every=2', '--config.train.eval_batches=1',
          '--config.train.sample_tokens=0', *extra]


def _records(run_dir, kind):
  lines = (run_dir / 'metrics.jsonl').read_text().splitlines()
  return [r for r in map(json.loads, lines) if r['kind'] == kind]


@pytest.mark.slow
def test_launch_train_on_two_processes_logs_once_and_matches_one(tmp_path):
  corpus = tmp_path / 'corpus'
  corpus.mkdir()
  for i in range(30):
    (corpus / f'doc{i}.txt').write_text(f'def f{i}(x):\n  return x * {i} + {i % 7}\n' * 60)
  port = portpicker.pick_unused_port()
  joined = (f'--config.distributed.coordinator=127.0.0.1:{port}',
            '--config.distributed.num_processes=2')
  multi = [multidevice.start_command(
      _train_command(tmp_path / 'multi', corpus, *joined, f'--config.distributed.process_id={i}'),
      devices=4) for i in (0, 1)]
  single = multidevice.start_command(_train_command(tmp_path / 'single', corpus), devices=8)
  outputs = multidevice.finish_all([*multi, single], timeout_s=240)
  for (code, _, err), who in zip(outputs, ('process 0', 'process 1', 'single')):
    assert code == 0, f'{who} exited with {code}:\n{err[-3000:]}'
  assert 'train loss' in multi[0].stdout_text
  assert 'train loss' not in multi[1].stdout_text  # only process 0 reports and logs
  assert 'backend: cpu, 8 devices (cpu) on 2 processes' in multi[0].stdout_text
  assert 'backend:' not in multi[1].stdout_text
  two, one = _records(tmp_path / 'multi', 'train'), _records(tmp_path / 'single', 'train')
  assert [r['step'] for r in two] == [1, 2, 3, 4]  # each step logged once, by process 0
  assert [r['loss'] for r in two] == pytest.approx([r['loss'] for r in one], rel=1e-5)
  assert _records(tmp_path / 'multi', 'eval')[-1]['loss'] == pytest.approx(
      _records(tmp_path / 'single', 'eval')[-1]['loss'], rel=1e-5)
