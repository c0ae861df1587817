"""Hugging Face config.json <-> this codebase's `model.*` settings, for Llama and GPT-2.

`model_settings(hf_config)` turns a `LlamaForCausalLM` or `GPT2LMHeadModel` config.json (the
transformers 4 keys `rope_theta` / `rope_scaling` or the transformers 5 key `rope_parameters`)
into `model.*` settings, refusing in one line every architecture or option that the Transformer
does not compute the same way; `hf_config(cfg, ...)` is the reverse (written with the
transformers 4 keys, which transformers 5 reads too). models/hf_checkpoint.py maps the weights.
"""

import json
from pathlib import Path

from errors import UserError
from models.config import TransformerConfig

LLAMA, GPT2 = 'llama', 'gpt2'
ARCHITECTURES = {'LlamaForCausalLM': LLAMA, 'GPT2LMHeadModel': GPT2}
GELU_TANH = ('gelu_new', 'gelu_pytorch_tanh')


def family_of(hf: dict) -> str:
  """'llama' or 'gpt2'; UserError naming the architecture otherwise."""
  names = hf.get('architectures') or []
  for name in names:
    if name in ARCHITECTURES:
      return ARCHITECTURES[name]
  if not names and hf.get('model_type') in (LLAMA, GPT2):
    return hf['model_type']
  found = ', '.join(names) or f"model_type {hf.get('model_type')!r}"
  raise UserError(f'cannot convert {found}: only {", ".join(ARCHITECTURES)} are supported')


def _rope(hf: dict) -> tuple[float, dict | None]:
  """(rope_theta, the llama3 scaling parameters or None), from the transformers 4 keys
  (rope_theta, rope_scaling) or the transformers 5 key (rope_parameters)."""
  params = hf.get('rope_parameters') or {}
  scaling = hf.get('rope_scaling') or params
  theta = float(hf.get('rope_theta', params.get('rope_theta', 10000.0)))
  kind = scaling.get('rope_type', scaling.get('type', 'default')) if scaling else 'default'
  return theta, (scaling if kind == 'llama3' else None if kind == 'default' else kind)


