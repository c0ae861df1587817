"""What happens at a step of the training loop, as plain values: pure functions, no JAX.

The loop (train/loop.py) asks `plan_step` what is due once a step's update is dispatched (a
train record, an evaluation, a checkpoint, preemption), `too_many_bad_steps` whether a streak
of skipped non-finite updates ends the run, and, once the step's metrics and evaluation are
in, `decide` whether to save and why to stop. `EarlyStopping` tracks the best validation loss.
"""

import dataclasses
import math

PREEMPTED, PRUNED, EARLY = 'preempted', 'pruned', 'early'  # why the loop stops at a step


@dataclasses.dataclass(frozen=True)
class StepPlan:
  """What is due once the update that completes step `done` (1-based) is dispatched."""
  log: bool  # write a train record (the mean loss since the last one)
  evaluate: bool  # a periodic evaluation on the validation split
  save: bool  # a periodic (or keep_best) checkpoint, unless in a non-finite streak
  preempted: bool  # SIGTERM arrived: save and stop

  @property
  def read_now(self) -> bool:
    """Read this step's metrics before going on (rather than after dispatching the next)."""
    return self.evaluate or self.save or self.preempted


@dataclasses.dataclass(frozen=True)
class Decision:
  """What the loop does at the end of a step, once its metrics and evaluation are in."""
  save: bool
  stop: str | None  # PREEMPTED, PRUNED, EARLY or None


def plan_step(done: int, t, ckpt, preempted: bool) -> StepPlan:
  """The plan of step `done` from the `train` and `checkpoint` config sections."""
  last = done == t.steps
  evaluate = bool(t.eval_every) and done % t.eval_every == 0 and not last
  periodic_save = bool(ckpt.every) and done % ckpt.every == 0 and not last
  return StepPlan(log=done % t.log_every == 0 or last, evaluate=evaluate,
                  save=periodic_save or (ckpt.keep_best and evaluate), preempted=preempted)


def too_many_bad_steps(bad_streak: int, limit: int) -> bool:
  """Whether a streak of skipped (non-finite) updates ends the run (limit 0: never)."""
  return bool(limit) and bad_streak >= limit


def decide(plan: StepPlan, bad_streak: int, stop_early: bool, prune: bool) -> Decision:
  """Save on preemption or pruning, or when due unless in a non-finite streak; then stop for
  the first reason that holds: preemption, pruning, early stopping."""
  save = plan.preempted or prune or (plan.save and bad_streak == 0)
  stop = PREEMPTED if plan.preempted else PRUNED if prune else EARLY if stop_early else None
  return Decision(save=save, stop=stop)


class EarlyStopping:
  """Counts evaluations without improvement on the best validation loss so far."""

  def __init__(self, patience: int, best: float | None = None, bad_evals: int = 0):
    self.patience, self.bad_evals = patience, bad_evals
    self.best = math.inf if best is None else best

  def should_stop(self, validation_loss: float) -> bool:
    if validation_loss < self.best:
      self.best, self.bad_evals = validation_loss, 0
    else:
      self.bad_evals += 1
    return self.patience > 0 and self.bad_evals >= self.patience
