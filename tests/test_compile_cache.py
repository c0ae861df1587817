"""train.compile_cache_dir: a run loads the steps an earlier run compiled, with the same results.

The CLI trains the tiny model with one fresh cache directory; after its entries are cut short
the next run removes them in one line and compiles again; the run after that loads its programs
(its summary says how many); every run logs bit-identical losses. '' turns the cache off even
where JAX_COMPILATION_CACHE_DIR names a warm one; timing compiles (`uncached`) neither reads nor
writes it; a directory that cannot be created is a one-line error.
"""

import subprocess
import sys

import pytest

import launch
from errors import UserError
from tests.tiny_run import ROOT, cli_env, run_cli, snapshot, tiny_flags, train_losses, write_corpus
from train import compile_cache

LOADED = 'compile cache: '


@pytest.mark.slow
def test_later_runs_load_the_steps_an_unreadable_entry_is_replaced_and_off_means_off(tmp_path):
  write_corpus(tmp_path)
  cache = tmp_path / 'xla'

  def train(name, setting=cache, env=None):
    flags = tiny_flags(tmp_path, tmp_path / name, train__steps=6, checkpoint__every=0,
                       train__compile_cache_dir=setting)
    done = run_cli(['train'] + flags, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert 'Warning' not in done.stderr, done.stderr[-3000:]
    return done

  first = train('first')
  assert LOADED not in first.stdout  # a fresh directory: everything compiled
  entries = sorted(cache.glob('*-cache'))
  assert any(path.name.startswith('jit_train_step-') for path in entries), entries

  # A write cut short (the process killed while writing): every entry half its length.
  for path in entries:
    path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])
  repaired = train('repaired')
  unreadable = [line for line in repaired.stderr.splitlines() if 'was unreadable' in line]
  assert any('jit_train_step' in line and 'compiling it again' in line for line in unreadable), (
      repaired.stderr[-3000:])
  assert LOADED not in repaired.stdout

  loaded = train('loaded')
  line = next(line for line in loaded.stdout.splitlines() if line.startswith(LOADED))
  assert str(cache) in line and int(line.split()[2]) >= 2, line  # the train and eval steps
  assert 'unreadable' not in loaded.stderr
  assert train_losses(tmp_path / 'loaded') == train_losses(tmp_path / 'first')
  assert train_losses(tmp_path / 'repaired') == train_losses(tmp_path / 'first')

  # '' wins over a warm cache named by the environment: nothing loaded, nothing written.
  before = snapshot(cache)
  off = train('off', setting='', env={'JAX_COMPILATION_CACHE_DIR': str(cache)})
  assert LOADED not in off.stdout
  assert snapshot(cache) == before
  assert train_losses(tmp_path / 'off') == train_losses(tmp_path / 'first')


_COMPILE_TWO = """
import contextlib, sys
import jax, jax.numpy as jnp
from train import compile_cache
x = jnp.ones((64, 64))
first = jax.jit(lambda x: jnp.sin(x) @ x.T)
second = jax.jit(lambda x: jnp.cos(x) @ x)
with compile_cache.watch() as timed:
  with compile_cache.uncached() if sys.argv[1] == 'timed' else contextlib.nullcontext():
    first.lower(x).compile()
with compile_cache.watch() as after:
  second.lower(x).compile()
print(timed.programs, after.programs)
"""


def test_timed_compiles_bypass_the_cache_and_it_is_on_again_after(tmp_path):
  env = cli_env(extra={'JAX_COMPILATION_CACHE_DIR': str(tmp_path / 'xla'),
                       'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS': '0'})

  def loaded(mode):
    done = subprocess.run([sys.executable, '-c', _COMPILE_TWO, mode], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120, check=True)
    return done.stdout.split()

  assert loaded('plain') == ['0', '0']  # an empty cache: both compiled and written
  assert loaded('timed') == ['0', '1']  # `uncached` compiled the first; the second loaded
  assert loaded('plain') == ['1', '1']


def test_what_the_setting_names(monkeypatch, tmp_path):
  monkeypatch.setenv('JAX_COMPILATION_CACHE_DIR', str(tmp_path / 'from_env'))
  assert compile_cache.resolve_dir('auto') == str(tmp_path / 'from_env')
  monkeypatch.delenv('JAX_COMPILATION_CACHE_DIR')
  assert compile_cache.resolve_dir('auto').endswith('/.cache/scaling-transformers/xla')
  assert compile_cache.resolve_dir('~/x') != '~/x'
  assert compile_cache.resolve_dir('') is None
  with pytest.raises(UserError, match='mounted filesystem'):
    compile_cache.enable('gs://bucket/xla')


def test_a_directory_that_cannot_be_made_is_one_line(tmp_path, capsys):
  write_corpus(tmp_path)
  blocker = tmp_path / 'a_file'
  blocker.write_text('not a folder')
  run_dir = tmp_path / 'run'
  flags = tiny_flags(tmp_path, run_dir, train__compile_cache_dir=blocker / 'xla')
  assert launch.main(['train'] + flags) == 2
  err = capsys.readouterr().err.strip()
  assert err.startswith('error: train.compile_cache_dir=') and 'writable directory' in err, err
  assert len(err.splitlines()) == 1
  assert not run_dir.exists()
