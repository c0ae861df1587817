"""Per-device bytes and collectives of the compiled train step under each rule set (8 devices).

The tiny GPT-2-style model of tests/sharding_worker.py (2 layers, vocabulary padded to 104) is
compiled, never run, on 8 simulated CPU devices. Checked: memory_analysis()'s argument bytes
equal the shard shapes of the state and batch; each strategy divides the bytes it should
(FSDP over 8: an eighth; TP over 4: every layer matrix by 4); the compiled HLO holds the
collectives the strategy calls for, over the mesh axes it should (CPU lowers reduce-scatter to
all-reduce); and `launch.py memory` prints such a report from the command line.
"""

import json
import re
import subprocess
import sys
import types

import numpy as np
import pytest

from sharding import report
from tests import multidevice

JOBS = {
    'dp': (8, 1, 1),
    'fsdp': (1, 8, 1),
    'dp_fsdp': (2, 4, 1),
    'tp': (2, 1, 4),
    'fsdp_tp': (1, 2, 4),
    'dp_fsdp_tp': (2, 2, 2),
    'tp_8': (1, 1, 8),
}
MATRICES = ('query/kernel', 'key/kernel', 'value/kernel', 'out/kernel', 'up/kernel',
            'down/kernel')


@pytest.fixture(scope='module')
def reports():
  jobs = [dict(model='gpt2', rules=name.split('_8')[0], mesh=list(mesh), name=name)
          for name, mesh in JOBS.items()]
  lines = multidevice.run('sharding_worker.py', '--devices', '8', '--report', '--jobs',
                          multidevice.jobs_arg(jobs), timeout_s=300)
  return {line['name']: line for line in lines}


def _share(report, part):
  whole, per_device = report['parts'][part]
  return per_device / whole


def _layer_matrices(report):
  return {path: sizes for path, sizes in report['param_leaves'].items()
          if path.startswith('layer_') and path.endswith(MATRICES)}


def _ops(report, *, op=None, axes=None, name=None):
  return [c for c in report['collectives'] if (op is None or c[0] == op) and
          (axes is None or c[1] == list(axes)) and (name is None or re.search(name, c[3]))]


@pytest.mark.slow
def test_argument_bytes_are_the_shards_of_state_and_batch(reports):
  for name, report in reports.items():
    theory = sum(per_device for _, per_device in report['parts'].values())
    assert report['memory']['argument'] == theory, name


@pytest.mark.slow
def test_bytes_shrink_as_theory_says(reports):
  assert _share(reports['dp'], 'params') == 1.0
  # FSDP over 8: an eighth of parameters and optimizer state (plus a few replicated biases).
  for name in ('fsdp', 'fsdp_tp'):
    for part in ('params', 'opt_state'):
      assert 0.125 <= _share(reports[name], part) < 0.14, (name, part)
  for name, ways in (('fsdp', 8), ('dp_fsdp', 4), ('tp', 4), ('fsdp_tp', 8), ('dp_fsdp_tp', 4),
                     ('tp_8', 8)):
    matrices = _layer_matrices(reports[name])
    assert len(matrices) == 2 * 6  # 2 layers x (query, key, value, out; up, down for GELU)
    for path, (whole, per_device) in matrices.items():
      assert per_device * ways == whole, (name, path)
  # Hybrid sharding keeps whole copies along 'data': twice the bytes of FSDP over everything.
  assert reports['dp_fsdp']['memory']['argument'] > 1.8 * reports['fsdp']['memory']['argument']


@pytest.mark.slow
def test_data_parallel_only_all_reduces_gradients(reports):
  ops = reports['dp']['collectives']
  assert ops and all(c[0] == 'all-reduce' and c[1] == ['data'] for c in ops)


@pytest.mark.slow
def test_fsdp_gathers_weights_and_reduces_gradients_over_fsdp(reports):
  ops = reports['fsdp']['collectives']
  assert {tuple(c[1]) for c in ops} == {('fsdp',)}
  assert len(_ops(reports["fsdp"], op="all-gather")) >= 2 * 6  # every layer matrix, forward
  assert _ops(reports['fsdp'], op='all-reduce')  # the gradients' reduce-scatter, on CPU


