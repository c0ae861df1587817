"""Trials that span a pod: two local processes joined by jax.distributed run one sweep. Process 0
asks the study and broadcasts each trial, both train it (and hear the pruner's answer at every
evaluation), process 0 reports. The trials equal those of one process with two devices."""

import portpicker
import pytest
from optuna.trial import TrialState

from tests.sweep_helpers import finish, load_study, records, start_sweep, sweep_dir, \
    write_sweep_config

SPACE = {'optim.lr': 'choice(3e-3, 1e-2)'}


@pytest.mark.slow
def test_each_trial_spans_two_processes_and_matches_one_process(tmp_path):
  port = portpicker.pick_unused_port()
  config = write_sweep_config(tmp_path, SPACE, name='pod', pruner='median')
  reference = write_sweep_config(tmp_path, SPACE, name='single', pruner='median')
  joined = [f'--config.distributed.coordinator=127.0.0.1:{port}',
            '--config.distributed.num_processes=2', '--config.distributed.timeout_s=120']
  processes = [start_sweep(config, *joined, f'--config.distributed.process_id={index}')
               for index in (0, 1)]
  processes.append(start_sweep(reference, env={
      'XLA_FLAGS': '--xla_force_host_platform_device_count=2'}))
  try:
    results = [finish(process, timeout_s=600) for process in processes]
  finally:
    for process in processes:
      if process.poll() is None:
        process.kill()
        process.communicate()
  for who, (code, _, err) in zip(('process 0', 'process 1', 'one process'), results):
    assert code == 0, f'{who} exited with {code}:\n{err[-3000:]}'
  assert 'trial 1: complete' in results[0][1] and 'written to' in results[0][1]
  assert 'trial' not in results[1][1] and 'sweep' not in results[1][1]  # process 1 follows
  pod, single = load_study(tmp_path, 'pod'), load_study(tmp_path, 'single')
  assert [t.state for t in pod.trials] == [TrialState.COMPLETE] * 2
  for two, one in zip(pod.trials, single.trials):
    assert two.params == one.params
    assert two.value == pytest.approx(one.value, rel=1e-5)
    assert two.intermediate_values[10] == pytest.approx(one.intermediate_values[10], rel=1e-5)
    run_dir = sweep_dir(tmp_path, 'pod') / two.user_attrs['run_dir']
    assert [r['step'] for r in records(run_dir, 'train')] == [5, 10, 15, 20]  # logged once
    assert records(run_dir, 'summary')[0]['validation_loss'] == two.value
