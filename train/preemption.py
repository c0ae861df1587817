"""Preemption: turn SIGTERM into "finish this step, save, exit 75" instead of a lost run.

TPU VMs, Kubernetes and Slurm send SIGTERM some seconds before they kill a job. `Preemption` is
a context manager around the training loop: in a single process it installs a SIGTERM handler
that only sets a flag (the loop polls `requested(step)` between steps, saves a checkpoint and
raises `RunStopped` with `EXIT_PREEMPTED`). With several processes every process must stop at
the same step, so the flag comes from JAX's preemption sync point instead (orbax's
`reached_preemption`, backed by the distributed runtime that catches the signal itself).
"""

import signal
import threading

import jax


class Preemption:
  """`with Preemption(manager) as preemption: ... if preemption.requested(step): ...`"""

  def __init__(self, manager=None):
    self._manager = manager
    self._flag = False
    self._previous = None

  def _on_signal(self, signum, frame):  # pylint: disable=unused-argument
    self._flag = True

  def __enter__(self):
    if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._on_signal)
    return self

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
      self._previous = None

  def requested(self, step: int) -> bool:
    """True once a stop was asked for; the same answer on every process at `step`."""
    if jax.process_count() > 1 and self._manager is not None:
      return bool(self._manager.reached_preemption(step))
    return self._flag