@pytest.mark.slow
def test_tensor_parallel_has_megatrons_f_and_g_all_reduces(reports):
  report = reports['tp_8']
  assert {(c[0], tuple(c[1])) for c in report['collectives']} == {('all-reduce', ('tensor',))}
  for layer in (0, 1):
    forward = rf'^jit\(train_step\)/jvp\(Transformer\)/layer_{layer}/'
    backward = rf'transpose\(jvp\(Transformer\)\)/layer_{layer}/'
    # g: the row-parallel outputs are summed in the forward pass ...
    assert len(_ops(report, name=forward + 'attn/out/')) == 1
    assert len(_ops(report, name=forward + 'mlp/down/')) == 1
    # ... f: the column-parallel inputs' gradients are summed in the backward pass.
    assert len(_ops(report, name=backward + r'attn/\(?query')) == 1
    assert len(_ops(report, name=backward + 'mlp/up/')) == 1
  assert _ops(report, name='gather')  # the vocabulary-parallel embedding lookup


@pytest.mark.slow
def test_hybrid_sharding_never_gathers_over_data(reports):
  for name in ('dp_fsdp', 'dp_fsdp_tp'):
    gathers = _ops(reports[name], op='all-gather')
    assert gathers and all('data' not in c[1] for c in gathers), name
    assert _ops(reports[name], op='all-reduce', axes=('data',)), name  # gradients across copies
  assert _ops(reports['dp_fsdp_tp'], op='all-reduce', axes=('tensor',))


@pytest.mark.slow
def test_launch_memory_prints_a_report():
  command = [sys.executable, 'launch.py', 'memory', '--config', 'configs/tiny.py', '--devices',
             '8', '--config.model.n_layers=1', '--config.model.d_model=64',
             '--config.model.n_heads=4', '--config.data.seq_len=32', '--config.train.batch_size=8',
             '--config.mesh.data=2', '--config.mesh.fsdp=2', '--config.mesh.tensor=2',
             '--config.sharding.rules=dp_fsdp_tp', '--json']
  done = subprocess.run(command, cwd=multidevice.ROOT, capture_output=True, text=True,
                        timeout=120)
  assert done.returncode == 0, done.stderr[-2000:]
  report = json.loads(done.stdout)
  assert report['mesh'] == {'data': 2, 'fsdp': 2, 'tensor': 2}
  assert report['memory']['argument'] > 0 and report['collectives']


def test_launch_memory_rejects_a_mesh_that_does_not_fit():
  command = [sys.executable, 'launch.py', 'memory', '--devices', '8', '--config.mesh.data=3']
  done = subprocess.run(command, cwd=multidevice.ROOT, capture_output=True, text=True,
                        timeout=60)
  assert done.returncode == 2
  assert done.stderr.count('\n') == 1 and 'mesh (data=3' in done.stderr


def _fake_mesh(shape):
  return types.SimpleNamespace(devices=np.empty(shape), axis_names=('data', 'fsdp', 'tensor'))


@pytest.mark.parametrize('groups, shape, axes', [
    ("mesh['axis_0'=1,'axis_1'=8] {'axis_1'}", (1, 1, 8), ('tensor',)),
    ("mesh['axis_0'=2,'axis_1'=4], device_ids=([2,2,2]T(1,0,2)) {'axis_0'}", (2, 2, 2), ('fsdp',)),
    ('[2,4]<=[8]', (1, 2, 4), ('tensor',)),
    ('[4,2]<=[2,4]T(1,0)', (1, 2, 4), ('fsdp',)),
    ('{{0,4},{1,5},{2,6},{3,7}}', (2, 2, 2), ('data',)),
    ('{{0,1,2,3,4,5,6,7}}', (2, 2, 2), ('data', 'fsdp', 'tensor')),
])
def test_replica_groups_are_named_by_mesh_axes(groups, shape, axes):
  line = (f'%all-reduce.7 = (f32[64,32]{{1,0}}, bf16[8]{{0}}) all-reduce(%a, %b), channel_id=5, '
          f'replica_groups={groups}, use_global_device_ids=true, to_apply=%add, '
          'metadata={op_name="jit(train_step)/layer_0/attn/out/dot_general"}')
  [found] = report.collectives(line, _fake_mesh(shape))
  assert found == report.Collective('all-reduce', axes, 64 * 32 * 4 + 8 * 2,
                                    'jit(train_step)/layer_0/attn/out/dot_general')


def test_empty_replica_groups_mean_every_device():
  line = '%all-reduce.1 = f32[4]{0} all-reduce(%x), replica_groups={}, to_apply=%add'
  [found] = report.collectives(line, _fake_mesh((2, 1, 4)))
  assert found.axes == ('data', 'tensor') and found.bytes == 16
