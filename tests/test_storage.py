"""storage.py on local paths, and gs:// paths kept as URIs (pathlib made gs://b/x into gs:/b/x).

The bucket side runs against an emulator in tests/test_cloud_storage.py."""

import hashlib
import os

import pytest

from storage import absolute, as_path, is_remote, local_copy, move_tree, write_atomically
from train.checkpoint import checkpoint_dir


def test_bucket_paths_stay_uris():
  run_dir = as_path('gs://bucket/runs/x')
  assert is_remote(run_dir) and not is_remote('runs/x') and not is_remote(os.getcwd())
  assert os.fspath(checkpoint_dir(run_dir) / '10') == 'gs://bucket/runs/x/checkpoints/10'
  assert os.fspath(absolute(run_dir)) == 'gs://bucket/runs/x'  # not <cwd>/gs:/bucket/...
  assert run_dir.name == 'x' and os.fspath(run_dir.parent) == 'gs://bucket/runs'
  assert os.fspath(absolute('runs/x')) == os.path.join(os.getcwd(), 'runs', 'x')
  assert os.fspath(as_path('~/x')) == os.path.expanduser('~/x')


def test_write_atomically_replaces_whole_files(tmp_path):
  path = tmp_path / 'config.json'
  write_atomically(path, 'old\n')
  write_atomically(path, 'new\n')
  assert path.read_text() == 'new\n'
  assert [p.name for p in tmp_path.iterdir()] == ['config.json']  # no temporary left


def test_local_copy_of_a_local_file_is_the_file(tmp_path):
  path = tmp_path / 'train.bin'
  path.write_bytes(b'\x01\x02')
  digest = hashlib.sha256(b'\x01\x02').hexdigest()
  assert local_copy(path, tmp_path / 'mirror', digest) == path
  assert not (tmp_path / 'mirror').exists()


def test_move_tree_creates_the_target_parent(tmp_path):
  (tmp_path / 'checkpoints' / '10' / 'state').mkdir(parents=True)
  (tmp_path / 'checkpoints' / '10' / 'state' / 'a').write_text('x')
  move_tree(tmp_path / 'checkpoints' / '10', tmp_path / 'damaged' / '10')
  assert (tmp_path / 'damaged' / '10' / 'state' / 'a').read_text() == 'x'
  assert not (tmp_path / 'checkpoints' / '10').exists()
  with pytest.raises(OSError):
    move_tree(tmp_path / 'missing', tmp_path / 'damaged' / '11')
