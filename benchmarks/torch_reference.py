"""The PyTorch reference: the same GPT, optimizer and float32 numerics, trained in PyTorch eager.

    python -m benchmarks.torch_reference --shape gpt_byte [--steps 5] [--json]
    python -m benchmarks.torch_reference --shape gpt2_small --batch 2

Builds the model of a shape in benchmarks/shapes.py (read from the same config as `launch.py
bench`): token and learned position embeddings, pre-norm blocks (LayerNorm, fused QKV projection,
`scaled_dot_product_attention(is_causal=True)`, output projection, GELU (tanh) MLP), final
LayerNorm, logits through the tied embedding. Trains it on random tokens with torch.optim.AdamW
with the config's lr, betas, eps and weight decay (matrices only, as train/optim.py), gradient
clipping by global norm and the config's warmup, and prints tokens/s (median step time after
warm-up steps). The parameter count must equal models/counting.py's `param_count` of the config
(both are printed; a mismatch stops the run).

PyTorch is an optional dependency of this benchmark alone (requirements-bench.in).
"""

import argparse
import json
import math
import statistics
import sys
import time

try:
  import torch
  import torch.nn.functional as F
  from torch import nn
except ImportError:
  sys.exit('benchmarks/torch_reference.py needs PyTorch, an optional benchmark dependency: '
           'pip install -r requirements-bench.in')

from benchmarks.shapes import BASE_CONFIG, SHAPES, shape_overrides
from models.config import TransformerConfig
from models.counting import param_count
from train.config import load_config
from train.optim import DEFAULT_B2


class Block(nn.Module):
  def __init__(self, cfg: TransformerConfig):
    super().__init__()
    d, bias = cfg.d_model, cfg.use_bias
    self.n_heads = cfg.n_heads
    self.attn_norm = nn.LayerNorm(d, eps=cfg.norm_eps, bias=bias)
    self.qkv = nn.Linear(d, 3 * cfg.n_heads * cfg.head_dim, bias=bias)
    self.out = nn.Linear(cfg.n_heads * cfg.head_dim, d, bias=bias)
    self.mlp_norm = nn.LayerNorm(d, eps=cfg.norm_eps, bias=bias)
    self.up = nn.Linear(d, cfg.d_ff, bias=bias)
    self.down = nn.Linear(cfg.d_ff, d, bias=bias)

  def forward(self, x_BxLxD):
    batch, length, _ = x_BxLxD.shape
    q, k, v = self.qkv(self.attn_norm(x_BxLxD)).chunk(3, dim=-1)
    q_BxHxLxDh, k_BxHxLxDh, v_BxHxLxDh = (
        t.view(batch, length, self.n_heads, -1).transpose(1, 2) for t in (q, k, v))
    y_BxHxLxDh = F.scaled_dot_product_attention(q_BxHxLxDh, k_BxHxLxDh, v_BxHxLxDh,
                                                is_causal=True)
    x_BxLxD = x_BxLxD + self.out(y_BxHxLxDh.transpose(1, 2).reshape(batch, length, -1))
    h_BxLxF = F.gelu(self.up(self.mlp_norm(x_BxLxD)), approximate='tanh')
    return x_BxLxD + self.down(h_BxLxF)


class Gpt(nn.Module):
  """GPT-2's architecture; the options our config can vary are checked by `check_supported`."""

  def __init__(self, cfg: TransformerConfig):
    super().__init__()
    self.embedding = nn.Embedding(cfg.padded_vocab, cfg.d_model)
    self.position_embedding = nn.Embedding(cfg.max_len, cfg.d_model)
    self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
    self.final_norm = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps, bias=cfg.use_bias)
    for name, param in self.named_parameters():
      if param.dim() >= 2:
        nn.init.normal_(param, std=cfg.init_std)

  def forward(self, tokens_BxL):
    positions_L = torch.arange(tokens_BxL.shape[1], device=tokens_BxL.device)
    x_BxLxD = self.embedding(tokens_BxL) + self.position_embedding(positions_L)
    for block in self.blocks:
      x_BxLxD = block(x_BxLxD)
    return F.linear(self.final_norm(x_BxLxD), self.embedding.weight)  # tied embeddings


def check_supported(cfg: TransformerConfig) -> None:
  wanted = {'norm': 'layernorm', 'position': 'learned', 'mlp': 'gelu', 'tie_embeddings': True,
            'dtype': 'float32', 'param_dtype': 'float32', 'dropout': 0.0}
  wrong = [f'model.{key}={getattr(cfg, key)!r}' for key, value in wanted.items()
           if getattr(cfg, key) != value]
  if wrong or cfg.n_kv_heads != cfg.n_heads:
    sys.exit(f'the PyTorch reference builds GPT-2-style models only ({wanted}, multi-head); '
             f'this config has {", ".join(wrong) or "grouped-query attention"}')


