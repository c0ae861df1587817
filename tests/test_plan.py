"""`launch.py plan`: compiling the real train step for a TPU slice on a machine without TPUs.

The tests that compile need libtpu (the version jax's `tpu` extra pins) and are skipped without
it; each runs `launch.py plan` in its own process (libtpu stays out of the test process).
- a small model on v5e:2x2 under FSDP: `memory_analysis()`'s per-chip argument bytes equal the
  sharded sizes computed from the parameter count alone (parameters + two Adam moments, f32,
  over 4 chips, plus a quarter of the batch), within TPU tile padding;
- a model that does not fit one chip says so with its numbers, exit status 2, no traceback;
- --search drops the layout whose state cannot fit before compiling, and ranks the fitting ones,
  each with the `launch.py train` command that trains it.
The rest needs no libtpu: the install line without it, topology names, the out-of-memory
message, and the collectives counted per step on a hand-written HLO module.
"""

import json
import subprocess
import sys
import types

import numpy as np
import pytest

from errors import UserError
from models.config import TransformerConfig
from models.counting import param_count
from sharding import hlo_collectives, topology
from tools.plan import out_of_memory_message
from train.config import load_config

needs_libtpu = pytest.mark.skipif(not topology.libtpu_installed(),
                                  reason='libtpu is not installed (pip install jax[tpu])')

SMALL = ['--config.model.d_model=512', '--config.model.n_layers=2', '--config.model.n_heads=4',
         '--config.model.d_ff=1024', '--config.model.mlp=gelu', '--config.data.seq_len=128',
         '--config.model.max_len=128', '--config.train.batch_size=8']
# Two layers of width 8192: 1.6 B parameters, 19 GiB of f32 state: more than a v5e chip's
# 16 GiB when replicated (dp), a quarter of it under FSDP over 4 chips.
WIDE = ['--config.model.d_model=8192', '--config.model.n_layers=2', '--config.model.n_heads=64',
        '--config.model.d_ff=32768', '--config.model.mlp=gelu', '--config.data.seq_len=128',
        '--config.model.max_len=128', '--config.train.batch_size=8']
FSDP = ['--config.mesh.data=1', '--config.mesh.fsdp=-1', '--config.sharding.rules=fsdp']


def _plan(*args, timeout=600):
  return subprocess.run([sys.executable, 'launch.py', 'plan', '--config', 'configs/tiny.py',
                         '--topology', 'v5e:2x2', *args], capture_output=True, text=True,
                        timeout=timeout, check=False)


@needs_libtpu
@pytest.mark.slow
def test_argument_bytes_are_the_sharded_state_and_batch():
  done = _plan('--json', *SMALL, *FSDP)
  assert done.returncode == 0, done.stderr
  plan = json.loads(done.stdout)
  config = load_config('configs/tiny.py', SMALL)
  params = param_count(TransformerConfig.from_dict(config.model))
  # Independent of the shardings code: every parameter has an 'embed' dim that FSDP splits 4
  # ways; f32 parameters and Adam's two moments; int32 tokens [8, 129] split over 4 chips.
  expected = params * 4 * 3 / 4 + 8 * 129 * 4 / 4
  argument = plan['memory']['argument']
  assert expected <= argument < expected * 1.01, (argument, expected)
  assert plan['fits'] and plan['chips'] == 4 and plan['hbm_bytes'] == 16 * 2**30
  assert plan['memory']['total'] >= argument
  ops = {(op, tuple(axes)) for op, axes, *_ in plan['collectives']}
  assert ('all-gather', ('fsdp',)) in ops and ('reduce-scatter', ('fsdp',)) in ops
  # The compiled FLOPs per chip are the model's (6N + attention) and a little more.
  per_chip_model = plan['model_flops'] / 4
  assert plan['loops'] == 0 and plan['recompute_flops'] == 0  # no scan, remat none
  assert per_chip_model <= plan['compiled_flops'] < 1.3 * per_chip_model


@needs_libtpu
@pytest.mark.slow
def test_a_model_that_does_not_fit_says_so_with_numbers():
  done = _plan(*WIDE, '--config.sharding.rules=dp')
  assert done.returncode == 2, done.stderr
  assert 'Traceback' not in done.stderr + done.stdout
  assert 'DOES NOT FIT' in done.stdout and 'GiB' in done.stdout.split('DOES NOT FIT')[1]
  assert 'arguments by their shardings (state + batch): 18.' in done.stdout


@needs_libtpu
@pytest.mark.slow
def test_search_ranks_the_layouts_that_fit():
  done = _plan('--search', '--json', *SMALL, '--rules', 'dp,fsdp', '--remat', 'none',
               '--micro_batches', '1')
  assert done.returncode == 0, done.stderr
  result = json.loads(done.stdout)
  assert result['compiles'] == 2 and not result['misses'] and not result['skipped']
  ranked = result['fits']
  assert [row['plan']['rules'] for row in ranked] in (['dp', 'fsdp'], ['fsdp', 'dp'])
  for row in ranked:
    assert row['plan']['memory']['total'] <= 16 * 2**30 and row['tokens_per_s'] > 0
    assert row['command'].startswith('python launch.py train --config configs/tiny.py ')
    assert f"--config.sharding.rules={row['plan']['rules']}" in row['command']
  # Ranked by tokens/s (to 1%), then by collective bytes per chip.
  keys = [(-round(row['tokens_per_s'] / ranked[0]['tokens_per_s'], 2),
           sum(c[4] for c in row['plan']['collectives'])) for row in ranked]
  assert keys == sorted(keys)
  # Replicated, the wide model's state alone exceeds a v5e chip: dropped before compiling.
  done = _plan('--search', '--json', *WIDE, '--rules', 'dp')
  assert done.returncode == 2 and 'Traceback' not in done.stderr
  result = json.loads(done.stdout)
  assert result['compiles'] == 0 and not result['fits']
  assert 'alone need 18.' in result['skipped'][0][1]


