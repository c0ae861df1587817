"""Rotary inverse frequencies, with Llama 3.x's frequency scaling (`rope_type: llama3`).

`inverse_frequencies(head_dim, theta)` are the usual theta^(-2i/head_dim), i < head_dim/2.
Llama 3.1 stretches the context by scaling them (Meta's `apply_scaling`, transformers'
`_compute_llama3_parameters`): a frequency whose wavelength 2 pi / f is longer than
original_len / low_freq_factor is divided by `factor`; one shorter than
original_len / high_freq_factor is kept; in between it is blended, with the weight
(original_len / wavelength - low) / (high - low) on the unscaled frequency. A factor of 1 is
no scaling.
"""

from typing import NamedTuple

import numpy as np


class RopeScaling(NamedTuple):
  factor: float = 1.0
  low_freq_factor: float = 1.0
  high_freq_factor: float = 4.0
  original_max_len: int = 8192


def scaling_of(cfg) -> RopeScaling:
  """The scaling named by a TransformerConfig's rope_* fields."""
  return RopeScaling(cfg.rope_scaling_factor, cfg.rope_low_freq_factor,
                     cfg.rope_high_freq_factor, cfg.rope_original_max_len)


def inverse_frequencies(head_dim: int, theta: float,
                        scaling: RopeScaling | None = None) -> np.ndarray:
  """float32 [head_dim // 2]: the rotation speed of each pair of channels."""
  half = head_dim // 2
  inv_freq = theta ** (-np.arange(half, dtype=np.float32) / half)  # as before: float32
  if scaling is None or scaling.factor == 1.0:
    return inv_freq.astype(np.float32)
  wavelength = 2 * np.pi / inv_freq
  low_wavelength = scaling.original_max_len / scaling.low_freq_factor
  high_wavelength = scaling.original_max_len / scaling.high_freq_factor
  scaled = np.where(wavelength > low_wavelength, inv_freq / scaling.factor, inv_freq)
  smooth = ((scaling.original_max_len / wavelength - scaling.low_freq_factor)
            / (scaling.high_freq_factor - scaling.low_freq_factor))
  blended = (1 - smooth) * scaled / scaling.factor + smooth * scaled
  medium = (wavelength >= high_wavelength) & (wavelength <= low_wavelength)
  return np.where(medium, blended, scaled).astype(np.float32)
