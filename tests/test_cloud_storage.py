"""A run whose run directory and corpus cache are in a bucket (gs://), against a GCS emulator.

The test starts `gcp-storage-emulator` (through tests/gcs_emulator.py, which adds the generation
headers tensorstore needs) on a free loopback port, in memory, with a bucket `bkt`, and stops it
afterwards. Every layer that writes to the bucket is pointed at it:

  gcsfs (through etils.epath: config.json, metrics.jsonl, loss.png, the corpus, checkpoint
  folders and metadata) and google-cloud-storage (tensorboardX's event files) read
  STORAGE_EMULATOR_HOST; tensorstore (the checkpoint arrays, through orbax) reads
  TENSORSTORE_GCS_HTTP_URL. GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false keeps gcsfs from asking the
  Storage Control API (which the emulator lacks) what kind of bucket it is.

The run trains 10 steps (of a 20-step schedule); its newest checkpoint is damaged and a
half-written save left beside it; it is resumed from its older gs:// checkpoint to 20, and
`launch.py eval` reads it back. Its losses must equal those of the same run on local disk, and
the bucket (read with the google-cloud-storage client, not with the code under test) must hold
every file of a run.
"""

import json
import os
import socket
import struct
import subprocess
import sys
import time

import portpicker
import pytest

from tests.tiny_run import ROOT, run_cli, tiny_flags, write_corpus

BUCKET = 'bkt'
EMULATOR = [sys.executable, str(ROOT / 'tests' / 'gcs_emulator.py')]


@pytest.fixture
def gcs_emulator(request, tmp_path):
  """{'env': the variables that point every client at the emulator, 'client': a
  google.cloud.storage client of it}; the emulator is stopped when the test ends."""
  port = portpicker.pick_unused_port()
  log = open(tmp_path / 'emulator.log', 'w')  # pylint: disable=consider-using-with
  process = subprocess.Popen(
      [*EMULATOR, 'start', '--host=127.0.0.1', f'--port={port}', '--in-memory',
       f'--default-bucket={BUCKET}'], stdout=log, stderr=subprocess.STDOUT)

  def stop():
    process.terminate()
    try:
      process.wait(timeout=10)
    except subprocess.TimeoutExpired:
      process.kill()
      process.wait()
    log.close()
  request.addfinalizer(stop)

  deadline = time.monotonic() + 30
  while True:
    assert process.poll() is None, (tmp_path / 'emulator.log').read_text()
    try:
      socket.create_connection(('127.0.0.1', port), timeout=1).close()
      break
    except OSError:
      assert time.monotonic() < deadline, 'the GCS emulator did not start within 30 s'
      time.sleep(0.2)
  url = f'http://127.0.0.1:{port}'
  env = {'STORAGE_EMULATOR_HOST': url, 'TENSORSTORE_GCS_HTTP_URL': url,
         'GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT': 'false'}
  os.environ['STORAGE_EMULATOR_HOST'] = url  # for the client below, and only while it is made
  try:
    from google.cloud import storage  # pylint: disable=import-outside-toplevel
    client = storage.Client(project='test')
  finally:
    del os.environ['STORAGE_EMULATOR_HOST']
  return {'env': env, 'client': client}


def _strict_losses(text: str) -> dict[int, float]:
  def refuse(constant):
    raise ValueError(f'{constant} is not JSON')
  records = [json.loads(line, parse_constant=refuse) for line in text.splitlines()]
  steps = [r['step'] for r in records if r['kind'] == 'train']
  assert len(steps) == len(set(steps)), 'a step is logged twice'
  return {r['step']: r['loss'] for r in records if r['kind'] == 'train'}


def _event_records(data: bytes) -> int:
  """How many TFRecords (TensorBoard events) `data` holds; AssertionError if it is cut short."""
  count, offset = 0, 0
  while offset < len(data):
    length = struct.unpack('<Q', data[offset:offset + 8])[0]
    offset += 8 + 4 + length + 4  # length, its CRC, the event, its CRC
    count += 1
  assert offset == len(data), 'a TensorBoard event file ends inside a record'
  return count