def test_without_libtpu_the_error_names_the_install(monkeypatch):
  monkeypatch.setattr(topology, 'libtpu_installed', lambda: False)
  with pytest.raises(UserError, match=r"pip install 'libtpu==0\.0\.\d+"):
    topology.topology_devices('v5e:2x2')


def test_topology_names():
  assert topology.parse_topology('v5p:4x4x4') == ('v5p', (4, 4, 4))
  assert topology.chips_in('v5e:2x4', slices=2) == 16
  assert topology.chip_name('v6e:8x8') == 'TPU v6e'
  for bad in ('v5p:4x4', 'v7:2x2', 'v5e-8', 'v5e:0x2'):
    with pytest.raises(UserError, match='topology'):
      topology.parse_topology(bad)


def test_out_of_memory_message_keeps_the_numbers():
  error = RuntimeError('RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required '
                       'for HLO temporaries (52.91G) exceeds available HBM (15.75G).')
  assert out_of_memory_message(error, 16 * 2**30) == (
      'HLO temporaries alone need 52.91 GiB per chip, 15.75 GiB of HBM is available '
      '(XLA: RESOURCE_EXHAUSTED)')
  used = RuntimeError('RESOURCE_EXHAUSTED: XLA:TPU compile permanent error. Ran out of memory '
                      'in memory space hbm. Used 20.50G of 15.75G hbm. Exceeded hbm capacity')
  assert 'needs 20.50 GiB per chip, 15.75 GiB' in out_of_memory_message(used, 16 * 2**30)
  assert out_of_memory_message(RuntimeError('INTERNAL: other'), 1) is None


HLO = """HloModule jit_train_step

%add (a: f32[], b: f32[]) -> f32[] {
  %a = f32[] parameter(0)
  %b = f32[] parameter(1)
  ROOT %s = f32[] add(%a, %b)
}

%all-reduce-scatter.1 (input_0: f32[256,32]) -> f32[64,32] {
  %input_0 = f32[256,32]{1,0} parameter(0)
  %all-reduce.5 = f32[256,32]{1,0} all-reduce(%input_0), replica_groups=[1,4]<=[4], to_apply=%add
  ROOT %ds = f32[64,32]{1,0} dynamic-slice(%all-reduce.5), dynamic_slice_sizes={64,32}
}

%body (p: (s32[], f32[64,32])) -> (s32[], f32[64,32]) {
  %p = (s32[], f32[64,32]) parameter(0)
  %w = f32[64,32]{1,0} get-tuple-element(%p), index=1
  %all-gather.2 = f32[256,32]{1,0} all-gather(%w), replica_groups=[1,4]<=[4], dimensions={0}
  %fusion.7 = f32[64,32]{1,0} fusion(%all-gather.2), kind=kCustom, calls=%all-reduce-scatter.1
  ROOT %t = (s32[], f32[64,32]) tuple(%i, %fusion.7)
}

%cond (p: (s32[], f32[64,32])) -> pred[] {
  %p = (s32[], f32[64,32]) parameter(0)
  %n = s32[]{:T(128)} constant(12)
  ROOT %lt = pred[] compare(%i, %n), direction=LT
}

ENTRY %main (x: f32[64,32]) -> f32[] {
  %x = f32[64,32]{1,0} parameter(0)
  %loop = (s32[], f32[64,32]) while(%init), condition=%cond, body=%body
  %r = f32[] reduce(%x, %zero), dimensions={0,1}, to_apply=%add
  %send = (f32[3,8,128]{2,1,0}, u32[], token[]) send(%x, %aa), channel_id=4, is_host_transfer=true, frontend_attributes={_xla_megascale_reduce_operation="SUM",_xla_megascale_transfer_type="ALL_REDUCE"}
  ROOT %all-reduce.9 = f32[] all-reduce(%r), replica_groups={{0,1},{2,3}}, to_apply=%add
}
"""


def test_collectives_are_counted_per_step():
  mesh = types.SimpleNamespace(devices=np.zeros((1, 2, 2)), axis_names=('data', 'fsdp', 'tensor'))
  found, unknown = hlo_collectives.step_collectives(HLO, mesh)
  assert unknown == 0
  assert hlo_collectives.summarize(found) == {
      # in the loop of 12 iterations (counter < constant(12)): one all-gather of 256x32 f32
      # and one fused reduce-scatter whose result is 64x32 (the all-reduce inside the fusion is not counted on its own)
      ('all-gather', ('fsdp', 'tensor')): (1, 12, 12 * 256 * 32 * 4),
      ('reduce-scatter', ('fsdp', 'tensor')): (1, 12, 12 * 64 * 32 * 4),
      ('all-reduce', ('tensor',)): (1, 1, 4),
      # across slices: a host transfer to the megascale runtime, of the f32[3,8,128] it sends
      ('all-reduce', ('slices (DCN)',)): (1, 1, 3 * 8 * 128 * 4),
  }
  # XLA's known_trip_count, where present, is taken over the condition's constant.
  known = HLO.replace('body=%body', 'body=%body, backend_config={"known_trip_count":{"n":"5"}}')
  found, _ = hlo_collectives.step_collectives(known, mesh)
  assert hlo_collectives.summarize(found)[('all-gather', ('fsdp', 'tensor'))][1] == 5
  unknown = HLO.replace('constant(12)', 'parameter(1)')
  found, loops = hlo_collectives.step_collectives(unknown, mesh)
  assert loops == 1 and hlo_collectives.summarize(found)[('all-gather', ('fsdp', 'tensor'))][1] == 1
