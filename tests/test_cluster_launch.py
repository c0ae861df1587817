"""Starting runs on clusters: the `jax.distributed` arguments of each kind of cluster.

Nothing here contacts a cluster: the distributed set-up is checked through the arguments it
would pass (the real joining of processes is test_multihost.py; `launch.py pod` is test_pod.py).
"""

import ml_collections
import pytest

from errors import UserError
from sharding import distributed
from tests.tiny_run import ROOT


def _dist(coordinator='auto', num_processes=0, process_id=-1, timeout_s=300):
  return ml_collections.ConfigDict(dict(coordinator=coordinator, num_processes=num_processes,
                                        process_id=process_id, timeout_s=timeout_s))


def _no_cluster(monkeypatch):
  for name in ('SLURM_JOB_ID', 'SLURM_STEP_NODELIST', 'SLURM_NTASKS', 'SLURM_PROCID',
               'SLURM_LOCALID', 'OMPI_MCA_orte_hnp_uri', 'OMPI_COMM_WORLD_SIZE',
               'TPU_WORKER_HOSTNAMES', distributed.POD_MARKER):
    monkeypatch.delenv(name, raising=False)


def test_single_process_unless_asked_or_detected(monkeypatch):
  _no_cluster(monkeypatch)
  assert distributed._arguments(_dist('none')) is None
  assert distributed._arguments(_dist('auto')) is None
  assert distributed.initialize(_dist('auto')) is False


def test_slurm_is_detected(monkeypatch):
  _no_cluster(monkeypatch)
  for name, value in (('SLURM_JOB_ID', '7'), ('SLURM_STEP_NODELIST', 'node[1-2]'),
                      ('SLURM_NTASKS', '2'), ('SLURM_PROCID', '1'), ('SLURM_LOCALID', '0')):
    monkeypatch.setenv(name, value)
  assert distributed.detected_cluster() == ('slurm', 2)
  assert distributed._arguments(_dist('auto')) == {}  # jax reads the rest from SLURM
  monkeypatch.setenv('SLURM_NTASKS', '1')
  assert distributed._arguments(_dist('auto')) is None


@pytest.mark.parametrize('variables, expected', [
    ({'OMPI_MCA_orte_hnp_uri': '1531576320.0;tcp://10.0.0.1:34911', 'OMPI_COMM_WORLD_SIZE': '4'},
     ('open mpi', 4)),
    ({'OMPI_COMM_WORLD_SIZE': '4'}, None),  # no coordinator address for jax to read
    ({'TPU_WORKER_HOSTNAMES': 'w-0,w-1,w-2,w-3'}, ('kubernetes tpu', 4)),
    ({'TPU_WORKER_HOSTNAMES': 'w-0'}, None),
    ({'LAUNCH_POD_WORKER': '1'}, ('cloud tpu pod', -1)),  # jax counts the workers itself
    ({'SLURM_NTASKS': 'many'}, None),
])
def test_other_launchers_are_detected_from_their_variables(monkeypatch, variables, expected):
  _no_cluster(monkeypatch)
  assert distributed.detected_cluster(variables) == expected
  for name, value in variables.items():
    monkeypatch.setenv(name, value)
  assert distributed._arguments(_dist('auto')) == ({} if expected else None)


def test_only_public_jax_api_is_used():
  sources = [p for p in ROOT.rglob('*.py') if '.venv' not in p.parts]
  assert len(sources) > 30
  offenders = [str(p.relative_to(ROOT)) for p in sources if 'jax._src' in p.read_text()
               and p.name != 'test_cluster_launch.py']
  assert offenders == []


def test_explicit_coordinator_needs_count_and_id():
  assert distributed._arguments(_dist('10.0.0.2:8476', 4, 3)) == dict(
      coordinator_address='10.0.0.2:8476', num_processes=4, process_id=3)
  with pytest.raises(UserError, match='0 <= process_id < num_processes'):
    distributed._arguments(_dist('10.0.0.2:8476', 2, 2))
  with pytest.raises(UserError, match='HOST:PORT'):
    distributed._arguments(_dist('10.0.0.2'))