@pytest.mark.slow
def test_a_run_in_a_bucket_trains_resumes_and_evaluates(tmp_path, gcs_emulator):
  write_corpus(tmp_path)
  env = gcs_emulator['env']
  run_dir = f'gs://{BUCKET}/runs/x'

  def train_in_bucket(steps):
    flags = tiny_flags(tmp_path, run_dir, train__steps=steps, optim__decay_steps=20,
                       checkpoint__every=5, data__cache_dir=f'gs://{BUCKET}/cache',
                       data__mirror_dir=tmp_path / 'mirror')
    return run_cli(['train'] + flags, env=env)

  first = train_in_bucket(10)
  assert first.returncode == 0, first.stderr[-3000:]
  # Damage checkpoint 10 (its array data is gone) and leave a half-written save of step 15 (no
  # commit_success.txt): the resume must restore step 5, move 10 aside and remove 15.
  bucket = gcs_emulator['client'].bucket(BUCKET)
  data_files = [b for b in bucket.list_blobs(prefix='runs/x/checkpoints/10/state/')
                if '/d/' in b.name]
  assert data_files
  for blob in data_files:
    blob.delete()
  bucket.blob('runs/x/checkpoints/15/state/_METADATA').upload_from_string('{}')
  resumed = train_in_bucket(20)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  resumed_line = next(line for line in resumed.stderr.splitlines() if 'resumed from' in line)
  assert resumed_line.startswith(f'resumed from checkpoint step 5 in {run_dir}/checkpoints: '
                                 'removed a half-written save (15); step 10 does not restore')
  assert resumed_line.endswith(f'moved to {run_dir}/damaged_checkpoints/10'), resumed_line
  local = run_cli(['train'] + tiny_flags(tmp_path, tmp_path / 'local', train__steps=20,
                                         optim__decay_steps=20))
  assert local.returncode == 0, local.stderr[-3000:]
  evaluated = run_cli(['eval', '--run_dir', run_dir], env=env)
  assert evaluated.returncode == 0, evaluated.stderr[-3000:]

  # What is in the bucket, read with the plain GCS client.
  blobs = {blob.name: blob for blob in gcs_emulator['client'].list_blobs(BUCKET)}
  names = set(blobs)
  for name in ('config.json', 'metrics.jsonl', 'loss.png', 'checkpoints/15/commit_success.txt',
               'checkpoints/20/commit_success.txt', 'damaged_checkpoints/10/commit_success.txt'):
    assert f'runs/x/{name}' in names, sorted(names)
  assert any(n.startswith('runs/x/checkpoints/20/state/') for n in names)  # tensorstore arrays
  events = [n for n in names if n.startswith('runs/x/tb/events.out.tfevents.')]
  assert len(events) == 2  # one per run, each with its scalars (beyond the version record)
  assert all(_event_records(blobs[n].download_as_bytes()) > 10 for n in events)
  assert blobs['runs/x/loss.png'].download_as_bytes()[:4] == b'\x89PNG'
  corpus = sorted({n.split('/')[1] for n in names if n.startswith('cache/')})
  assert len(corpus) == 1
  for name in ('manifest.json', 'train.bin', 'validation.bin'):
    assert f'cache/{corpus[0]}/{name}' in names

  # The same numbers as on local disk: data, resume and restore went through the bucket intact.
  in_bucket = _strict_losses(blobs['runs/x/metrics.jsonl'].download_as_text())
  on_disk = _strict_losses((tmp_path / 'local' / 'metrics.jsonl').read_text())
  assert sorted(in_bucket) == list(range(1, 21))
  assert in_bucket == pytest.approx(on_disk, rel=1e-6)
  local_records = map(json.loads, (tmp_path / 'local' / 'metrics.jsonl').read_text().splitlines())
  local_eval = [r for r in local_records if r['kind'] == 'eval'][-1]
  assert local_eval['step'] == 20
  printed = float(evaluated.stdout.split('validation loss ')[1].split()[0])
  assert printed == pytest.approx(local_eval['loss'], abs=1e-4)  # printed with 4 decimals
  mirrored = tmp_path / 'mirror' / 'gs' / BUCKET / 'cache' / corpus[0] / 'train.bin'
  assert mirrored.read_bytes() == blobs[f'cache/{corpus[0]}/train.bin'].download_as_bytes()
  assert not (ROOT / 'gs:').exists() and not (tmp_path / 'gs:').exists()  # no local look-alike
