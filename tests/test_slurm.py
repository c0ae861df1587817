"""`launch.py slurm`: the batch script it writes, its checks, and what it does against fakes.

No SLURM cluster can be reached from here, so the external commands are played by small fakes
first on PATH, each the CLI's contract rather than a mock of our code: `sbatch` records its
arguments and the script file and answers a job id as `sbatch --parsable` does; `srun` records
its arguments and either exits with a scripted status or starts the command once per task
(nodes x tasks per node, all on this machine, node 0 at 127.0.0.1) with the SLURM_* variables
that srun sets; `scontrol` lists host names and records requeues.
The generated script itself runs under the real bash.
"""

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import launch
from sharding import slurm
from tests.tiny_run import ROOT, write_corpus

PROMPT = 'it\'s "two words"; $HOME `x`'  # survives the shell only if quoted right


def run_slurm(capfd, *argv) -> tuple[int, str, str]:
  code = launch.main(['slurm', *argv])
  out, err = capfd.readouterr()
  return code, out, err


def dry_run_script(capfd, *argv) -> str:
  code, out, err = run_slurm(capfd, *argv, '--dry_run')
  assert code == 0, err
  return out.split('\n# would write ')[0]


def line_starting(text: str, prefix: str) -> str:
  [line] = [line for line in text.splitlines() if line.startswith(prefix)]
  return line


@pytest.fixture
def fakes(tmp_path, monkeypatch):
  """Fake sbatch, srun and scontrol first on PATH; their records go to tmp_path/records."""
  bin_dir, records = tmp_path / 'bin', tmp_path / 'records'
  bin_dir.mkdir()
  records.mkdir()
  scripts = {
      'sbatch': f'''\
          import json, shutil, sys
          json.dump(sys.argv[1:], open('{records}/sbatch.json', 'w'))
          shutil.copy(sys.argv[-1], '{records}/submitted.sbatch')
          print('4242;cluster')''',
      'scontrol': f'''\
          import json, sys
          with open('{records}/scontrol.jsonl', 'a') as f: f.write(json.dumps(sys.argv[1:]) + '\\n')
          if sys.argv[1:3] == ['show', 'hostnames']: print('gpu-node-7\\ngpu-node-8')''',
      'srun': f'''\
          import json, os, subprocess, sys
          json.dump(sys.argv[1:], open('{records}/srun.json', 'w'))
          if os.environ.get('FAKE_SRUN_EXIT') == 'on_sigterm':  # a run that saves, exits 75
            import signal, time
            signal.signal(signal.SIGTERM, lambda *_: sys.exit(75))
            open('{records}/srun.ready', 'w').close()
            time.sleep(60)
          if 'FAKE_SRUN_EXIT' in os.environ: sys.exit(int(os.environ['FAKE_SRUN_EXIT']))
          first = next(i for i, arg in enumerate(sys.argv[1:]) if not arg.startswith('--')) + 1
          options = dict(arg[2:].split('=', 1) for arg in sys.argv[1:first])
          nodes, per_node = int(options['nodes']), int(options['ntasks-per-node'])
          count = nodes * per_node  # every task on this machine, node 0 at 127.0.0.1
          tasks = [subprocess.Popen(sys.argv[first:], env=dict(
              os.environ, SLURM_STEP_NODELIST='127.0.0.1', SLURM_STEP_NUM_NODES=str(nodes),
              SLURM_NTASKS=str(count), SLURM_PROCID=str(rank), SLURM_LOCALID=str(rank % per_node),
              SLURM_NODEID=str(rank // per_node))) for rank in range(count)]
          sys.exit(max(task.wait() for task in tasks))''',
  }
  for name, body in scripts.items():
    path = bin_dir / name
    path.write_text(f'#!{sys.executable}\n' + textwrap.dedent(body) + '\n')
    path.chmod(0o755)
  monkeypatch.setenv('PATH', f'{bin_dir}{os.pathsep}{os.environ["PATH"]}')
  return records


