"""`launch.py pod run --keep_alive`: rerun a pod's training run until it finishes, hands-off.

One round: wait until the slice is READY (re-creating it from its queued resource when that was
suspended, failed, deleted, or the slice preempted), set it up again if it came back (a
re-created TPU VM has fresh disks), run the command on every worker and follow it, then read
each worker's exit status. Every worker 0: done. Exit 2 (a mistake in the input) or 4
(non-finite losses) on any worker: stop, a rerun would end the same way. Anything else (75
preempted, 137/143 killed, 255 the ssh connection or the machine gone, 1 a worker crashed
because a peer died): end whatever still runs on the workers (SIGKILL by recorded pid), and
start the next round. The training command resumes from the newest checkpoint in its run
directory, which must outlive the workers (a gs:// bucket). Gives up after `--max_restarts`.
"""

import time

from sharding import pod
from sharding.pod_cli import Gcloud, require_slice, setup, worker_count, worker_states

FINAL_EXIT_CODES = {'2': 'a mistake in the input', '4': 'non-finite losses'}
RECREATE_QUEUED = {'SUSPENDED', 'FAILED', None}  # None: the queued resource is gone
SLICE_LOST = {'PREEMPTED', 'TERMINATED', None}  # None: the slice is gone


def _say(gcloud: Gcloud, message: str) -> None:
  print(f'keep_alive: {message}', file=gcloud.out, flush=True)


def wait_until_ready(gcloud: Gcloud, slice_: pod.Slice, poll_s: float, timeout_s: float,
                     sleep=time.sleep) -> tuple[dict | None, bool]:
  """(the READY slice's record or None on timeout, whether it was not READY at first)."""
  deadline = time.monotonic() + timeout_s
  waited = False
  while True:
    record = gcloud.tpu_state(slice_)
    state = record.get('state') if record else None
    if state == 'READY':
      return record, waited
    waited = True
    if slice_.queued_resource:
      queued = gcloud.queued_state(slice_)
      if queued in RECREATE_QUEUED or (state in SLICE_LOST and queued == 'ACTIVE'):
        _say(gcloud, f'slice {state or "gone"}, queued resource {queued or "gone"}: re-creating it')
        if queued is not None:
          gcloud.call(pod.queued_delete(slice_))
        gcloud.call(pod.queued_create(slice_))
    if time.monotonic() >= deadline:
      return None, waited
    hint = ('' if slice_.queued_resource or state not in SLICE_LOST else
            ' (a preempted or deleted TPU VM comes back only when re-created: give '
            '--queued_resource to let keep_alive do it)')
    _say(gcloud, f'slice {slice_.tpu} is {state or "gone"}; checking again in {poll_s:g} s{hint}')
    sleep(poll_s)


def keep_alive(gcloud: Gcloud, slice_: pod.Slice, args, launch: str, sleep=time.sleep) -> int:
  """Runs `launch` on every worker until it exits 0 everywhere; returns the final exit status."""
  if gcloud.dry_run:  # one round's commands
    require_slice(gcloud, slice_)
    gcloud.call(pod.ssh(slice_, pod.start_script(args.workdir, launch)))
    gcloud.call(pod.ssh(slice_, pod.status_script(args.workdir)))
    return 0
  restarts, needs_setup = 0, False
  while True:
    record, was_down = wait_until_ready(gcloud, slice_, args.poll_s, args.ready_timeout_s, sleep)
    if record is None:
      _say(gcloud, f'slice {slice_.tpu} not READY within {args.ready_timeout_s:g} s; giving up')
      return 1
    if needs_setup or was_down:
      _say(gcloud, 'setting the slice up again')
      needs_setup = setup(gcloud, slice_, args) != 0
    if not needs_setup:
      code = gcloud.call(pod.ssh(slice_, pod.start_script(args.workdir, launch)))
      states = worker_states(gcloud, slice_, args.workdir)
      workers = worker_count(record)
      if len(states) == workers and all(state == '0' for state in states.values()):
        _say(gcloud, f'the run finished on all {workers} workers after {restarts} restarts')
        return 0
      final = sorted({s for s in states.values() if s in FINAL_EXIT_CODES})
      if final:
        _say(gcloud, f'a worker exited {final[0]} ({FINAL_EXIT_CODES[final[0]]}): not retrying')
        return int(final[0])
      ended = ', '.join(f'{host} {state}' for host, state in sorted(states.items())) or 'unreachable'
      _say(gcloud, f'the run ended with status {code} (workers: {ended})')
    restarts += 1
    if restarts > args.max_restarts:
      _say(gcloud, f'giving up after {args.max_restarts} restarts')
      return 1
    record = gcloud.tpu_state(slice_)
    if record and record.get('state') == 'READY':
      gcloud.call(pod.ssh(slice_, pod.stop_script(args.workdir, 'KILL')))  # leftover workers
    _say(gcloud, f'restart {restarts} of at most {args.max_restarts}')
