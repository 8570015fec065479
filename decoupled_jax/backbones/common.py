"""Pieces shared by several backbones."""
from __future__ import annotations

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from decoupled_jax.nn import TorchLinear, initializers as inits, mish, sinusoidal_embedding

# Trainable-in-stage-2 naming scheme shared by every backbone: each conditioning layer has a
# path segment starting with ``cond_``; the transformers additionally train ``pos_emb``.
COND_PREFIX_PATTERN = r"(^|/)cond_"
POS_EMB_PATTERN = r"^pos_emb$"


def broadcast_timesteps(t: jax.Array, batch: int) -> jax.Array:
  """Scalar or (B,) timesteps -> (B,) floats (float32 unless already floating, e.g. the
  compute dtype under mixed precision)."""
  t = jnp.asarray(t)
  if not jnp.issubdtype(t.dtype, jnp.floating):
    t = t.astype(jnp.float32)
  return jnp.broadcast_to(t.reshape(-1), (batch,))


def flatten_cond(cond: Optional[jax.Array], batch: int) -> Optional[jax.Array]:
  """(B, To, Dc) -> (B, To*Dc); None stays None."""
  if cond is None:
    return None
  return jnp.reshape(cond, (batch, -1))


class StepEncoder(nn.Module):
  """Sinusoidal(dim) -> Linear(dim, 4 dim) -> Mish -> Linear(4 dim, dim).

  ``normal_init`` picks the Linear init: torch default (DP-C, DP-MLP) or N(0, 0.02) weights
  with zero biases (the transformers). Params: ``linear_0``, ``linear_1``.
  """
  dim: int
  hidden_mult: int = 4
  normal_init: bool = False

  @nn.compact
  def __call__(self, t: jax.Array) -> jax.Array:
    kw = {}
    if self.normal_init:
      kw = dict(kernel_init=inits.normal(0.02), bias_init=inits.zeros)
    h = sinusoidal_embedding(t, self.dim)
    h = TorchLinear(self.dim * self.hidden_mult, name="linear_0", **kw)(h)
    h = mish(h)
    return TorchLinear(self.dim, name="linear_1", **kw)(h)


def global_condition(step_emb: jax.Array, cond: Optional[jax.Array]) -> jax.Array:
  """g = concat[step_emb, flatten(cond)] (docs/method.md §3.1/§3.4/§3.5/§3.6)."""
  flat = flatten_cond(cond, step_emb.shape[0])
  return step_emb if flat is None else jnp.concatenate([step_emb, flat], axis=-1)