def run_script(script: Path, **env) -> subprocess.CompletedProcess:
  """The batch script under bash, as SLURM would start it on the first node."""
  variables = dict(os.environ, SLURM_JOB_ID='4242', SLURM_JOB_NODELIST='gpu-node-[7-8]',
                   SLURM_JOB_NUM_NODES='1')
  variables.update(env)
  return subprocess.run(['bash', str(script)], env=variables, capture_output=True, text=True,
                        timeout=300, check=False)


def test_one_process_per_node(capfd, tmp_path, fakes):
  text = dry_run_script(
      capfd, '--config', 'configs/llama_1b.py', '--nodes', '4', '--partition', 'gpu',
      '--account', 'lab', '--time', '24:00:00', '--run_dir', '/shared/runs/l1b',
      '--workdir', '/shared/code', f'--config.train.sample_prompt={PROMPT}',
      '--config.mesh.tensor', '4', '--sbatch_option=--constraint=h100', '--env', 'NCCL_DEBUG=WARN')
  sbatch = [line for line in text.splitlines() if line.startswith('#SBATCH')]
  assert sbatch == [
      '#SBATCH --job-name=llama_1b', '#SBATCH --nodes=4', '#SBATCH --ntasks-per-node=1',
      '#SBATCH --gpus-per-node=8', '#SBATCH --cpus-per-task=64', '#SBATCH --time=24:00:00',
      '#SBATCH --partition=gpu', '#SBATCH --account=lab',
      '#SBATCH --output=/shared/runs/l1b/slurm/llama_1b-%j.out',
      '#SBATCH --error=/shared/runs/l1b/slurm/llama_1b-%j.err', '#SBATCH --open-mode=append',
      '#SBATCH --signal=TERM@120', '#SBATCH --requeue', '#SBATCH --constraint=h100']
  srun = line_starting(text, 'srun ')
  assert srun == (
      'srun --nodes=4 --ntasks-per-node=1 --gpus-per-node=8 --cpus-per-task=64 .venv/bin/python '
      'launch.py train --config configs/llama_1b.py --run_dir /shared/runs/l1b '
      + shlex.quote(f'--config.train.sample_prompt={PROMPT}') +
      ' --config.mesh.tensor=4 --config.mesh.platform=gpu --config.mesh.dcn_data=4 || status=$?')
  assert shlex.split(srun)[12] == f'--config.train.sample_prompt={PROMPT}'
  assert 'cd /shared/code' in text.splitlines()
  assert 'export JAX_LOCAL_DEVICE_IDS=0,1,2,3,4,5,6,7' in text.splitlines()
  assert 'export NCCL_DEBUG=WARN' in text.splitlines()
  assert not list(fakes.iterdir())  # --dry_run submits nothing
  assert not Path('/shared/runs/l1b').exists()


def test_one_process_per_gpu_keeps_dcn_data_1(capfd):
  text = dry_run_script(capfd, '--config', 'configs/gpt2_small.py', '--nodes', '2',
                        '--tasks_per_node', '8', '--config.mesh.data=2', '--config.mesh.fsdp=-1',
                        '--job_name', 'g2', '--python', '/opt/venv/bin/python')
  assert line_starting(text, 'srun ') == (
      'srun --nodes=2 --ntasks-per-node=8 --gpus-per-node=8 --cpus-per-task=8 '
      '/opt/venv/bin/python launch.py train --config configs/gpt2_small.py '
      '--config.mesh.data=2 --config.mesh.fsdp=-1 --config.mesh.platform=gpu || status=$?')
  assert '#SBATCH --ntasks-per-node=8' in text and 'JAX_LOCAL_DEVICE_IDS' not in text
  assert f'#SBATCH --output={ROOT}/runs/gpt2_small/slurm/g2-%j.out' in text


def test_the_users_mesh_overrides_win(capfd):
  text = dry_run_script(capfd, '--nodes', '2', '--config.mesh.dcn_data=1',
                        '--config.mesh.platform=cpu')
  assert line_starting(text, 'srun ').endswith(
      'launch.py train --config configs/tiny.py --config.mesh.dcn_data=1 '
      '--config.mesh.platform=cpu || status=$?')


