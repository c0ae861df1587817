"""Several processes must share one run directory (a shared file system or a gs:// bucket).

Two local processes joined by `jax.distributed` are given different `--run_dir`s, as two hosts
with their own disks would each see their own `runs/x`: process 0's marker is not there for
process 1, so both stop at start with one line naming the fix and exit status 2, before any
data preparation or compilation. (tests/test_multihost.py runs two processes on one shared
directory, where the same check passes.)
"""

import time

import portpicker
import pytest

from tests import multidevice
from tests.test_multihost import _train_command
from train.run_dir import SHARED_MARKER


@pytest.mark.slow
def test_processes_that_see_different_run_directories_stop_at_start(tmp_path):
  corpus = tmp_path / 'corpus'
  corpus.mkdir()
  (corpus / 'doc.txt').write_text('def f(x):\n  return x\n' * 200)
  port = portpicker.pick_unused_port()
  start = time.monotonic()
  processes = [multidevice.start_command(
      _train_command(tmp_path / f'disk{i}' / 'runs' / 'x', corpus,
                     f'--config.distributed.coordinator=127.0.0.1:{port}',
                     '--config.distributed.num_processes=2', '--config.distributed.timeout_s=60',
                     f'--config.distributed.process_id={i}'), devices=1) for i in (0, 1)]
  outputs = multidevice.finish_all(processes, timeout_s=120)
  for index, (code, _, err) in enumerate(outputs):
    lines = [line for line in err.splitlines() if line.startswith('error:')]
    assert code == 2, f'process {index} exited with {code}:\n{err[-3000:]}'
    assert len(lines) == 1 and 'process 1 does not see the run directory' in lines[0], err
    assert 'use a shared file system or a gs:// bucket for --run_dir' in lines[0]
    assert 'Traceback' not in err
  assert time.monotonic() - start < 90
  assert not (tmp_path / 'disk0' / 'runs' / 'x' / SHARED_MARKER).exists()  # cleaned up
  assert not (corpus.parent / 'cache').exists()  # stopped before preparing any data
