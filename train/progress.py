"""The console display of a training run: a live progress bar on a terminal, log lines elsewhere.

Shows step, loss, tokens/s, MFU (and the peak it is of) and ETA. Only process 0 displays anything.
"""

import sys
import time

from tqdm import tqdm


def format_seconds(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  hours, rest = divmod(seconds, 3600)
  minutes, seconds = divmod(rest, 60)
  return f'{hours}:{minutes:02d}:{seconds:02d}' if hours else f'{minutes}:{seconds:02d}'


class Progress:
  """Call `update(step, loss, tokens_per_s, mfu, peak_label)` after each step; `close()` ends.

  `peak_label` names the peak MFU is a fraction of (train/hardware.py `PeakFlops.label`).
  """

  def __init__(self, start_step: int, total_steps: int, log_every: int, enabled: bool = True):
    self.total, self.log_every, self.enabled = total_steps, log_every, enabled
    self.start_step, self.start_time = start_step, time.perf_counter()
    self.live = enabled and sys.stderr.isatty()
    self.bar = None
    if self.live:
      self.bar = tqdm(total=total_steps, initial=start_step, unit='step', dynamic_ncols=True,
                      file=sys.stderr, bar_format='{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}{postfix}]')

  def update(self, step: int, loss: float, tokens_per_s: float, mfu: float,
             peak_label: str) -> None:
    if not self.enabled:
      return
    stats = f'loss {loss:.4f} | {tokens_per_s:,.0f} tok/s | MFU {100 * mfu:.1f}% of {peak_label}'
    if self.live:
      self.bar.set_postfix_str(stats, refresh=False)
      self.bar.update(step + 1 - self.bar.n)
    elif (step + 1) % self.log_every == 0 or step + 1 == self.total:
      done = step + 1 - self.start_step
      elapsed = time.perf_counter() - self.start_time
      eta = elapsed / max(done, 1) * (self.total - step - 1)
      print(f'step {step + 1:>6}/{self.total} | {stats} | ETA {format_seconds(eta)}',
            file=sys.stderr, flush=True)

  def message(self, text: str) -> None:
    """A line that does not disturb the bar."""
    if not self.enabled:
      return
    if self.live:
      self.bar.write(text, file=sys.stderr)
    else:
      print(text, file=sys.stderr, flush=True)

  def close(self) -> None:
    if self.bar is not None:
      self.bar.close()
