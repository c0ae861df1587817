"""A checkpoint written on one mesh restores onto another, and training continues unchanged.

Reference: 4 steps without a break on one device. Then 2 steps on (2,2,2) under dp_fsdp_tp and
2 steps on (1,8,1) under fsdp, each saved with `train/checkpoint.py`; the first restores in the
same process onto (8,1,1) under fsdp, the second in a new process that has only 4 devices onto
(1,2,2) under fsdp_tp. The last 2 losses of every continuation equal the reference's.
"""

import pytest

from tests import multidevice


@pytest.mark.slow
def test_restore_on_another_mesh_and_device_count(tmp_path):
  a, b = str(tmp_path / 'a'), str(tmp_path / 'b')
  gpt2 = dict(model='gpt2')
  first = multidevice.run('restore_worker.py', '--devices', '8', '--jobs', multidevice.jobs_arg([
      dict(gpt2, rules='dp', mesh=[1, 1, 1], steps=[0, 4]),
      dict(gpt2, rules='dp_fsdp_tp', mesh=[2, 2, 2], steps=[0, 2], save=a),
      dict(gpt2, rules='fsdp', mesh=[1, 8, 1], steps=[0, 2], save=b),
      dict(gpt2, rules='fsdp', mesh=[8, 1, 1], steps=[2, 4], restore=a),
  ]), timeout_s=240)
  second = multidevice.run('restore_worker.py', '--devices', '4', '--jobs', multidevice.jobs_arg([
      dict(gpt2, rules='fsdp_tp', mesh=[1, 2, 2], steps=[2, 4], restore=b),
  ]), timeout_s=240)
  reference = first[0]['losses']
  for saved in first[1:3]:
    assert saved['losses'] == pytest.approx(reference[:2], rel=1e-5)
  for resumed in (first[3], second[0]):
    assert resumed['final_step'] == 4
    assert resumed['losses'] == pytest.approx(reference[2:], rel=1e-5), resumed
