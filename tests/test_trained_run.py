"""`launch.py eval` and `launch.py sample` on a tiny trained run: every flag, numbers checked by
hand (bits/byte from the loss and the byte/token ratio; a one-window loss against the training
loss function), bad flags as one-line errors (exit 2), and the run directory left untouched."""

import json
import math

import numpy as np
import pytest

import launch
from tests.test_bad_input import assert_one_line_error
from tests.tiny_run import snapshot, tiny_flags, write_corpus


@pytest.fixture(scope='module')
def run_dir(tmp_path_factory):
  tmp_path = tmp_path_factory.mktemp('trained')
  write_corpus(tmp_path)
  run_dir = tmp_path / 'run'
  flags = tiny_flags(tmp_path, run_dir, train__steps=20, checkpoint__every=10)
  assert launch.main(['train'] + flags) == 0
  return run_dir


def eval_json(capsys, run_dir, *flags) -> dict:
  capsys.readouterr()
  assert launch.main(['eval', '--run_dir', str(run_dir), '--json', *flags]) == 0
  return json.loads(capsys.readouterr().out)


def test_eval_reports_loss_perplexity_and_bits_per_byte(run_dir, capsys):
  capsys.readouterr()
  assert launch.main(['eval', '--run_dir', str(run_dir)]) == 0
  text = capsys.readouterr().out
  assert text.startswith('step 20: validation loss ') and 'perplexity' in text
  result = eval_json(capsys, run_dir)
  assert result['step'] == 20 and result['tokens'] == 2 * 8 * 32  # eval_batches x batch x seq
  assert f"{result['loss']:.4f}" in text
  manifest = json.loads(next((run_dir.parent / 'cache').glob('*/manifest.json')).read_text())
  counts = manifest['splits']['validation']
  assert result['perplexity'] == pytest.approx(math.exp(result['loss']))
  assert result['bits_per_byte'] == pytest.approx(
      result['loss'] / math.log(2) * counts['tokens'] / counts['bytes'])


def test_eval_of_a_chosen_step_and_a_missing_one(run_dir, capsys):
  newest, earlier = eval_json(capsys, run_dir), eval_json(capsys, run_dir, '--step', '10')
  assert earlier['step'] == 10 and earlier['loss'] > newest['loss']
  assert_one_line_error(capsys, ['eval', '--run_dir', str(run_dir), '--step', '7'],
                        'no checkpoint of step 7; it has 10, 20', run_dir)


def test_eval_of_one_window_equals_the_training_loss_of_that_window(run_dir, capsys):
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from tools.trained_run import load_run  # pylint: disable=import-outside-toplevel
  from train.step import loss_fn  # pylint: disable=import-outside-toplevel
  import jax  # pylint: disable=import-outside-toplevel
  result = eval_json(capsys, run_dir, '--tokens', '32')
  assert result['tokens'] == 32
  run = load_run(run_dir)
  window = jnp.asarray(np.asarray(run.exp.corpus.validation_tokens[:33], np.int32))[None]
  expected = float(loss_fn(run.state.params, run.exp.model, window, jax.random.PRNGKey(0), True))
  assert result['loss'] == pytest.approx(expected, rel=1e-5)
  every = eval_json(capsys, run_dir, '--tokens', 'all')
  assert every['tokens'] == run.exp.corpus.validation_tokens.size - 1


def test_eval_on_another_corpus_prepares_it_outside_the_run(run_dir, capsys, tmp_path):
  text = ''.join(f'class Thing{i}:\n    size = {i}\n\n' for i in range(60))
  corpus = tmp_path / 'other.txt'
  corpus.write_text(text)
  before = snapshot(run_dir)
  result = eval_json(capsys, run_dir, '--data', str(corpus))
  assert snapshot(run_dir) == before
  assert result['data'] == str(corpus) and result['tokens'] == len(text.encode()) - 1  # bytes
  assert result['bytes_per_token'] == 1.0
  assert result['bits_per_byte'] == pytest.approx(result['loss'] / math.log(2))
  first = eval_json(capsys, run_dir, '--data', str(corpus), '--tokens', '50')
  assert first['tokens'] == 50 and first['loss'] != result['loss']


@pytest.mark.parametrize('flags, message', [
    (['--tokens', '0'], "--tokens=0 must be a positive number of tokens or 'all'"),
    (['--tokens', 'many'], '--tokens=many must be a positive'),
    (['--data', 'corpus.txt', '--eval_batches', '2'], 'drop it when passing --tokens or --data'),
    (['--data', '/no/such/corpus.txt'], '/no/such/corpus.txt'),
])
def test_eval_bad_flags_are_one_line_errors(run_dir, capsys, flags, message):
  assert_one_line_error(capsys, ['eval', '--run_dir', str(run_dir)] + flags, message, run_dir)


@pytest.mark.slow
def test_sample_one_prompt_and_a_batch_of_prompts(run_dir, capsys, tmp_path):
  def sample(*flags):
    capsys.readouterr()
    assert launch.main(['sample', '--run_dir', str(run_dir), '--tokens', '12',
                        '--temperature', '0', *flags]) == 0
    return capsys.readouterr().out
  prompts = ['def ', 'x', '    return x * 1']
  (tmp_path / 'prompts.txt').write_text('\n'.join(prompts) + '\n')
  batched = sample('--prompts', str(tmp_path / 'prompts.txt')).split('=== prompt ')[1:]
  assert len(batched) == 3
  for i, prompt in enumerate(prompts):
    alone = sample('--prompt', prompt)
    assert alone.startswith(prompt)
    assert batched[i] == f'{i + 1} of 3 ===\n' + alone  # greedy: batching changes nothing
  drawn = sample('--prompt', 'def ', '--temperature', '1', '--top_k', '5', '--top_p', '0.9',
                 '--seed', '4')
  assert drawn.startswith('def ') and drawn == sample('--prompt', 'def ', '--temperature', '1',
                                                      '--top_k', '5', '--top_p', '0.9',
                                                      '--seed', '4')


@pytest.mark.parametrize('flags, message', [
    (['--top_p', '0'], '--top_p=0.0 in (0, 1]'),
    (['--top_k', '-1'], '--top_k=-1 must be >= 0'),
    (['--tokens', '32'], "do not fit the model's context of 32 tokens"),
    (['--prompt', 'a', '--prompts', 'p.txt'], '--prompt and --prompts both given'),
    (['--prompts', '/no/such/prompts.txt'], 'is not a file'),
])
def test_sample_bad_flags_are_one_line_errors(run_dir, capsys, flags, message):
  assert_one_line_error(capsys, ['sample', '--run_dir', str(run_dir)] + flags, message, run_dir)
