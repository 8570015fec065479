"""DP-C: ConditionalUnet1D (docs/method.md §3.1; the LIBERO/DROID variant of §3.2 is a preset)."""
from __future__ import annotations

from typing import Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from decoupled_jax.backbones.base import ActionExpert
from decoupled_jax.backbones.common import (COND_PREFIX_PATTERN, StepEncoder, broadcast_timesteps,
                                            global_condition)
from decoupled_jax.nn import Conv1d, ConvTranspose1d, GroupNorm, TorchLinear, mish

__all__ = ["Conv1dBlock", "ConditionalResidualBlock1D", "ConditionalUnet1D", "DP_C_MIMICGEN",
           "DP_C_DROID"]


class Conv1dBlock(nn.Module):
  """Conv1d(k, pad k//2) -> GroupNorm(n_groups) -> Mish. Params: ``conv``, ``norm``."""
  features: int
  kernel_size: int
  n_groups: int = 8

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = Conv1d(self.features, self.kernel_size, padding=self.kernel_size // 2, name="conv")(x)
    x = GroupNorm(self.n_groups, name="norm")(x)
    return mish(x)


class ConditionalResidualBlock1D(nn.Module):
  """Two Conv1dBlocks with FiLM in between, plus a residual (1x1 conv when C changes).

  FiLM (``cond_film``): Mish -> Linear(cond, 2 out) split into (scale, bias); h = scale*h + bias
  (``cond_predict_scale=True``; note: not 1 + scale). With ``cond_predict_scale=False`` the
  Linear outputs ``out`` channels that are added.
  """
  features: int
  kernel_size: int = 5
  n_groups: int = 8
  cond_predict_scale: bool = True

  @nn.compact
  def __call__(self, x: jax.Array, g: jax.Array) -> jax.Array:
    c = self.features
    out = Conv1dBlock(c, self.kernel_size, self.n_groups, name="conv_block_0")(x)
    n_film = 2 * c if self.cond_predict_scale else c
    embed = TorchLinear(n_film, name="cond_film")(mish(g))[:, None, :]  # (B, 1, n_film)
    if self.cond_predict_scale:
      scale, bias = embed[..., :c], embed[..., c:]
      out = scale * out + bias
    else:
      out = out + embed
    out = Conv1dBlock(c, self.kernel_size, self.n_groups, name="conv_block_1")(out)
    res = x if x.shape[-1] == c else Conv1d(c, 1, name="residual_conv")(x)
    return out + res


class ConditionalUnet1D(ActionExpert):
  """DP-C ConditionalUnet1D, docs/method.md §3.1 (MimicGen, 244 M) and §3.2 (DROID/LIBERO preset).

  Channels-last: x (B, H, Da) -> (B, H, Da). Global condition
  g = concat[step_encoder(t), flatten(cond)]; every residual block applies FiLM from g.
  Layout with ``down_dims`` (d0, d1, d2) (lengths for H = 16):
    down_0: Da->d0, d0->d0, Downsample (16->8); down_1: d0->d1, d1->d1, Downsample (8->4);
    down_2: d1->d2, d2->d2 (no downsample); mid: 2 x d2->d2;
    up_0: cat(skip) 2 d2->d1, d1->d1, Upsample (4->8); up_1: 2 d1->d0, d0->d0, Upsample (8->16)
    (the reference's "is_last" check never fires on the up path, so both levels upsample);
    final_block: Conv1dBlock(d0, d0, k) then final_conv: Conv1d(d0, Da, 1).
  Downsample = Conv1d(k3, s2, p1); Upsample = ConvTranspose1d(k4, s2, p1). H must be a
  multiple of 2**(len(down_dims) - 1). Init: PyTorch defaults everywhere.

  Param paths: ``step_encoder/linear_{0,1}``, ``down_{i}_block_{j}/...``,
  ``down_{i}_downsample``, ``mid_block_{j}``, ``up_{i}_block_{j}``, ``up_{i}_upsample``,
  ``final_block``, ``final_conv``; inside a block ``conv_block_{0,1}/{conv,norm}``,
  ``cond_film``, ``residual_conv``. Stage-2 trainable (docs/method.md §2.1): the 12 ``cond_film``
  Linears.
  """
  down_dims: Sequence[int] = (512, 1024, 2048)
  kernel_size: int = 5
  n_groups: int = 8
  diffusion_step_embed_dim: int = 128
  cond_predict_scale: bool = True

  CONDITIONING_PATTERNS = (COND_PREFIX_PATTERN,)
  # DP-C's AdamW decays every parameter (docs/method.md §5, §12).
  NO_WEIGHT_DECAY_PATTERNS: tuple = ()

  @nn.compact
  def __call__(self, x: jax.Array, t: jax.Array, cond: Optional[jax.Array] = None, *,
               train: bool = False) -> jax.Array:
    del train  # no dropout in DP-C
    b, horizon, da = x.shape
    n_levels = len(self.down_dims)
    if horizon % (2 ** (n_levels - 1)):
      raise ValueError(f"horizon {horizon} must be a multiple of {2 ** (n_levels - 1)}")
    t = broadcast_timesteps(t, b)
    step = StepEncoder(self.diffusion_step_embed_dim, name="step_encoder")(t)
    g = global_condition(step, cond)

    def block(features, name):
      return ConditionalResidualBlock1D(features, self.kernel_size, self.n_groups,
                                        self.cond_predict_scale, name=name)

    h = x
    skips = []
    for i, dim in enumerate(self.down_dims):
      h = block(dim, f"down_{i}_block_0")(h, g)
      h = block(dim, f"down_{i}_block_1")(h, g)
      skips.append(h)
      if i < n_levels - 1:
        h = Conv1d(dim, 3, stride=2, padding=1, name=f"down_{i}_downsample")(h)

    h = block(self.down_dims[-1], "mid_block_0")(h, g)
    h = block(self.down_dims[-1], "mid_block_1")(h, g)

    up_dims = list(reversed(self.down_dims[:-1]))  # (d1, d0)
    for i, dim in enumerate(up_dims):
      h = jnp.concatenate([h, skips.pop()], axis=-1)
      h = block(dim, f"up_{i}_block_0")(h, g)
      h = block(dim, f"up_{i}_block_1")(h, g)
      h = ConvTranspose1d(dim, 4, stride=2, padding=1, name=f"up_{i}_upsample")(h)

    d0 = self.down_dims[0]
    h = Conv1dBlock(d0, self.kernel_size, self.n_groups, name="final_block")(h)
    return Conv1d(da, 1, name="final_conv")(h)


# Presets (docs/method.md §3.1, §3.2).
DP_C_MIMICGEN = dict(down_dims=(512, 1024, 2048), kernel_size=5, n_groups=8,
                     diffusion_step_embed_dim=128, cond_predict_scale=True)
DP_C_DROID = dict(down_dims=(256, 512, 1024), kernel_size=5, n_groups=8,
                  diffusion_step_embed_dim=256, cond_predict_scale=True)
