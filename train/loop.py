"""The training loop: the only place with side effects (metrics, progress, plots, samples).

`train()` is a short `for` over steps whose body reads as a list of decisions: it dispatches
step N+1 before reading step N's metrics back to the host, and asks the pure `plan_step` and
`decide` what happens at each step (log, evaluate, save, stop). It evaluates on the validation
split every `train.eval_every` steps, stops early after `train.patience` evaluations without
improvement, and ends with a final evaluation and checkpoint (`_final_evaluation`), then a
summary, a loss plot and a sample (`_finish`).

A run directory holds one run: starting in one that has checkpoints resumes from the newest that
restores (train/run_dir.py refuses a directory of another config). Checkpoints are saved every
`checkpoint.every` steps, at the end and on SIGTERM (then the run exits with EXIT_PREEMPTED).
Updates with a non-finite loss or gradient are skipped by the step itself; after
`train.max_consecutive_bad_steps` of them in a row the run stops with EXIT_NONFINITE, saving
nothing during the streak so the last good checkpoint stays the newest. A sweep passes
`on_evaluation(step, validation_loss) -> bool`; True stops the trial after saving
(EXIT_PRUNED).
"""

import dataclasses
import math
import sys
import time
from typing import Any, Callable

import jax
from etils import epath

from errors import EXIT_NONFINITE, EXIT_PREEMPTED, EXIT_PRUNED, RunStopped
from models.counting import flops_per_token
from sharding.distributed import initialize as initialize_distributed
from sharding.platform import report_platform
from storage import as_path
from train import checkpoint, compile_cache
from train.classify import final_report, write_labels
from train.decisions import (EARLY, PREEMPTED, PRUNED, EarlyStopping, decide, plan_step,
                             too_many_bad_steps)
from train.evaluation import LN2, bits_per_byte, evaluate, sample_text
from train.experiment import Experiment, build_experiment
from train.hardware import PeakFlops
from train.init_from import apply_init_from, start_from_source
from train.metrics import MetricsWriter, read_metrics
from train.plots import plot_losses
from train.preemption import Preemption
from train.progress import Progress, format_seconds
from train.run_dir import check_run_dir, check_same_run_dir, check_writable, write_run_config


class Throughput:
  """Tokens/s and MFU over the steps read back so far, without the first (it compiles)."""

  def __init__(self, tokens_per_step: int, flops_per_step: float):
    self.tokens_per_step, self.flops_per_step = tokens_per_step, flops_per_step
    self.peak = PeakFlops()
    self.start, self.steps, self.tokens_per_s = None, 0, 0.0

  def step_read(self) -> None:
    now = time.perf_counter()
    if self.start is None:
      self.start = now
    else:
      self.steps += 1
      self.tokens_per_s = self.steps * self.tokens_per_step / (now - self.start)

  def mfu(self, peak_flops: float | None = None) -> float:
    peak_flops = self.peak.value if peak_flops is None else peak_flops
    return self.tokens_per_s / self.tokens_per_step * self.flops_per_step / peak_flops


class StepLog:
  """Each step's metrics, read back to the host: progress, windowed train records (the mean
  loss since the last record), throughput and the streak of non-finite steps."""

  def __init__(self, writer: MetricsWriter, progress: Progress, meter: Throughput,
               bad_streak: int, last_loss: float):
    self.writer, self.progress, self.meter = writer, progress, meter
    self.bad_streak, self.last_bad = bad_streak, None  # updates skipped in a row, the last one
    self.last_loss = last_loss  # of the last train record
    self.window = []

  def read(self, step: int, metrics, log: bool) -> None:
    """Step `step` (0-based) is done; `log`: write its train record."""
    metrics = jax.device_get(metrics)
    self.window.append(float(metrics['loss']))
    self.bad_streak = 0 if metrics['finite'] else self.bad_streak + 1
    self.last_bad = self.last_bad if metrics['finite'] else step + 1
    self.meter.step_read()
    tokens_per_s, mfu = self.meter.tokens_per_s, self.meter.mfu()
    mean_loss = sum(self.window) / len(self.window)
    self.progress.update(step, mean_loss, tokens_per_s, mfu, self.meter.peak.label)
    if log:
      self.last_loss = mean_loss
      self.writer.write('train', step + 1, {**metrics, 'loss': mean_loss, 'last_step_loss':
                                            self.window[-1], 'tokens_per_s': tokens_per_s,
                                            'mfu': mfu})
      self.window.clear()


