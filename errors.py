"""How a run ends: the exception types that stop it cleanly, and the exit code of each.

Raise `UserError('what is wrong; how to fix it')` anywhere for a mistake a user can fix (bad
config value, missing file, ...); `launch.py` prints the message on one line of stderr, without
a traceback, and exits with status 2. `RunStopped` ends a run that stopped on purpose after
saving what it had (preemption, non-finite losses, a sweep's pruner) with its own exit code. The codes live here,
in one place; README.md ("Resuming, preemption and exit codes") documents them.
"""

EXIT_OK = 0
EXIT_CRASH = 1  # an uncaught exception: a bug; Python's own status, never returned on purpose
EXIT_USER_ERROR = 2  # UserError: fix the input and run again
EXIT_PEERS_TIMEOUT = 3  # several processes: peers did not join within distributed.timeout_s
EXIT_NONFINITE = 4  # too many consecutive non-finite steps; the last good checkpoint is kept
EXIT_PRUNED = 5  # a sweep's pruner stopped this trial; its checkpoint is kept
EXIT_PREEMPTED = 75  # SIGTERM: checkpoint saved, run the same command to resume (EX_TEMPFAIL)


class UserError(Exception):
  """A problem in the user's input, with a message that names the fix."""


class RunStopped(Exception):
  """The run stopped on purpose after saving its state; `exit_code` says why."""

  def __init__(self, message: str, exit_code: int):
    super().__init__(message)
    self.exit_code = exit_code


def out_of_memory_reason(error: BaseException) -> str | None:
  """XLA's own line saying `error` ran out of memory (RESOURCE_EXHAUSTED, or a host allocator's
  'Out of memory'), without its bracketed executable/allocator tags; None for other errors."""
  for line in str(error).splitlines():
    if 'RESOURCE_EXHAUSTED' in line or 'out of memory' in line.lower():
      return line.strip().split(' [', 1)[0]
  return None


def out_of_memory_line(error: BaseException) -> str | None:
  """One line for an accelerator (or host) running out of memory in a step, naming the knobs
  that shrink the step; None unless `error` is an out-of-memory error."""
  reason = out_of_memory_reason(error)
  if reason is None:
    return None
  return (f'out of device memory ({reason}); lower --config.train.batch_size, raise '
          f'--config.train.grad_accum_steps, use --config.model.remat=dots_no_batch or full, or '
          f'shard with --config.mesh.fsdp; `launch.py memory` measures the step first')