def make_optimizer(model: nn.Module, optim_cfg, total_steps: int):
  """AdamW as train/optim.py configures it: decay on matrices only, lr-scaled (torch's default
  AdamW is decoupled and lr-scaled too), linear warmup then cosine to min_lr_ratio * lr."""
  matrices = [p for p in model.parameters() if p.dim() >= 2]
  vectors = [p for p in model.parameters() if p.dim() < 2]
  groups = [{'params': matrices, 'weight_decay': optim_cfg.weight_decay},
            {'params': vectors, 'weight_decay': optim_cfg.weight_decay
             if optim_cfg.decay_norms_and_biases else 0.0}]
  b2 = optim_cfg.b2 or DEFAULT_B2['adamw']
  optimizer = torch.optim.AdamW(groups, lr=optim_cfg.lr, betas=(optim_cfg.b1, b2),
                                eps=optim_cfg.eps)
  warmup, floor = max(optim_cfg.warmup_steps, 1), optim_cfg.min_lr_ratio
  decay = max((optim_cfg.decay_steps or total_steps) - warmup, 1)

  def factor(step: int) -> float:
    n = step + 1
    if n <= warmup:
      return n / warmup
    progress = min(max((n - warmup) / decay, 0.0), 1.0)
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

  return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def benchmark(config, steps: int, warmup_steps: int = 2) -> dict:
  """Trains `warmup_steps` untimed then `steps` timed steps; returns the measurements."""
  cfg = TransformerConfig.from_dict(config.model)
  check_supported(cfg)
  torch.manual_seed(config.seed)
  model = Gpt(cfg)
  ours, theirs = param_count(cfg), sum(p.numel() for p in model.parameters())
  if ours != theirs:
    sys.exit(f'parameter counts differ: PyTorch {theirs:,}, ours {ours:,}')
  optimizer, scheduler = make_optimizer(model, config.optim, config.train.steps)
  batch, seq_len = config.train.batch_size, config.data.seq_len
  tokens = torch.randint(0, cfg.vocab_size, (batch, seq_len + 1),
                         generator=torch.Generator().manual_seed(0))
  inputs, targets = tokens[:, :-1], tokens[:, 1:]

  def train_step() -> float:
    logits_BxLxV = model(inputs)
    loss = F.cross_entropy(logits_BxLxV.reshape(-1, logits_BxLxV.shape[-1]), targets.reshape(-1))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if config.optim.clip_norm > 0:
      torch.nn.utils.clip_grad_norm_(model.parameters(), config.optim.clip_norm)
    optimizer.step()
    scheduler.step()
    return loss.item()

  for _ in range(warmup_steps):
    train_step()
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    train_step()
    times.append(time.perf_counter() - start)
  step_s = statistics.median(times)
  return {'framework': f'pytorch {torch.__version__}', 'threads': torch.get_num_threads(),
          'config': config.name, 'batch': batch, 'seq_len': seq_len, 'parameters': theirs,
          'parameters_ours': ours, 'steps': steps, 'step_s': step_s, 'step_s_min': min(times),
          'step_s_max': max(times), 'tokens_per_s': batch * seq_len / step_s}


def format_result(result: dict) -> str:
  return (f"{result['framework']} ({result['threads']} threads): "
          f"{result['tokens_per_s']:,.0f} tokens/s, step {1000 * result['step_s']:.1f} ms "
          f"(median of {result['steps']}); batch {result['batch']} x {result['seq_len']}; "
          f"parameters {result['parameters']:,} (ours: {result['parameters_ours']:,})")


def main(argv: list[str]) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--shape', default='gpt_byte', choices=sorted(SHAPES),
                      help='a shape of benchmarks/shapes.py (default gpt_byte)')
  parser.add_argument('--batch', type=int, default=0, help="batch size (default: the shape's)")
  parser.add_argument('--steps', type=int, default=5, help='timed steps (default 5)')
  parser.add_argument('--warmup_steps', type=int, default=2, help='untimed steps first')
  parser.add_argument('--json', action='store_true', help='print the measurements as JSON')
  args = parser.parse_args(argv)
  config = load_config(BASE_CONFIG, shape_overrides(args.shape, args.batch))
  result = benchmark(config, args.steps, args.warmup_steps)
  print(json.dumps(result) if args.json else format_result(result))


if __name__ == '__main__':
  main(sys.argv[1:])
