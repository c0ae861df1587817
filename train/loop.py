"""The training loop: the only place with side effects (metrics, progress, plots, samples).

It dispatches step N+1 before reading step N's metrics back to the host, evaluates on the
validation split every `train.eval_every` steps, stops early after `train.patience` evaluations
without improvement, and ends with a summary, a loss plot and a generated sample.

A run directory holds one run: starting in one that has checkpoints resumes from the newest that
restores (train/run_dir.py refuses a directory of another config). Checkpoints are saved every
`checkpoint.every` steps, at the end and on SIGTERM (then the run exits with EXIT_PREEMPTED).
Updates with a non-finite loss or gradient are skipped by the step itself; after
`train.max_consecutive_bad_steps` of them in a row the run stops with EXIT_NONFINITE, saving
nothing during the streak so the last good checkpoint stays the newest.
"""

import math
import sys
import time
from pathlib import Path

import jax

from errors import EXIT_NONFINITE, EXIT_PREEMPTED, EXIT_PRUNED, RunStopped
from models.counting import flops_per_token
from train import checkpoint
from train.evaluation import LN2, bits_per_byte, evaluate, sample_text  # noqa: F401 (re-exported)
from train.hardware import PeakFlops
from train.metrics import MetricsWriter, read_metrics
from train.plots import plot_losses
from train.preemption import Preemption
from train.progress import Progress, format_seconds
from train.run_dir import check_run_dir, write_run_config
from train.setup import Experiment, build_experiment


class _EarlyStopping:
  def __init__(self, patience: int, best: float | None = None, bad_evals: int = 0):
    self.patience, self.bad_evals = patience, bad_evals
    self.best = math.inf if best is None else best

  def should_stop(self, validation_loss: float) -> bool:
    if validation_loss < self.best:
      self.best, self.bad_evals = validation_loss, 0
    else:
      self.bad_evals += 1
    return self.patience > 0 and self.bad_evals >= self.patience


def _start_state(exp: Experiment, manager, loop_state: dict):
  """(state, shardings, step): resumed from the newest good checkpoint, else initialised.
  `loop_state` is filled from the checkpoint's meta item."""
  abstract, shardings = exp.abstract_state()
  state, step, message = checkpoint.restore_latest(manager, abstract, move_damaged=True)
  if state is not None and not message:
    message = f'resumed from checkpoint step {step} in {manager.directory}'
  if message and jax.process_index() == 0:
    print(message, file=sys.stderr, flush=True)
  if state is None:
    return exp.init_state(shardings), shardings, 0
  loop_state.update(checkpoint.read_meta(manager, step).get('loop', {}))
  return state, shardings, step


def _nonfinite_message(bad_streak: int, last_bad: int, manager) -> str:
  last_good = manager.latest_step()
  kept = (f'the last good checkpoint is step {last_good} in {manager.directory}'
          if last_good is not None else 'no checkpoint was saved before them')
  return (f'{bad_streak} updates in a row (the last at step {last_bad}) had a non-finite loss '
          f'or gradient and were skipped; {kept}; lower optim.lr or check the data, in a new '
          '--run_dir')


