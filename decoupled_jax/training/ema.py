"""Power-law EMA of diffusers/Diffusion Policy (docs/method.md §5).

With n updates already done, k = max(0, n - 1); decay = 0 if k == 0 else
min(max_decay, 1 - (1 + k) ** -power), so the first two updates copy the weights.
Only trainable leaves carry an EMA; frozen leaves are their own EMA (the reference copies them).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def ema_decay(num_updates, power: float = 0.75, max_decay: float = 0.9999, min_decay: float = 0.0):
  k = jnp.maximum(0, num_updates - 1).astype(jnp.float32)
  decay = 1.0 - (1.0 + k) ** (-power)
  decay = jnp.clip(decay, min_decay, max_decay)
  return jnp.where(k == 0, 0.0, decay)


def ema_update(ema, params, num_updates, *, power: float = 0.75, max_decay: float = 0.9999):
  d = ema_decay(num_updates, power, max_decay)
  return jax.tree.map(lambda e, p: d * e + (1.0 - d) * p, ema, params)