@dataclasses.dataclass
class _Run:
  """What one run writes through, passed explicitly to the helpers of the loop."""
  exp: Experiment
  run_dir: epath.Path
  manager: Any  # orbax CheckpointManager
  writer: MetricsWriter
  progress: Progress
  early: EarlyStopping
  log: StepLog
  started: float  # time.perf_counter() at the first step

  def save(self, state, step: int, validation_loss: float | None = None) -> None:
    best = self.early.best if math.isfinite(self.early.best) else None
    meta = checkpoint.make_meta(self.exp.config, step, {
        'best_validation_loss': best, 'bad_evals': self.early.bad_evals,
        'bad_step_streak': self.log.bad_streak})
    blocked_s = checkpoint.save(self.manager, state, meta, validation_loss)
    self.writer.write('checkpoint', step, {'blocked_s': blocked_s})

  def evaluate(self, state, step: int) -> float:
    validation_loss = evaluate(self.exp, state.params)
    self.writer.write('eval', step, {'loss': validation_loss})
    return validation_loss

  def periodic_evaluation(self, state, step: int) -> float:
    validation_loss = self.evaluate(state, step)
    self.log.meter.peak.refresh()  # the machine may have been busy at the last measurement
    self.progress.message(f'step {step}: validation loss {validation_loss:.4f} nats/token')
    return validation_loss

  def stop(self, message: str, exit_code: int):
    self.manager.close()  # waits for a save in flight
    self.progress.close()
    self.writer.close()
    raise RunStopped(message, exit_code)


def _start_state(exp: Experiment, manager) -> tuple:
  """(state, step, loop state): resumed from the newest good checkpoint (its loop state from
  the checkpoint's meta item), else initialised."""
  state, step, message = checkpoint.restore_latest(manager, exp.abstract_state,
                                                   move_damaged=True)
  if state is not None and not message:
    message = f'resumed from checkpoint step {step} in {manager.directory}'
  if message and jax.process_index() == 0:
    print(message, file=sys.stderr, flush=True)
  if state is None and exp.config.train.init_from:
    return start_from_source(exp, exp.init_state()), 0, {}
  if state is None:
    return exp.init_state(), 0, {}
  return state, step, checkpoint.read_meta(manager, step).get('loop', {})


def _open_run(exp: Experiment, run_dir: epath.Path, manager, start_step: int, loop_state: dict,
              progress_enabled: bool) -> _Run:
  config, is_main = exp.config, jax.process_index() == 0
  if is_main:
    write_run_config(run_dir, config)
    if exp.labelled is not None:
      write_labels(run_dir, exp.labelled.labels)
  writer = MetricsWriter(run_dir, enabled=is_main, resume_step=start_step)
  t = config.train
  progress = Progress(start_step, t.steps, t.log_every, enabled=progress_enabled and is_main)
  tokens_per_step = t.batch_size * config.data.seq_len
  meter = Throughput(tokens_per_step,
                     flops_per_token(exp.model_cfg, config.data.seq_len) * tokens_per_step)
  last_loss = next((float(r['loss']) for r in reversed(read_metrics(run_dir, 'train'))),
                   math.nan)  # of the run so far, should no step be left to run
  log = StepLog(writer, progress, meter, loop_state.get('bad_step_streak', 0), last_loss)
  early = EarlyStopping(t.patience, loop_state.get('best_validation_loss'),
                         loop_state.get('bad_evals', 0))
  return _Run(exp=exp, run_dir=run_dir, manager=manager, writer=writer, progress=progress,
              early=early, log=log, started=time.perf_counter())


def _nonfinite_message(bad_streak: int, last_bad: int, manager) -> str:
  last_good = manager.latest_step()
  kept = (f'the last good checkpoint is step {last_good} in {manager.directory}'
          if last_good is not None else 'no checkpoint was saved before them')
  return (f'{bad_streak} updates in a row (the last at step {last_bad}) had a non-finite loss '
          f'or gradient and were skipped; {kept}; lower optim.lr or check the data, in a new '
          '--run_dir')


def _stop_message(reason: str, step: int, validation_loss: float, directory) -> str:
  if reason == PREEMPTED:
    return (f'preempted (SIGTERM) at step {step}: checkpoint saved in {directory}; run the '
            'same command again to resume')
  return (f'pruned by the sweep at step {step} (validation loss {validation_loss:.4f} '
          f'nats/token): checkpoint saved in {directory}')


