"""The lock files agree with the direct dependencies, with each other and with the Makefile.

`make lock` writes them (tools/lock.py); these checks catch a requirements.in edited without
regenerating the locks, a runtime lock that carries test tools, an accelerator lock whose jax
extra is missing, and a third-party import that no lock installs.
"""

import ast
import importlib.metadata
import re
import shutil
import subprocess
import sys

import pytest

from tests.tiny_run import ROOT

ACCELERATOR_LOCKS = {'cpu': 'requirements.lock', 'tpu': 'requirements-tpu.lock',
                     'cuda12': 'requirements-cuda12.lock', 'cuda13': 'requirements-cuda13.lock'}


def _name(text: str) -> str:
  return re.sub(r'[-_.]+', '-', text).lower()


def pins(filename: str) -> dict[str, str]:
  """{normalised name: version} of a requirements file's NAME[extras]==VERSION lines."""
  found = {}
  for line in (ROOT / filename).read_text().splitlines():
    match = re.match(r'^([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?==(\S+)', line.split('#')[0].strip())
    if match:
      found[_name(match.group(1))] = match.group(2)
  return found


@pytest.mark.parametrize('accel', ACCELERATOR_LOCKS)
def test_every_lock_pins_the_direct_dependencies_at_their_versions(accel):
  lock = pins(ACCELERATOR_LOCKS[accel])
  for name, version in pins('requirements.in').items():
    assert lock.get(name) == version, f'{name}: run make lock'
  assert lock['jaxlib'] == lock['jax']
  assert 'pytest' not in lock and 'grain' not in lock  # tests only; unused
  plugin = {'tpu': 'libtpu', 'cuda12': 'jax-cuda12-plugin', 'cuda13': 'jax-cuda13-plugin'}
  if accel in plugin:
    assert plugin[accel] in lock
  else:
    assert not any(name.startswith(('libtpu', 'jax-cuda', 'nvidia-')) for name in lock)


def test_the_test_lock_only_adds_and_the_locks_agree():
  cpu, test = pins('requirements.lock'), pins('requirements-test.lock')
  assert not set(cpu) & set(test)
  assert set(pins('requirements-test.in')) <= set(test)
  for accel, filename in ACCELERATOR_LOCKS.items():
    shared = set(cpu) & set(pins(filename))
    assert {n: cpu[n] for n in shared} == {n: pins(filename)[n] for n in shared}, accel


def _third_party_imports(paths) -> set[str]:
  local = {p.stem for p in [*ROOT.iterdir(), *(ROOT / 'tests').glob('*.py')]}
  modules = set()
  for path in paths:
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, ast.Import):
        modules |= {alias.name.split('.')[0] for alias in node.names}
      elif isinstance(node, ast.ImportFrom) and node.level == 0:
        modules.add(node.module.split('.')[0])
  return {m for m in modules if m not in local and m not in sys.stdlib_module_names}


def test_every_import_is_installed_by_a_lock():
  distributions = importlib.metadata.packages_distributions()
  code = [p for p in ROOT.rglob('*.py') if '.venv' not in p.parts and p.parts[-2] != 'tests']
  runtime = set(pins('requirements.lock'))
  for module in _third_party_imports(p for p in code if p.parts[-2] != 'benchmarks'):
    assert {_name(d) for d in distributions.get(module, [module])} & runtime, module
  optional = set(pins('requirements-bench.in'))  # benchmarks/ only; they stop in one line without
  for module in _third_party_imports(p for p in code if p.parts[-2] == 'benchmarks'):
    assert {_name(d) for d in distributions.get(module, [module])} & (runtime | optional), module
  tests = set(pins('requirements-test.lock')) | runtime | optional  # tests skip when missing
  for module in _third_party_imports((ROOT / 'tests').glob('*.py')):
    assert {_name(d) for d in distributions.get(module, [module])} & tests, module


@pytest.mark.skipif(shutil.which('make') is None, reason='make is not installed')
def test_make_install_picks_the_lock_of_the_accelerator():
  def dry(*args):
    return subprocess.run(['make', '-n', '-C', str(ROOT), 'VENV=/nonexistent-venv', *args],
                          capture_output=True, text=True, check=False)
  assert '-r requirements-tpu.lock' in dry('install', 'ACCEL=tpu').stdout
  assert '-r requirements-cuda13.lock' in dry('install', 'ACCEL=cuda13').stdout
  assert '-r requirements.lock' in dry('install').stdout
  test = dry('test').stdout
  assert '-r requirements.lock' in test and '-r requirements-test.lock' in test
  wrong = dry('install', 'ACCEL=rocm')
  assert wrong.returncode != 0 and 'ACCEL=rocm is not one of cpu, tpu, cuda12, cuda13' in wrong.stderr