def model_settings(hf: dict) -> dict:
  """`model.*` settings computing what the Hugging Face config.json `hf` computes."""
  family = family_of(hf)
  refused = []
  if family == LLAMA:
    heads = int(hf['num_attention_heads'])
    settings = {
        'vocab_size': int(hf['vocab_size']), 'd_model': int(hf['hidden_size']),
        'n_layers': int(hf['num_hidden_layers']), 'n_heads': heads,
        'n_kv_heads': int(hf.get('num_key_value_heads') or heads),
        'head_dim': int(hf.get('head_dim') or int(hf['hidden_size']) // heads),
        'd_ff': int(hf['intermediate_size']),
        'max_len': int(hf.get('max_position_embeddings', 2048)), 'norm': 'rmsnorm',
        'norm_eps': float(hf.get('rms_norm_eps', 1e-6)), 'position': 'rope', 'mlp': 'swiglu',
        'use_bias': bool(hf.get('attention_bias', False)),
        'tie_embeddings': bool(hf.get('tie_word_embeddings', False))}
    theta, scaling = _rope(hf)
    settings['rope_theta'] = theta
    if isinstance(scaling, str):
      refused.append(f'rope_scaling type {scaling!r} (only llama3)')
    elif scaling:
      settings.update(
          rope_scaling_factor=float(scaling['factor']),
          rope_low_freq_factor=float(scaling['low_freq_factor']),
          rope_high_freq_factor=float(scaling['high_freq_factor']),
          rope_original_max_len=int(scaling['original_max_position_embeddings']))
    if hf.get('hidden_act', 'silu') != 'silu':
      refused.append(f"hidden_act {hf['hidden_act']!r} (only silu)")
    if bool(hf.get('mlp_bias', False)) != settings['use_bias']:
      refused.append('attention_bias != mlp_bias')
  else:
    d_model = int(hf['n_embd'])
    settings = {
        'vocab_size': int(hf['vocab_size']), 'd_model': d_model, 'n_layers': int(hf['n_layer']),
        'n_heads': int(hf['n_head']), 'n_kv_heads': int(hf['n_head']),
        'head_dim': d_model // int(hf['n_head']), 'd_ff': int(hf.get('n_inner') or 4 * d_model),
        'max_len': int(hf['n_positions']), 'norm': 'layernorm',
        'norm_eps': float(hf.get('layer_norm_epsilon', 1e-5)), 'position': 'learned',
        'mlp': 'gelu', 'use_bias': True,
        'tie_embeddings': bool(hf.get('tie_word_embeddings', True))}
    if hf.get('activation_function', 'gelu_new') not in GELU_TANH:
      refused.append(f"activation_function {hf['activation_function']!r} (only gelu_new)")
    for key, fine in (('scale_attn_by_inverse_layer_idx', False), ('scale_attn_weights', True),
                      ('add_cross_attention', False)):
      if bool(hf.get(key, fine)) != fine:
        refused.append(f'{key}={hf[key]}')
  if refused:
    raise UserError(f'cannot convert this {family} model: {"; ".join(refused)} not supported')
  return {**settings, 'vocab_pad_multiple': 1, 'dropout': 0.0, 'scan_layers': False}


def family_of_model(cfg: TransformerConfig) -> str:
  """The Hugging Face family computing what `cfg` computes; UserError if there is none."""
  if cfg.norm == 'rmsnorm' and cfg.position == 'rope' and cfg.mlp == 'swiglu':
    return LLAMA
  if (cfg.norm == 'layernorm' and cfg.position == 'learned' and cfg.mlp == 'gelu'
      and cfg.use_bias and cfg.n_kv_heads == cfg.n_heads
      and cfg.n_heads * cfg.head_dim == cfg.d_model):
    return GPT2
  raise UserError(f'a model with norm={cfg.norm}, position={cfg.position}, mlp={cfg.mlp}, '
                  f'use_bias={cfg.use_bias} has no Hugging Face equivalent here; export '
                  'rmsnorm+rope+swiglu (Llama) or layernorm+learned+gelu with biases (GPT-2)')


def hf_config(cfg: TransformerConfig, bos_id: int | None, eos_id: int | None) -> dict:
  """The config.json of the Hugging Face model computing what `cfg` computes."""
  family = family_of_model(cfg)
  tokens = {'bos_token_id': bos_id, 'eos_token_id': eos_id}
  if family == GPT2:
    return {'architectures': ['GPT2LMHeadModel'], 'model_type': GPT2,
            'vocab_size': cfg.vocab_size, 'n_embd': cfg.d_model, 'n_layer': cfg.n_layers,
            'n_head': cfg.n_heads, 'n_inner': cfg.d_ff, 'n_positions': cfg.max_len,
            'layer_norm_epsilon': cfg.norm_eps, 'activation_function': 'gelu_new',
            'tie_word_embeddings': cfg.tie_embeddings, 'resid_pdrop': 0.0, 'embd_pdrop': 0.0,
            'attn_pdrop': 0.0, 'torch_dtype': 'float32', **tokens}
  out = {'architectures': ['LlamaForCausalLM'], 'model_type': LLAMA,
         'vocab_size': cfg.vocab_size, 'hidden_size': cfg.d_model,
         'num_hidden_layers': cfg.n_layers, 'num_attention_heads': cfg.n_heads,
         'num_key_value_heads': cfg.n_kv_heads, 'head_dim': cfg.head_dim,
         'intermediate_size': cfg.d_ff, 'max_position_embeddings': cfg.max_len,
         'rms_norm_eps': cfg.norm_eps, 'hidden_act': 'silu', 'rope_theta': cfg.rope_theta,
         'attention_bias': cfg.use_bias, 'mlp_bias': cfg.use_bias,
         'tie_word_embeddings': cfg.tie_embeddings, 'torch_dtype': 'float32', **tokens}
  if cfg.rope_scaling_factor != 1.0:
    out['rope_scaling'] = {
        'rope_type': 'llama3', 'factor': cfg.rope_scaling_factor,
        'low_freq_factor': cfg.rope_low_freq_factor,
        'high_freq_factor': cfg.rope_high_freq_factor,
        'original_max_position_embeddings': cfg.rope_original_max_len}
  return out


def read_config(folder) -> dict:
  """The config.json of a Hugging Face model folder."""
  path = Path(folder) / 'config.json'
  if not path.is_file():
    raise UserError(f'{folder} has no config.json; pass a Hugging Face model folder')
  try:
    return json.loads(path.read_text())
  except (UnicodeDecodeError, json.JSONDecodeError):
    raise UserError(f'{path} is not JSON; pass a Hugging Face model folder') from None