def train(config, run_dir: epath.Path, progress_enabled: bool = True,
          on_evaluation: Callable[[int, float], bool] | None = None) -> dict:
  """Trains per `config`, writing everything into `run_dir`; returns the summary dict.

  Resumes from the run directory's newest good checkpoint. Raises `RunStopped` when stopped by
  SIGTERM (after saving), by non-finite losses (keeping the last good checkpoint) or by
  `on_evaluation(step, validation_loss)` returning True after a periodic evaluation (after
  saving; it must give the same answer on every process).
  """
  config = apply_init_from(config)  # fine-tuning: the model and tokenizer of train.init_from
  cache_dir = compile_cache.enable(config.train.compile_cache_dir)  # before the first compile
  exp = build_experiment(config, progress=progress_enabled)  # input mistakes first
  if jax.process_index() == 0:
    for note in exp.notes:  # where the rule set fell back (a dim that does not divide)
      print(f'sharding: {note}', file=sys.stderr, flush=True)
  check_run_dir(run_dir, config)  # then whose directory this is, before writing anything there
  run_dir.mkdir(parents=True, exist_ok=True)
  t = config.train
  manager = checkpoint.open_manager(checkpoint.checkpoint_dir(run_dir), config.checkpoint)

  with (exp.mesh_context(), Preemption(manager) as preemption,
        compile_cache.watch(cache_dir) as loaded):
    state, start_step, loop_state = _start_state(exp, manager)
    run = _open_run(exp, run_dir, manager, start_step, loop_state, progress_enabled)
    pending = None  # (step, metrics, log?) of the step dispatched last, not read yet
    for step in range(start_step, t.steps):
      state, metrics = exp.train_step(state, exp.train_batch(step))
      if pending is not None:
        run.log.read(*pending)  # the previous step, read while this one runs
      done = step + 1
      plan = plan_step(done, t, config.checkpoint, preemption.requested(done))
      pending = (step, metrics, plan.log)
      if plan.read_now:
        run.log.read(*pending)
        pending = None
      if too_many_bad_steps(run.log.bad_streak, t.max_consecutive_bad_steps):
        run.stop(_nonfinite_message(run.log.bad_streak, run.log.last_bad, manager),
                 EXIT_NONFINITE)
      validation_loss, stop_early, prune = None, False, False
      if plan.evaluate:
        validation_loss = run.periodic_evaluation(state, done)
        stop_early = run.early.should_stop(validation_loss)
        prune = bool(on_evaluation and on_evaluation(done, validation_loss))
      then = decide(plan, run.log.bad_streak, stop_early, prune)
      if then.save:
        run.save(state, done, validation_loss)
      if then.stop in (PREEMPTED, PRUNED):
        run.stop(_stop_message(then.stop, done, validation_loss, manager.directory),
                 EXIT_PREEMPTED if then.stop == PREEMPTED else EXIT_PRUNED)
      if then.stop == EARLY:
        run.progress.message(f'early stopping: no improvement in {t.patience} evaluations')
        break
    if pending is not None:
      run.log.read(*pending)
    validation_loss = _final_evaluation(run, state)
  summary = _finish(run, state, validation_loss)
  if cache_line := loaded.describe():
    summary['compile_cache'] = cache_line
  return summary


def _final_evaluation(run: _Run, state) -> float:
  """Evaluates the final state, saves it unless already saved, and waits for the save."""
  final_step = int(state.step)
  validation_loss = run.evaluate(state, final_step)
  if final_step not in run.manager.all_steps():
    run.save(state, final_step, validation_loss)
  run.manager.close()  # waits for the last save
  run.progress.close()
  return validation_loss


