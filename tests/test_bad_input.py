"""Bad input: every mistake at the command line or in a config ends in one line on stderr that
names the problem and the fix, a non-zero exit, no traceback, and an existing run directory
left exactly as it was.

Each test points `launch.py train` at a run directory that already holds a run (config.json,
metrics, a checkpoint folder) and checks its files byte for byte afterwards.
"""

import os

import pytest

import launch
from errors import out_of_memory_line
from tests.tiny_run import run_cli, snapshot, tiny_flags, write_corpus
from train.config import load_config
from train.run_dir import (config_differences, has_checkpoint, is_safe_to_change,
                            write_run_config)


@pytest.fixture
def run_dir(tmp_path):
  """A directory holding an earlier run of the tiny test config."""
  write_corpus(tmp_path)
  run_dir = tmp_path / 'run'
  (run_dir / 'checkpoints' / '10').mkdir(parents=True)
  (run_dir / 'checkpoints' / '10' / 'marker').write_text('an earlier checkpoint')
  (run_dir / 'metrics.jsonl').write_text('{"kind": "train", "step": 10, "loss": 2.5}\n')
  overrides = [a for a in tiny_flags(tmp_path, run_dir) if a.startswith('--config.')]
  write_run_config(run_dir, load_config('configs/tiny.py', overrides))
  return run_dir


def assert_one_line_error(capsys, argv, expected: str, run_dir, code: int = 2) -> None:
  before = snapshot(run_dir)
  capsys.readouterr()
  assert launch.main(argv) == code
  captured = capsys.readouterr()
  lines = captured.err.strip().splitlines()
  assert len(lines) == 1, captured.err
  assert lines[0].startswith('error: ') and expected in lines[0], lines[0]
  assert 'Traceback' not in captured.err + captured.out
  assert snapshot(run_dir) == before


def train_argv(tmp_path, run_dir, *extra, **overrides):
  return ['train'] + tiny_flags(tmp_path, run_dir, **overrides) + list(extra)


@pytest.mark.parametrize('override, expected', [
    ('--config.optim.lrr=1', "unknown config key 'optim.lrr'; did you mean 'optim.lr'?"),
    ('--config.checkpoint.evry=5', "did you mean 'checkpoint.every'?"),
    ('--config.train.steps=ten', "--config.train.steps='ten' is not a valid integer"),
    ('--config.checkpoint.keep_best=maybe', 'is not a valid bool; use true or false'),
    ('--config.optim.lr=-1', 'optim.lr=-1.0 must be > 0; set --config.optim.lr'),
    ('--config.train.batch_size=0', 'train.batch_size=0 must be positive'),
    ('--config.checkpoint.keep=0', 'checkpoint.keep=0 must be at least 1'),
    ('--config.train.max_consecutive_bad_steps=-1', 'must be zero or positive'),
])
def test_bad_config_values(tmp_path, run_dir, capsys, override, expected):
  assert_one_line_error(capsys, train_argv(tmp_path, run_dir, override), expected, run_dir)


def test_unknown_flag_and_verb(tmp_path, run_dir, capsys):
  assert_one_line_error(capsys, train_argv(tmp_path, run_dir, '--steps=5'),
                        'unrecognized arguments: --steps=5; see launch.py train --help', run_dir)
  assert_one_line_error(capsys, ['trian'], "unknown verb 'trian'", run_dir)


def test_missing_config_file(tmp_path, run_dir, capsys):
  argv = train_argv(tmp_path, run_dir) + ['--config', 'configs/nope.py']
  assert_one_line_error(capsys, argv, 'config file configs/nope.py not found', run_dir)


@pytest.mark.parametrize('corpus', ['missing', 'empty_file', 'empty_folder'])
def test_missing_or_empty_corpus(tmp_path, run_dir, capsys, corpus):
  source = tmp_path / corpus
  if corpus == 'empty_file':
    source.write_text('')
  elif corpus == 'empty_folder':
    source.mkdir()
  expected = 'does not exist' if corpus == 'missing' else 'holds no text'
  assert_one_line_error(capsys, train_argv(tmp_path, run_dir, data__source=source), expected,
                        run_dir)


def test_token_ids_beyond_the_vocabulary(tmp_path, run_dir, capsys):
  assert_one_line_error(capsys, train_argv(tmp_path, run_dir, model__vocab_size=100),
                        'the tokenizer has 256 tokens but model.vocab_size=100; set '
                        '--config.model.vocab_size=256 or more', run_dir)


def test_sequence_longer_than_the_data(tmp_path, run_dir, capsys):
  (tmp_path / 'short.txt').write_text('def f(x):\n    return x\n')
  assert_one_line_error(capsys, train_argv(tmp_path, run_dir, data__source=tmp_path / 'short.txt'),
                        'is longer than the train split', run_dir)


def test_mesh_that_does_not_match_the_devices(tmp_path, run_dir, capsys):
  assert_one_line_error(capsys, train_argv(tmp_path, run_dir, mesh__data=3),
                        'mesh (data=3, fsdp=1, tensor=1) needs 3 devices', run_dir)


@pytest.mark.slow
def test_batch_not_divisible_by_the_data_parallel_size(tmp_path, run_dir):
  before = snapshot(run_dir)
  result = run_cli(train_argv(tmp_path, run_dir, train__batch_size=6), devices=8)
  assert result.returncode == 2
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and 'Traceback' not in result.stderr
  assert ('train.batch_size=6 (micro-batch 6) is not divisible by the data-parallel size 8'
          in lines[0])
  assert snapshot(run_dir) == before