def train(config, run_dir: Path, progress_enabled: bool = True, on_evaluation=None) -> dict:
  """Trains per `config`, writing everything into `run_dir`; returns the summary dict.

  Resumes from the run directory's newest good checkpoint. Raises `RunStopped` when stopped by
  SIGTERM (after saving) or by non-finite losses (keeping the last good checkpoint).
  `on_evaluation(step, validation_loss) -> bool` is called after every periodic evaluation (not
  the final one); when it returns True the run saves a checkpoint at that step and raises
  `RunStopped` with EXIT_PRUNED (a sweep's pruner uses it).
  """
  is_main = jax.process_index() == 0
  exp = build_experiment(config, progress=progress_enabled)  # input mistakes first
  if is_main:
    for note in exp.layout.notes:  # where the rule set fell back (a dim that does not divide)
      print(f'sharding: {note}', file=sys.stderr, flush=True)
  check_run_dir(run_dir, config)  # then whose directory this is, before writing anything there
  run_dir.mkdir(parents=True, exist_ok=True)
  t, ckpt = config.train, config.checkpoint
  manager = checkpoint.open_manager(checkpoint.checkpoint_dir(run_dir), ckpt)
  tokens_per_step = t.batch_size * config.data.seq_len
  flops_per_step = flops_per_token(exp.model_cfg, config.data.seq_len) * tokens_per_step
  peak_flops = PeakFlops()
  loop_state = {}

  with exp.mesh_context(), Preemption(manager) as preemption:
    state, shardings, start_step = _start_state(exp, manager, loop_state)
    if is_main:
      write_run_config(run_dir, config)
    writer = MetricsWriter(run_dir, enabled=is_main, resume_step=start_step)
    train_fn = exp.jit_train_step(shardings)
    eval_fn = exp.jit_eval_step(shardings)
    progress = Progress(start_step, t.steps, t.log_every, enabled=progress_enabled and is_main)
    early = _EarlyStopping(t.patience, loop_state.get('best_validation_loss'),
                           loop_state.get('bad_evals', 0))
    bad_streak = loop_state.get('bad_step_streak', 0)  # updates skipped in a row
    last_bad = None  # the last of them
    run_start = time.perf_counter()
    timed_start, timed_steps = None, 0  # throughput excludes the first (compiling) step
    pending, validation_loss = None, math.nan
    window_losses = []  # train losses since the last logged record; the record holds their mean
    last_loss = next((float(r['loss']) for r in reversed(read_metrics(run_dir, 'train'))),
                     math.nan)  # of the run so far, should no step be left to run

    def report(step, metrics):
      nonlocal last_loss, timed_start, timed_steps, bad_streak, last_bad
      metrics = jax.device_get(metrics)
      window_losses.append(float(metrics['loss']))
      bad_streak = 0 if metrics['finite'] else bad_streak + 1
      last_bad = last_bad if metrics['finite'] else step + 1
      if timed_start is None:
        timed_start = time.perf_counter()
      else:
        timed_steps += 1
      elapsed = time.perf_counter() - timed_start
      tokens_per_s = timed_steps * tokens_per_step / elapsed if timed_steps else 0.0
      mfu = tokens_per_s / tokens_per_step * flops_per_step / peak_flops.value
      progress.update(step, sum(window_losses) / len(window_losses), tokens_per_s, mfu)
      if (step + 1) % t.log_every == 0 or step + 1 == t.steps:
        last_loss = sum(window_losses) / len(window_losses)
        writer.write('train', step + 1, {**metrics, 'loss': last_loss, 'last_step_loss':
                                         window_losses[-1], 'tokens_per_s': tokens_per_s,
                                         'mfu': mfu})
        window_losses.clear()
      return tokens_per_s

    def save(step, validation_loss=None):
      best = early.best if math.isfinite(early.best) else None
      meta = checkpoint.make_meta(config, step, {'best_validation_loss': best,
                                                 'bad_evals': early.bad_evals,
                                                 'bad_step_streak': bad_streak})
      blocked_s = checkpoint.save(manager, state, meta, validation_loss)
      writer.write('checkpoint', step, {'blocked_s': blocked_s})

    def stop(message, exit_code):
      manager.close()  # waits for a save in flight
      progress.close()
      writer.close()
      raise RunStopped(message, exit_code)

    tokens_per_s = 0.0
    for step in range(start_step, t.steps):
      state, metrics = train_fn(state, exp.train_batch(step))
      if pending is not None:
        tokens_per_s = report(*pending)
      pending, done = (step, metrics), step + 1
      is_eval_step = t.eval_every and done % t.eval_every == 0 and done < t.steps
      is_save_step = ((ckpt.every and done % ckpt.every == 0 and done < t.steps)
                      or (ckpt.keep_best and is_eval_step))
      preempted = preemption.requested(done)
      if is_eval_step or is_save_step or preempted:
        tokens_per_s = report(*pending)
        pending = None
      if t.max_consecutive_bad_steps and bad_streak >= t.max_consecutive_bad_steps:
        stop(_nonfinite_message(bad_streak, last_bad, manager), EXIT_NONFINITE)
      stop_early = prune = False
      if is_eval_step:
        validation_loss = evaluate(exp, eval_fn, state.params)
        peak_flops.refresh()
        writer.write('eval', done, {'loss': validation_loss})
        progress.message(f'step {done}: validation loss {validation_loss:.4f} nats/token')
        stop_early = early.should_stop(validation_loss)
        prune = on_evaluation is not None and on_evaluation(done, validation_loss)
      if preempted or (is_save_step and bad_streak == 0):
        save(done, validation_loss if is_eval_step else None)
      if preempted:
        stop(f'preempted (SIGTERM) at step {done}: checkpoint saved in {manager.directory}; '
             'run the same command again to resume', EXIT_PREEMPTED)
      if prune:
        if done not in manager.all_steps():
          save(done, validation_loss)
        stop(f'pruned at step {done} (validation loss {validation_loss:.4f}): checkpoint saved '
             f'in {manager.directory}', EXIT_PRUNED)
      if stop_early:
        progress.message(f'early stopping: no improvement in {t.patience} evaluations')
        break
    if pending is not None:
      tokens_per_s = report(*pending)
    final_step = int(state.step)
    validation_loss = evaluate(exp, eval_fn, state.params)
    writer.write('eval', final_step, {'loss': validation_loss})
    if final_step not in manager.all_steps():
      save(final_step, validation_loss)
    manager.close()  # waits for the last save
    progress.close()

  wall = time.perf_counter() - run_start
  splits = exp.manifest['splits']
  summary = {
      'steps': final_step,
      'train_loss': last_loss,
      'validation_loss': validation_loss,
      'train_bits_per_byte': bits_per_byte(last_loss, splits['train']),
      'validation_bits_per_byte': bits_per_byte(validation_loss, splits['validation']),
      'unigram_bits_per_byte': exp.manifest['unigram_bits_per_byte'],
      'tokens_per_s': tokens_per_s,
      'mfu': tokens_per_s / tokens_per_step * flops_per_step / peak_flops.refresh(),
      'wall_s': wall,
      'skipped_steps': int(state.skipped_steps),
  }
  if t.sample_tokens:
    summary['sample'] = sample_text(exp, state.params, t.sample_prompt, t.sample_tokens,
                                    t.sample_temperature, config.seed)
  if is_main:
    writer.write('summary', final_step, {k: v for k, v in summary.items() if k != 'sample'})
    unigram_nats = exp.manifest['unigram_bits_per_byte'] * LN2 * (
        splits['validation']['bytes'] / max(splits['validation']['tokens'], 1))
    plot_losses(run_dir, baseline_nats=unigram_nats)
    if 'sample' in summary:
      (run_dir / 'sample.txt').write_text(summary['sample'])
  writer.close()
  return summary


def format_summary(summary: dict, run_dir: Path) -> str:
  """The end-of-run report printed to the console."""
  lines = [
      f"finished {summary['steps']} steps in {format_seconds(summary['wall_s'])} " + (
          f"({summary['tokens_per_s']:,.0f} tokens/s, MFU {100 * summary['mfu']:.1f}%)"
          if summary['tokens_per_s'] else '(no steps left to train: evaluated the checkpoint)'),
      f"train loss      {summary['train_loss']:.4f} nats/token  "
      f"{summary['train_bits_per_byte']:.3f} bits/byte",
      f"validation loss {summary['validation_loss']:.4f} nats/token  "
      f"{summary['validation_bits_per_byte']:.3f} bits/byte  "
      f"(unigram baseline {summary['unigram_bits_per_byte']:.3f} bits/byte)",
  ]
  if summary.get('skipped_steps'):
    lines.append(f"skipped {summary['skipped_steps']} steps with a non-finite loss or gradient")
  if 'sample' in summary:
    lines += ['sample:', '-' * 60, summary['sample'], '-' * 60]
  lines.append(f'run directory: {run_dir} (metrics.jsonl, tb/, loss.png, config.json)')
  return '\n'.join(lines)

