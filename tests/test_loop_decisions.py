"""What the loop does at each step (train/decisions.py, plain values, no JAX), and the sweep's
`on_evaluation` hook that stops a trial after saving it (EXIT_PRUNED)."""

import types

import pytest

from errors import EXIT_PRUNED, RunStopped
from tests.tiny_run import tiny_flags, write_corpus
from train import checkpoint
from train.config import load_config
from train.decisions import EARLY, PREEMPTED, PRUNED, decide, plan_step, too_many_bad_steps
from train.loop import train
from train.metrics import read_metrics


def sections(steps=100, log_every=10, eval_every=25, every=20, keep_best=False):
  return (types.SimpleNamespace(steps=steps, log_every=log_every, eval_every=eval_every),
          types.SimpleNamespace(every=every, keep_best=keep_best))


def test_what_is_due_at_each_step():
  t, ckpt = sections()
  due = {done: plan_step(done, t, ckpt, preempted=False) for done in range(1, 101)}
  assert [d for d, p in due.items() if p.log] == list(range(10, 101, 10))
  assert [d for d, p in due.items() if p.evaluate] == [25, 50, 75]  # the last one is the final
  assert [d for d, p in due.items() if p.save] == [20, 40, 60, 80]  # the end saves anyway
  assert [d for d, p in due.items() if p.read_now] == [20, 25, 40, 50, 60, 75, 80]
  assert plan_step(7, t, ckpt, preempted=True).read_now
  t, ckpt = sections(steps=7, log_every=3, eval_every=0, every=0, keep_best=True)
  due = {done: plan_step(done, t, ckpt, preempted=False) for done in range(1, 8)}
  assert [d for d, p in due.items() if p.log] == [3, 6, 7]
  assert not any(p.evaluate or p.save or p.read_now for p in due.values())
  t, ckpt = sections(eval_every=25, every=0, keep_best=True)
  assert [d for d in range(1, 101) if plan_step(d, t, ckpt, False).save] == [25, 50, 75]


def test_what_the_loop_decides():
  t, ckpt = sections()
  periodic, plain = plan_step(20, t, ckpt, False), plan_step(21, t, ckpt, False)
  preempted = plan_step(21, t, ckpt, True)
  assert decide(periodic, 0, False, False) == decide(periodic, 0, False, False)  # a value
  assert (decide(periodic, 0, False, False).save, decide(periodic, 0, False, False).stop) == (
      True, None)
  assert not decide(periodic, 2, False, False).save  # no save during a non-finite streak
  assert (decide(plain, 0, False, False).save, decide(plain, 0, False, False).stop) == (
      False, None)
  assert (decide(preempted, 2, False, False).save, decide(preempted, 2, True, True).stop) == (
      True, PREEMPTED)  # preemption saves even in a streak, and comes first
  evaluated = plan_step(25, t, ckpt, False)
  assert (decide(evaluated, 0, True, True).save, decide(evaluated, 0, True, True).stop) == (
      True, PRUNED)  # pruning saves at a step that is not a periodic save
  assert (decide(evaluated, 0, True, False).save, decide(evaluated, 0, True, False).stop) == (
      False, EARLY)
  assert too_many_bad_steps(3, 3) and not too_many_bad_steps(2, 3)
  assert not too_many_bad_steps(1000, 0)  # 0: never stop


@pytest.mark.slow
def test_on_evaluation_can_stop_a_run_after_saving_it(tmp_path):
  write_corpus(tmp_path)
  run_dir = tmp_path / 'run'
  flags = tiny_flags(tmp_path, run_dir, train__eval_every=5, train__steps=40)
  config = load_config('configs/tiny.py', [f for f in flags if f.startswith('--config.')])
  calls = []

  def on_evaluation(step: int, validation_loss: float) -> bool:
    calls.append((step, validation_loss))
    return step == 15

  with pytest.raises(RunStopped) as stopped:
    train(config, run_dir, progress_enabled=False, on_evaluation=on_evaluation)
  assert stopped.value.exit_code == EXIT_PRUNED == 5
  assert str(stopped.value).startswith('pruned by the sweep at step 15')
  evals = read_metrics(run_dir, 'eval')
  assert calls == [(r['step'], pytest.approx(r['loss'])) for r in evals]
  assert [step for step, _ in calls] == [5, 10, 15]
  directory = run_dir / 'checkpoints'
  assert checkpoint.latest_step(directory) == 15  # saved although checkpoint.every is 10
  assert checkpoint.read_meta(directory, 15)['loop']['best_validation_loss'] == pytest.approx(
      min(r['loss'] for r in evals))
  assert read_metrics(run_dir, 'summary') == []  # stopped, not finished
  assert max(r['step'] for r in read_metrics(run_dir, 'train')) == 15