def _finish(run: _Run, state, validation_loss: float) -> dict:
  """The summary of the run, written with its loss plot and sample (process 0)."""
  exp, t = run.exp, run.exp.config.train
  if exp.objective.name != 'lm':  # span corruption's loss is per target, a classifier's per text
    return _finish_task(run, state, validation_loss)
  manifest, final_step = exp.corpus.manifest, int(state.step)
  splits, last_loss, meter = manifest['splits'], run.log.last_loss, run.log.meter
  summary = {
      'steps': final_step,
      'train_loss': last_loss,
      'validation_loss': validation_loss,
      'train_bits_per_byte': bits_per_byte(last_loss, splits['train']),
      'validation_bits_per_byte': bits_per_byte(validation_loss, splits['validation']),
      'unigram_bits_per_byte': manifest['unigram_bits_per_byte'],
      'tokens_per_s': meter.tokens_per_s,
      'mfu': meter.mfu(meter.peak.refresh()),
      'mfu_of': meter.peak.label,
      'wall_s': time.perf_counter() - run.started,
      'skipped_steps': int(state.skipped_steps),
  }
  if t.sample_tokens:
    summary['sample'] = sample_text(exp, state.params, t.sample_prompt, t.sample_tokens,
                                    t.sample_temperature, exp.config.seed)
  if jax.process_index() == 0:
    run.writer.write('summary', final_step, {k: v for k, v in summary.items() if k != 'sample'})
    unigram_nats = manifest['unigram_bits_per_byte'] * LN2 * (
        splits['validation']['bytes'] / max(splits['validation']['tokens'], 1))
    plot_losses(run.run_dir, baseline_nats=unigram_nats)
    if 'sample' in summary:
      (run.run_dir / 'sample.txt').write_text(summary['sample'])
  run.writer.close()
  return summary


def _finish_task(run: _Run, state, validation_loss: float) -> dict:
  """The summary of a run that is not a language model's (no bits/byte, no sample); a
  classifier's adds its validation scores (train/classify.py writes the report and PNG)."""
  meter, final_step = run.log.meter, int(state.step)
  summary = {'steps': final_step, 'train_loss': run.log.last_loss,
             'validation_loss': validation_loss, 'tokens_per_s': meter.tokens_per_s,
             'mfu': meter.mfu(meter.peak.refresh()), 'mfu_of': meter.peak.label,
             'wall_s': time.perf_counter() - run.started,
             'skipped_steps': int(state.skipped_steps), 'task': run.exp.objective.name}
  if run.exp.labelled is not None:
    summary.update(final_report(run.exp, state.params, run.run_dir))
  if jax.process_index() == 0:
    run.writer.write('summary', final_step, {k: v for k, v in summary.items()
                                             if k not in ('scores_table', 'task', 'mfu_of')})
    plot_losses(run.run_dir)
  run.writer.close()
  return summary


def format_summary(summary: dict, run_dir: epath.Path) -> str:
  """The end-of-run report printed to the console."""
  lines = [
      f"finished {summary['steps']} steps in {format_seconds(summary['wall_s'])} " + (
          f"({summary['tokens_per_s']:,.0f} tokens/s, "
          f"MFU {100 * summary['mfu']:.1f}% of {summary['mfu_of']})"
          if summary['tokens_per_s'] else '(no steps left to train: evaluated the checkpoint)'),
  ]
  if 'task' in summary:  # span corruption (nats per target token) or a classifier (per text)
    unit = 'nats/text' if 'accuracy' in summary else 'nats/target token'
    lines += [f"train loss      {summary['train_loss']:.4f} {unit}",
              f"validation loss {summary['validation_loss']:.4f} {unit}"]
    if 'accuracy' in summary:
      lines += [f"validation ({summary['validation_texts']} texts):", summary['scores_table'],
                f'report: {run_dir}/classification.json, confusion_matrix.png']
  else:
    lines += [
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
  if 'compile_cache' in summary:
    lines.append(summary['compile_cache'])
  lines.append(f'run directory: {run_dir} (metrics.jsonl, tb/, loss.png, config.json)')
  return '\n'.join(lines)


def train_command(config, run_dir: str | None = None, progress_enabled: bool = True) -> int:
  """`launch.py train`: joins the other processes (if any), trains in `run_dir` (default
  <run_root>/<name>) and prints the summary."""
  initialize_distributed(config.distributed)  # before anything touches devices
  report_platform(config.mesh.platform)  # prints the backend; stops a TPU/GPU config on CPU
  run_dir = as_path(run_dir or as_path(config.run_root) / config.name)  # local or gs://
  check_writable(run_dir)
  check_same_run_dir(run_dir)  # several processes: one shared directory, or exit 2 now
  summary = train(config, run_dir, progress_enabled=progress_enabled)
  if jax.process_index() == 0:
    print(format_summary(summary, run_dir))
  return 0
