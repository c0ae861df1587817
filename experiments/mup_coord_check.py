"""The muP coordinate check: how big every layer's activations are, against width, over a few steps.

`coord_check(config, widths, steps, batches)` trains the config's model at each width, under SP
and under muP, for `steps` optimizer steps on the same batches, and records before each step the
mean absolute value of the embedding output, every layer's attention and MLP outputs and the
logits (flax `capture_intermediates` for the sublayers, the model's `sow` for the embedding).
Width is d_model; the head count stays the config's, so head_dim grows with it, and d_ff is
derived from d_model. The learning rate is the config's, held constant (no warmup, no decay):
the check is about the size of the updates, not the schedule.

Under muP every curve is flat in width; under SP the logits (and the hidden layers' outputs)
grow with width once the first updates land (Tensor Programs V, section 6 and figure 5).
`slopes` fits log |activation| against log width; `coord_figure` draws one panel per layer,
SP above muP. `launch.py mup coord-check` (experiments/mup_cli.py) runs it on a config.
"""

import functools

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402

from models.attention import CausalSelfAttention  # noqa: E402
from models.config import TransformerConfig  # noqa: E402
from models.layers import Mlp  # noqa: E402
from models.transformer import Transformer  # noqa: E402
from train.mup import lr_multipliers  # noqa: E402
from train.optim import make_optimizer  # noqa: E402
from train.schedules import make_schedule  # noqa: E402
from train.state import make_init_fn  # noqa: E402
from train.step import train_step  # noqa: E402

PARAMETERIZATIONS = ('sp', 'mup')


def width_config(config, width: int, parameterization: str, base_width: int):
  """A copy of the run config at d_model = width under `parameterization`, checkable per layer."""
  config = config.copy_and_resolve_references()
  config.model.update(dict(d_model=width, d_ff=0, head_dim=0, parameterization=parameterization,
                           mup_base_width=base_width, scan_layers=False, remat='none'))
  config.optim.update(dict(schedule='constant', warmup_steps=0))
  return config


def _mean_abs(x) -> jax.Array:
  return jnp.mean(jnp.abs(x.astype(jnp.float32)))


def activation_sizes(params, model: Transformer, tokens_BxL) -> dict[str, jax.Array]:
  """Mean |x| of the embedding output, each layer's attention and MLP output, and the logits."""
  def capture(module, method_name):
    return method_name == '__call__' and isinstance(module, (CausalSelfAttention, Mlp))
  logits, state = model.apply({'params': params}, tokens_BxL, capture_intermediates=capture,
                              mutable=['intermediates'])
  found = state['intermediates']
  sizes = {'embedding': _mean_abs(found['embedding'][0])}
  for i in range(model.cfg.n_layers):
    layer = found[f'layer_{i}']
    sizes[f'layer_{i}.attn'] = _mean_abs(layer['attn']['__call__'][0])
    sizes[f'layer_{i}.mlp'] = _mean_abs(layer['mlp']['__call__'][0])
  sizes['logits'] = _mean_abs(logits)
  return sizes


def _check_step(state, tokens_BxLp1, *, model, tx, schedule):
  sizes = activation_sizes(state.params, model, tokens_BxLp1[:, :-1])
  state, metrics = train_step(state, tokens_BxLp1, model=model, tx=tx, schedule=schedule,
                              accum_steps=1)
  return state, sizes, metrics['loss']


def run_one(config, batches: list[np.ndarray]) -> list[dict[str, float]]:
  """The activation sizes before each of len(batches) steps of one model (one device)."""
  model_cfg = TransformerConfig.from_dict(config.model)
  model = Transformer(model_cfg)
  steps, seq_len = len(batches), config.data.seq_len
  tx = make_optimizer(config.optim, steps, lr_multipliers(model_cfg, config.optim.name, seq_len))
  schedule = make_schedule(config.optim, steps)
  state = jax.jit(make_init_fn(model_cfg, tx, config.seed, seq_len))()
  step = jax.jit(functools.partial(_check_step, model=model, tx=tx, schedule=schedule))
  records = []
  for tokens in batches:
    state, sizes, loss = step(state, jnp.asarray(tokens))
    records.append(dict({k: float(v) for k, v in sizes.items()}, loss=float(loss)))
  return records


def coord_check(config, widths, batches: list[np.ndarray], base_width: int = 0,
                parameterizations=PARAMETERIZATIONS, on_done=None) -> list[dict]:
  """One record per (parameterization, width, step, activation): its mean |value|.

  `base_width` (default: model.mup_base_width, else the narrowest width) is muP's base.
  `on_done(parameterization, width)` is called after each model (progress)."""
  base_width = base_width or config.model.mup_base_width or min(widths)
  records = []
  for parameterization in parameterizations:
    for width in widths:
      per_step = run_one(width_config(config, width, parameterization, base_width), batches)
      for step, sizes in enumerate(per_step, start=1):
        for name, value in sizes.items():
          records.append(dict(parameterization=parameterization, width=width, step=step,
                              name=name, value=value))
      if on_done:
        on_done(parameterization, width)
  return records


def slopes(records: list[dict], step: int) -> dict[tuple[str, str], float]:
  """(parameterization, activation) -> slope of log mean|x| against log width at `step`."""
  out = {}
  keys = {(r['parameterization'], r['name']) for r in records if r['name'] != 'loss'}
  for parameterization, name in sorted(keys):
    points = sorted((r['width'], r['value']) for r in records if r['step'] == step
                    and r['parameterization'] == parameterization and r['name'] == name)
    widths, values = np.array(points).T
    out[parameterization, name] = float(np.polyfit(np.log(widths), np.log(values), 1)[0])
  return out


def activation_names(records: list[dict]) -> list[str]:
  """The activations in model order: embedding, layer_0.attn, layer_0.mlp, ..., logits."""
  names = list(dict.fromkeys(r['name'] for r in records if r['name'] != 'loss'))
  return names


def coord_figure(records: list[dict], title: str = ''):
  """Mean |activation| against width (log-log), a line per step; a column per activation,
  a row per parameterization."""
  names = activation_names(records)
  rows = list(dict.fromkeys(r['parameterization'] for r in records))
  steps = sorted({r['step'] for r in records})
  colors = plt.cm.viridis(np.linspace(0, 0.9, len(steps)))
  fig, axes = plt.subplots(len(rows), len(names), figsize=(2.6 * len(names), 2.5 * len(rows)),
                           dpi=110, squeeze=False, sharex=True)
  for row, parameterization in enumerate(rows):
    for col, name in enumerate(names):
      ax = axes[row][col]
      for step, color in zip(steps, colors):
        points = sorted((r['width'], r['value']) for r in records if r['step'] == step
                        and r['name'] == name and r['parameterization'] == parameterization)
        ax.plot(*zip(*points), marker='o', ms=3, color=color, label=f't={step}')
      ax.set_xscale('log', base=2)
      ax.set_yscale('log')
      ax.set_title(f'{"muP" if parameterization == "mup" else "SP"}: {name}', fontsize=9)
      ax.tick_params(labelsize=7)
      if row == len(rows) - 1:
        ax.set_xlabel('width (d_model)', fontsize=8)
      if col == 0:
        ax.set_ylabel('mean |activation|', fontsize=8)
  axes[0][0].legend(fontsize=6)
  if title:
    fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  return fig


__all__ = ['coord_check', 'slopes', 'coord_figure', 'run_one', 'width_config']