@pytest.mark.parametrize('argv, message', [
    (['--nodes', '0'], '--nodes >= 1'),
    (['--nodes', '2', '--tasks_per_node', '3'], 'must be 1 (one process per node) or 8'),
    (['--nodes', '2', '--gpus_per_node', '0'], '--gpus_per_node=0 must be >= 1'),
    (['--config.mesh.data=3'], '2 nodes x 8 GPUs: mesh (data=3'),
    (['--tasks_per_node', '8', '--config.mesh.dcn_data=2'], 'keep --config.mesh.dcn_data=1'),
    (['--config.mesh.dcn_data=4'], 'use the node count (2'),
    (['--config.mesh.platform=tpu'], 'pass --config.mesh.platform=gpu'),
    (['--config.mesh.nope=1'], 'nope'),
    (['--env', 'NOVALUE'], 'write --env NAME=VALUE'),
    (['--env', '1X=2'], 'is not a variable name'),
    (['--sbatch_option', 'constraint=a100'], 'must be one sbatch flag'),
    (['--partition', 'gpu a100'], 'without spaces'),
    (['--bogus'], 'unrecognized arguments: --bogus'),
])
def test_bad_input_is_one_line_and_exit_2(capfd, argv, message):
  nodes = [] if '--nodes' in argv else ['--nodes', '2']
  code, out, err = run_slurm(capfd, *nodes, *argv, '--dry_run')
  assert code == 2 and not out
  assert err.startswith('error: ') and err.count('\n') == 1 and message in err, err


def test_missing_nodes_and_missing_sbatch(capfd, tmp_path, monkeypatch):
  code, _, err = run_slurm(capfd, '--dry_run')
  assert code == 2 and 'the following arguments are required: --nodes' in err
  monkeypatch.setenv('PATH', str(tmp_path))  # no sbatch on it
  code, _, err = run_slurm(capfd, '--nodes', '1', '--script', str(tmp_path / 'job.sbatch'))
  assert code == 2 and err.count('\n') == 1 and 'sbatch is not installed here' in err
  assert not (tmp_path / 'job.sbatch').exists()


def test_submits_through_sbatch(capfd, tmp_path, fakes):
  script = tmp_path / 'jobs' / 'job.sbatch'
  argv = ['--nodes', '2', '--script', str(script), f'--config.train.sample_prompt={PROMPT}']
  expected = dry_run_script(capfd, *argv)
  assert not script.parent.exists() and not list(fakes.iterdir())  # a dry run writes nothing
  code, out, err = run_slurm(capfd, *argv)
  assert code == 0, err
  assert json.loads((fakes / 'sbatch.json').read_text()) == ['--parsable', str(script)]
  assert (fakes / 'submitted.sbatch').read_text() == script.read_text() == expected
  log = tmp_path / 'jobs' / 'tiny-4242'
  assert f'submitted job 4242; watch it with: squeue -j 4242 and tail -f {log}.out {log}.err' in out
  assert subprocess.run(['bash', '-n', str(script)], check=False).returncode == 0


@pytest.mark.parametrize('exit_status, restarts, requeued', [
    (75, '0', True), (75, '20', False), (0, '0', False), (1, '0', False)])
def test_the_script_requeues_a_preempted_run(capfd, tmp_path, fakes, exit_status, restarts,
                                             requeued):
  script = tmp_path / 'job.sbatch'
  script.write_text(dry_run_script(capfd, '--nodes', '2', f'--config.train.sample_prompt={PROMPT}',
                                   '--workdir', str(tmp_path)))
  done = run_script(script, FAKE_SRUN_EXIT=str(exit_status), SLURM_RESTART_COUNT=restarts)
  assert done.returncode == exit_status, done.stderr
  assert 'coordinator gpu-node-7' in done.stdout
  srun_argv = json.loads((fakes / 'srun.json').read_text())
  assert srun_argv[-3:] == [f'--config.train.sample_prompt={PROMPT}', '--config.mesh.platform=gpu',
                            '--config.mesh.dcn_data=2']  # through the real shell, unchanged
  calls = [json.loads(line) for line in (fakes / 'scontrol.jsonl').read_text().splitlines()]
  assert (['requeue', '4242'] in calls) == requeued