def test_run_directory_of_another_config(tmp_path, run_dir, capsys):
  assert_one_line_error(capsys, train_argv(tmp_path, run_dir, model__d_model=64),
                        f'{run_dir} holds a run with another config (model.d_model: 32 there, '
                        '64 now); use another --run_dir or --config.name', run_dir)


def test_which_changes_are_safe_on_resume():
  old = {'train': {'steps': 10, 'log_every': 1, 'batch_size': 8}, 'model': {'d_model': 32},
         'checkpoint': {'every': 5}, 'mesh': {'data': -1}, 'data': {'seq_len': 32}}
  new = {'train': {'steps': 99, 'log_every': 7, 'batch_size': 8}, 'model': {'d_model': 32},
         'checkpoint': {'every': 50}, 'mesh': {'data': 2}, 'data': {'seq_len': 32}}
  assert config_differences(old, new) == []
  new['model']['d_model'], new['data']['seq_len'] = 64, 16
  assert config_differences(old, new) == ['data.seq_len', 'model.d_model']
  assert is_safe_to_change('train.sample_prompt') and not is_safe_to_change('optim.lr')
  assert is_safe_to_change('model.attention_impl') and not is_safe_to_change('model.dtype')


def test_unwritable_output_directory(tmp_path, run_dir, capsys):
  (tmp_path / 'a_file').write_text('not a folder')
  assert_one_line_error(capsys, train_argv(tmp_path, tmp_path / 'a_file' / 'run'),
                        'is a file; choose another --run_dir', run_dir)
  assert (tmp_path / 'a_file').read_text() == 'not a folder'


@pytest.mark.skipif(os.name != 'posix' or os.geteuid() == 0,
                    reason='root writes to read-only folders anyway')
def test_read_only_output_directory(tmp_path, run_dir, capsys):
  locked = tmp_path / 'locked'
  locked.mkdir()
  locked.chmod(0o500)
  try:
    assert_one_line_error(capsys, train_argv(tmp_path, locked / 'run'), 'cannot write to',
                          run_dir)
  finally:
    locked.chmod(0o700)


def test_eval_and_sample_of_a_directory_without_checkpoints(tmp_path, run_dir, capsys):
  assert_one_line_error(capsys, ['eval', '--run_dir', str(tmp_path / 'nope')],
                        'is not a run directory', run_dir)
  assert_one_line_error(capsys, ['sample', '--run_dir', str(run_dir), '--tokens', '0'],
                        '--tokens must be at least 1', run_dir)


def test_argument_to_a_config_that_takes_none(tmp_path, run_dir, capsys):
  argv = train_argv(tmp_path, run_dir) + ['--config', 'configs/tiny.py:foo']
  assert_one_line_error(capsys, argv, "get_config() of configs/tiny.py takes no argument, but "
                        "--config configs/tiny.py:foo passes 'foo'; drop \":foo\"", run_dir)
  result = run_cli(['info', '--config', 'configs/tiny.py:foo'])  # the real process exit status
  assert result.returncode == 2 and 'Traceback' not in result.stderr
  assert result.stderr.strip().splitlines() == [
      'error: get_config() of configs/tiny.py takes no argument, but --config '
      'configs/tiny.py:foo passes \'foo\'; drop ":foo"']


def test_a_step_that_does_not_fit_in_memory(tmp_path, run_dir, capsys):
  """A model whose parameters alone need 16 TiB: XLA's out-of-memory error becomes one line that
  names the knobs (a real allocation failure, not a simulated one)."""
  argv = ['bench', '--config', 'configs/tiny.py', '--config.model.d_ff=17179869184', '--steps=1']
  assert_one_line_error(capsys, argv, 'out of device memory (', run_dir)


def test_out_of_memory_line_of_a_gpu_allocator_error():
  """The text XLA's GPU allocator gave on an H100 (llama_1b, batch 16): tags dropped, knobs named;
  other runtime errors are left alone."""
  gpu = RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 46.61GiB with "
                     "allocator GPU_0_bfc on device 0. [executable_name='jit_train_step'] "
                     "[tf-allocator-allocation-error='']")
  assert out_of_memory_line(gpu) == (
      'out of device memory (RESOURCE_EXHAUSTED: Out of memory while trying to allocate 46.61GiB '
      'with allocator GPU_0_bfc on device 0.); lower --config.train.batch_size, raise '
      '--config.train.grad_accum_steps, use --config.model.remat=dots_no_batch or full, or shard '
      'with --config.mesh.fsdp; `launch.py memory` measures the step first')
  assert out_of_memory_line(RuntimeError('INVALID_ARGUMENT: shapes differ')) is None


def test_a_run_out_of_memory_at_its_start_takes_a_smaller_config_in_the_same_directory(
    tmp_path, capsys):
  """The advice of the out-of-memory line is followed in the same --run_dir: the first run saved
  no checkpoint, so its config.json binds nothing and the changed config trains there."""
  write_corpus(tmp_path)
  run_dir = tmp_path / 'fresh'
  too_big = ['train'] + tiny_flags(tmp_path, run_dir, model__d_ff=17179869184, train__steps=2)
  assert launch.main(too_big) == 2
  assert 'error: out of device memory (' in capsys.readouterr().err
  assert (run_dir / 'config.json').exists() and not has_checkpoint(run_dir)
  fits = ['train'] + tiny_flags(tmp_path, run_dir, train__steps=2, train__batch_size=4,
                                checkpoint__every=2)
  assert launch.main(fits) == 0
  assert has_checkpoint(run_dir)
  assert '"batch_size": 4' in (run_dir / 'config.json').read_text()
  assert launch.main(['train'] + tiny_flags(tmp_path, run_dir, train__steps=2)) == 2  # now bound
