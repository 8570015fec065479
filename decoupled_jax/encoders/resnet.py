"""ResNet-18 (GroupNorm) + SpatialSoftmax image encoder for MimicGen (docs/method.md §4.1).

Layout follows torchvision `resnet18` without avgpool/fc, as used by the reference
`ResNet18Conv`: conv7x7/2 (no bias) -> norm -> ReLU -> maxpool3x3/2 -> 4 stages of two
BasicBlocks (widths 64/128/256/512, first block of stages 2-4 has stride 2 and a 1x1/2
projection shortcut). Every BatchNorm of the reference is a GroupNorm with C/16 groups
(eps 1e-5, weight 1, bias 0). Channels-last (NHWC) throughout.

Inits follow the PyTorch module that owns each layer:
  * ResNet convs: torchvision re-inits with `kaiming_normal_(mode='fan_out', relu)`
    = N(0, 2 / (out_ch * kh * kw)), untruncated.
  * SpatialSoftmax 1x1 conv and the Linear(64 -> 64) projection: PyTorch defaults,
    U(+-1/sqrt(fan_in)) for weight and bias.

Per camera: 11,176,512 (trunk) + 16,416 (keypoint conv) + 4,160 (fc) = 11,197,088 params.
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from decoupled_jax.nn import GroupNorm, initializers as inits

RESNET18_STAGE_WIDTHS = (64, 128, 256, 512)
GN_GROUP_SIZE = 16            # groups = C / 16 (docs/method.md §4.1, §11.12)

# Exact per-camera parameter count of `ResNet18SpatialSoftmaxEncoder()` (docs/method.md: ~11.20 M).
RESNET18_TRUNK_PARAMS = 11_176_512
IMAGE_ENCODER_PARAMS = 11_197_088

_kaiming_normal_fan_out = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def group_norm(channels: int, name: str) -> nn.GroupNorm:
  """GroupNorm replacing a BatchNorm2d of `channels` channels: C/16 groups (at least 1)."""
  return GroupNorm(max(1, channels // GN_GROUP_SIZE), name=name)


def _conv(features: int, kernel: int, stride: int, name: str) -> nn.Conv:
  pad = (kernel - 1) // 2  # torch padding: 3 for 7x7, 1 for 3x3, 0 for 1x1 (symmetric)
  return nn.Conv(features, (kernel, kernel), strides=(stride, stride),
                 padding=((pad, pad), (pad, pad)), use_bias=False,
                 kernel_init=_kaiming_normal_fan_out, name=name)


class BasicBlock(nn.Module):
  features: int
  stride: int = 1

  @nn.compact
  def __call__(self, x):
    residual = x
    y = _conv(self.features, 3, self.stride, "conv1")(x)
    y = nn.relu(group_norm(self.features, "norm1")(y))
    y = _conv(self.features, 3, 1, "conv2")(y)
    y = group_norm(self.features, "norm2")(y)
    if self.stride != 1 or x.shape[-1] != self.features:
      residual = _conv(self.features, 1, self.stride, "downsample_conv")(x)
      residual = group_norm(self.features, "downsample_norm")(residual)
    return nn.relu(y + residual)


class ResNet18Conv(nn.Module):
  """torchvision ResNet-18 trunk (no avgpool/fc), GroupNorm. (B, H, W, C) -> (B, H/32, W/32, 512)."""
  stage_widths: Sequence[int] = RESNET18_STAGE_WIDTHS
  blocks_per_stage: int = 2

  @nn.compact
  def __call__(self, x):
    x = _conv(self.stage_widths[0], 7, 2, "conv1")(x)
    x = nn.relu(group_norm(self.stage_widths[0], "norm1")(x))
    # torch MaxPool2d(3, 2, padding=1): padding acts as -inf.
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    for s, width in enumerate(self.stage_widths):
      for b in range(self.blocks_per_stage):
        stride = 2 if (s > 0 and b == 0) else 1
        x = BasicBlock(width, stride, name=f"layer{s + 1}_{b}")(x)
    return x


def spatial_soft_argmax(features, temperature: float = 1.0):
  """Expected keypoint coordinates of a (B, H, W, K) map -> (B, 2K) as [x0, y0, x1, y1, ...].

  Softmax over the H*W positions of each channel; x runs along width and y along height,
  both on linspace(-1, 1) grids (robomimic SpatialSoftmax, no noise, no variance).
  """
  b, h, w, k = features.shape
  pos_x, pos_y = np.meshgrid(np.linspace(-1.0, 1.0, w), np.linspace(-1.0, 1.0, h))
  pos_x = jnp.asarray(pos_x.reshape(h * w), features.dtype)
  pos_y = jnp.asarray(pos_y.reshape(h * w), features.dtype)
  logits = features.reshape(b, h * w, k) / temperature
  attn = jax.nn.softmax(logits, axis=1)                   # (B, HW, K)
  ex = jnp.einsum("bpk,p->bk", attn, pos_x)
  ey = jnp.einsum("bpk,p->bk", attn, pos_y)
  return jnp.stack([ex, ey], axis=-1).reshape(b, 2 * k)


class SpatialSoftmax(nn.Module):
  """1x1 conv (C -> num_kp, with bias, PyTorch-default init) + spatial soft-argmax -> (B, 2*num_kp)."""
  num_kp: int = 32
  temperature: float = 1.0

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    x = nn.Conv(self.num_kp, (1, 1), use_bias=True, kernel_init=inits.torch_uniform(c),
                bias_init=inits.torch_uniform(c), name="keypoint_conv")(x)
    return spatial_soft_argmax(x, self.temperature)


class ResNet18SpatialSoftmaxEncoder(nn.Module):
  """One camera: images in [-1, 1], (N, H, W, 3) float -> (N, feature_dim).

  ResNet18Conv -> SpatialSoftmax(num_kp) -> Linear(2*num_kp -> feature_dim) -> ReLU
  (the ReLU is the reference ObservationEncoder's `feature_activation`).
  """
  num_kp: int = 32
  feature_dim: int = 64
  # The trunk's widths: the paper's (64, 128, 256, 512) by default; narrower widths keep the
  # same layers and parameter paths (a CPU-sized encoder, configs/libero.py:images).
  stage_widths: Sequence[int] = RESNET18_STAGE_WIDTHS

  @nn.compact
  def __call__(self, x):
    x = ResNet18Conv(stage_widths=self.stage_widths, name="backbone")(x)
    x = SpatialSoftmax(self.num_kp, name="pool")(x)
    x = nn.Dense(self.feature_dim, kernel_init=inits.torch_uniform(2 * self.num_kp),
                 bias_init=inits.torch_uniform(2 * self.num_kp), name="fc")(x)
    return nn.relu(x)
