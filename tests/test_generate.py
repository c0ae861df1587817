"""`launch.py generate`: batched completions equal to `sample`'s, a run interrupted mid-file and
started again ending with the same file as an uninterrupted one (greedy and sampled), input
mistakes as one-line errors (a classifier run through `generate`: tests/test_classification.py)."""

import json

import pytest

import launch
from inference.engine import CompletionEngine
from tests.tiny_run import shared_trained_run  # noqa: F401  pylint: disable=unused-import

PROMPTS = ['def ', 'def function_1', 'return x', '', 'class A:\n', '    ', 'x = 1']


def write_prompts(tmp_path, prompts=PROMPTS):
  path = tmp_path / 'prompts.jsonl'
  path.write_text(''.join(json.dumps({'id': i, 'prompt': p}) + '\n' for i, p in enumerate(prompts)))
  return path


def generate(run_dir, source, output, *flags) -> int:
  return launch.main(['generate', '--run_dir', str(run_dir), '--input', str(source), '--output',
                      str(output), '--no_progress', '--tokens', '6', '--batch_size', '3',
                      *flags])


def read(path) -> list[dict]:
  return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_generate_batches_and_resumes(shared_trained_run, tmp_path, capsys, monkeypatch):
  source = write_prompts(tmp_path)
  for temperature in ('0', '1.0'):
    reference = tmp_path / f'reference_{temperature}.jsonl'
    assert generate(shared_trained_run, source, reference, '--temperature', temperature) == 0
    output = tmp_path / f'interrupted_{temperature}.jsonl'
    calls, real = [], CompletionEngine.complete

    def stop_at_the_third_batch(self, *args, **kwargs):
      calls.append(1)
      if len(calls) == 3:
        raise KeyboardInterrupt
      return real(self, *args, **kwargs)
    monkeypatch.setattr(CompletionEngine, 'complete', stop_at_the_third_batch)
    with pytest.raises(KeyboardInterrupt):
      generate(shared_trained_run, source, output, '--temperature', temperature)
    monkeypatch.setattr(CompletionEngine, 'complete', real)
    assert len(read(output)) == 6
    with open(output, 'a', encoding='utf-8') as f:  # a batch cut short: a line and a torn one
      f.write(json.dumps(read(reference)[6], ensure_ascii=False) + '\n{"id": 7, "pro')
    assert generate(shared_trained_run, source, output, '--temperature', temperature) == 0
    assert output.read_text() == reference.read_text()
  greedy, sampled = read(tmp_path / 'reference_0.jsonl'), read(tmp_path / 'reference_1.0.jsonl')
  assert [r['id'] for r in greedy] == list(range(len(PROMPTS)))
  assert [r['prompt'] for r in greedy] == PROMPTS
  assert [r['completion'] for r in sampled] != [r['completion'] for r in greedy]
  capsys.readouterr()
  assert launch.main(['sample', '--run_dir', str(shared_trained_run), '--prompt', 'return x',
                      '--tokens', '6', '--temperature', '0']) == 0
  assert capsys.readouterr().out == 'return x' + greedy[2]['completion'] + '\n'


def test_generate_input_mistakes_are_one_line_errors(shared_trained_run, tmp_path, capsys):
  bad = tmp_path / 'bad.jsonl'
  for text, message in [('{"prompt": "a"}\nnot json\n', 'line 2 is not JSON'),
                        ('{"text": "a"}\n', "line 1 has no string field 'prompt'"),
                        ('\n', 'holds no records')]:
    bad.write_text(text)
    capsys.readouterr()
    assert generate(shared_trained_run, bad, tmp_path / 'out.jsonl') == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
  other = tmp_path / 'other.jsonl'
  other.write_text(json.dumps({'prompt': 'something else', 'completion': 'x'}) + '\n')
  assert generate(shared_trained_run, write_prompts(tmp_path, ['a']), other) == 2
  assert 'is not the result of record 1' in capsys.readouterr().err
