"""Parameter initialisers that reproduce PyTorch's defaults (docs/method.md §3, §11.12).

PyTorch initialises ``nn.Linear``, ``nn.Conv1d`` and ``nn.ConvTranspose1d`` with
``kaiming_uniform_(a=sqrt(5))`` for the weight and U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for
the bias; both reduce to U(+-1/sqrt(fan_in)). ``fan_in`` follows torch's
``_calculate_fan_in_and_fan_out``, which reads dimension 1 of the *torch* weight tensor
times the kernel size:

* Linear, weight (out, in):                 fan_in = in
* Conv1d, weight (out, in/groups, k):       fan_in = in/groups * k
* ConvTranspose1d, weight (in, out/groups, k): fan_in = out/groups * k  (note: *out*)

The transformers use N(0, 0.02) weights and zero biases; DP-MLP's per-step input layer
uses N(0, 1) (``torch.randn``).
"""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp

Initializer = Callable[..., jax.Array]

__all__ = [
    "Initializer",
    "torch_uniform",
    "linear_fan_in",
    "conv1d_fan_in",
    "conv_transpose1d_fan_in",
    "normal",
    "zeros",
    "ones",
]


def torch_uniform(fan_in: int) -> Initializer:
  """U(-1/sqrt(fan_in), 1/sqrt(fan_in)): torch's default for weights *and* biases."""
  bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0

  def init(key: jax.Array, shape: Sequence[int], dtype: Any = jnp.float32) -> jax.Array:
    return jax.random.uniform(key, tuple(shape), dtype, -bound, bound)

  init.bound = bound  # type: ignore[attr-defined]  # handy for tests
  return init


def linear_fan_in(in_features: int) -> int:
  return int(in_features)


def conv1d_fan_in(in_channels: int, kernel_size: int, groups: int = 1) -> int:
  return int(in_channels // groups * kernel_size)


def conv_transpose1d_fan_in(out_channels: int, kernel_size: int, groups: int = 1) -> int:
  return int(out_channels // groups * kernel_size)


def normal(std: float = 0.02) -> Initializer:
  """N(0, std^2), untruncated (torch.nn.init.normal_)."""
  return jax.nn.initializers.normal(stddev=std)


zeros: Initializer = jax.nn.initializers.zeros
ones: Initializer = jax.nn.initializers.ones