def test_the_batch_shell_outlives_sigterm_to_requeue(capfd, tmp_path, fakes):
  """On preemption SLURM signals the batch shell as well as the step: the shell must wait for
  the run to save and exit 75, then requeue (an untrapped SIGTERM would kill it first)."""
  script = tmp_path / 'job.sbatch'
  script.write_text(dry_run_script(capfd, '--nodes', '2', '--workdir', str(tmp_path)))
  env = dict(os.environ, SLURM_JOB_ID='4242', SLURM_JOB_NODELIST='gpu-node-[7-8]',
             FAKE_SRUN_EXIT='on_sigterm')
  with subprocess.Popen(['bash', str(script)], env=env, start_new_session=True,
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as shell:
    deadline = time.monotonic() + 30
    while not (fakes / 'srun.ready').exists() and time.monotonic() < deadline:
      time.sleep(0.05)
    os.killpg(shell.pid, signal.SIGTERM)  # the shell and the step, as SLURM does
    out, err = shell.communicate(timeout=30)
  assert shell.returncode == 75, err
  assert 'batch script: SIGTERM' in out and 'requeueing job 4242' in out
  calls = [json.loads(line) for line in (fakes / 'scontrol.jsonl').read_text().splitlines()]
  assert ['requeue', '4242'] in calls


def job_id_with_a_free_port() -> str:
  """A SLURM job id whose coordinator port (jax: 61440 + id % 4096) is free here."""
  for job_id in range(4242, 4242 + 4096):
    with socket.socket() as probe:
      try:
        probe.bind(('127.0.0.1', 61440 + job_id % 4096))
        return str(job_id)
      except OSError:
        continue
  raise RuntimeError('no free port in 61440-65535')


def train_through_the_script(capfd, tmp_path: Path, nodes: int) -> list[dict]:
  """Writes the batch script of a tiny run on `nodes` one-GPU nodes, runs it under bash with
  the fake srun, and returns the run's train records."""
  write_corpus(tmp_path)
  run_dir, script = tmp_path / f'run{nodes}', tmp_path / f'slurm{nodes}' / 'job.sbatch'
  overrides = {
      'data.source': tmp_path / 'corpus.txt', 'data.cache_dir': tmp_path / 'cache',
      'data.seq_len': 32, 'model.d_model': 32, 'model.n_layers': 2, 'model.n_heads': 2,
      'model.max_len': 32, 'train.batch_size': 8, 'train.steps': 12, 'train.eval_every': 0,
      'train.sample_tokens': 0, 'optim.warmup_steps': 5, 'checkpoint.every': 10,
      'mesh.platform': 'cpu', 'distributed.timeout_s': 120}
  code, _, err = run_slurm(capfd, '--nodes', str(nodes), '--gpus_per_node', '1', '--python',
                           sys.executable, '--run_dir', str(run_dir), '--script', str(script),
                           *[f'--config.{key}={value}' for key, value in overrides.items()])
  assert code == 0, err
  assert ('--config.mesh.dcn_data=2' in script.read_text()) == (nodes == 2)
  done = run_script(script, SLURM_JOB_ID=job_id_with_a_free_port())
  assert done.returncode == 0, done.stderr[-3000:]
  found = '2 devices (cpu) on 2 processes' if nodes == 2 else '1 device (cpu)'
  assert f'backend: cpu, {found}' in done.stdout
  records = [json.loads(line) for line in (run_dir / 'metrics.jsonl').read_text().splitlines()]
  return [record for record in records if record.get('kind') == 'train']


@pytest.mark.slow
@pytest.mark.usefixtures('fakes')
def test_the_script_trains_on_one_node_and_on_two_alike(capfd, tmp_path):
  """One process, then two that join through the SLURM_* variables alone (jax.distributed) into
  one mesh with dcn_data=2: the same losses, as the batch is the same and only its split differs."""
  one = train_through_the_script(capfd, tmp_path, 1)
  two = train_through_the_script(capfd, tmp_path, 2)
  assert [r['step'] for r in two] == [r['step'] for r in one] and one[-1]['step'] == 12
  assert [r['loss'] for r in two] == pytest.approx([r['loss'] for r in one], rel=1e-5)
