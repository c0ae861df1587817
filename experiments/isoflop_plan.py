"""The runs of an IsoFLOP study, planned from budgets and a model ladder (pure; nothing runs).

For each budget C and each rung of the ladder: tokens D = C / (training FLOPs per token of that
shape, by the study's convention), steps = D / (batch_size * seq_len) rounded to the nearest
step, and a cosine schedule as long as the run itself (`optim.decay_steps=0` means
`train.steps`: Chinchilla's lesson, a schedule longer than the run inflates its loss). A point
with fewer than `min_steps` steps, or no more steps than its warmup, is skipped with the reason.
The study runner (built on the sweep engine) turns each `PlannedRun.overrides` into one trial.
"""

import dataclasses

from experiments.ladder import Rung, ladder, shape_config
from models.config import TransformerConfig
from models.counting import training_flops_per_token


@dataclasses.dataclass(frozen=True)
class PlannedRun:
  budget: float  # the FLOPs asked for
  rung: Rung
  flops_per_token: float
  steps: int
  tokens: int  # steps * batch_size * seq_len, what the run will see
  flops: float  # tokens * flops_per_token, within half a step of the budget
  name: str
  overrides: dict  # config overrides (keys without --config.) that make this run


def run_name(budget: float, rung: Rung) -> str:
  return f'C{budget:.2e}_L{rung.n_layers}_d{rung.d_model}'.replace('+', '')


def plan_isoflop(budgets, rungs: list[Rung], base: TransformerConfig, seq_len: int,
                 batch_size: int, convention: str, min_steps: int = 50,
                 warmup_steps: int = 0) -> tuple[list[PlannedRun], list[str]]:
  """(runs, skipped) for every (budget, rung); `skipped` says why each left-out point was."""
  runs, skipped = [], []
  tokens_per_step = batch_size * seq_len
  for budget in sorted(budgets):
    for rung in rungs:
      model = shape_config(base, rung.n_layers, rung.d_model, rung.head_dim)
      per_token = training_flops_per_token(model, seq_len, convention)
      steps = round(budget / per_token / tokens_per_step)
      name = run_name(budget, rung)
      if steps < max(min_steps, warmup_steps + 1):
        skipped.append(f'{name}: {steps} steps (fewer than {max(min_steps, warmup_steps + 1)})')
        continue
      tokens = steps * tokens_per_step
      overrides = {**rung.overrides(), 'train.steps': steps, 'optim.decay_steps': 0,
                   'name': name}
      runs.append(PlannedRun(budget=float(budget), rung=rung, flops_per_token=per_token,
                             steps=steps, tokens=tokens, flops=tokens * per_token, name=name,
                             overrides=overrides))
  return runs, skipped


def plan_study(config, budgets, sizes: int, low: float, high: float,
               min_steps: int = 50) -> tuple[list[PlannedRun], list[str]]:
  """The plan for a run config: its model as the ladder's base, its seq_len, batch size, warmup,
  scaling.flops_convention and scaling.ladder_* rule."""
  base = TransformerConfig.from_dict(config.model)
  rungs = ladder(base, sizes, low, high, config.scaling.ladder_aspect_ratio,
                 config.scaling.ladder_head_dim)
  return plan_isoflop(budgets, rungs, base, config.data.seq_len, config.train.batch_size,
                      config.scaling.flops_convention, min_steps, config.optim.warmup_steps)


def format_plan(runs: list[PlannedRun], skipped: list[str], convention: str) -> str:
  """A table of the planned runs (FLOPs by `convention`) and the points left out."""
  lines = [f'{len(runs)} runs (FLOPs per token by {convention}):',
           f'{"name":<24} {"non-emb params":>14} {"steps":>7} {"tokens":>11} {"FLOPs":>10} '
           f'{"tokens/param":>12}']
  for r in runs:
    lines.append(f'{r.name:<24} {r.rung.non_embedding_params:>14,} {r.steps:>7,} '
                 f'{r.tokens:>11,} {r.flops:>10.3g} {r.tokens / r.rung.params:>12.3g}')
  lines += [f'skipped {s}' for s in skipped]
  return '\n'.join(lines)
