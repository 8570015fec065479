"""Observation encoder: per-camera ResNet-18/GN + SpatialSoftmax, low-dim pass-through (docs/method.md §4.1).

Images arrive uint8 (B, To, H, W, 3) straight from the window sampler. On device they are
cropped (random per sample *and* per timestep in training, rng stream 'crop'; center crop
in eval), scaled to [0, 1] and mapped to [-1, 1] (2x - 1), then encoded by one network per
camera (separate weights, module name `rgb_<key>`). The per-step feature is the
concatenation [camera features in `image_keys` order..., low-dim keys in `lowdim_keys`
order...]. Low-dim keys must already be normalised. With no image keys the encoder has no
parameters and simply concatenates the low-dim keys (stage 1 / low-dim policies).
"""
from __future__ import annotations

from typing import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from decoupled_jax.encoders.resnet import RESNET18_STAGE_WIDTHS, ResNet18SpatialSoftmaxEncoder


def _size2(size) -> tuple[int, int]:
  if isinstance(size, int):
    return int(size), int(size)
  h, w = size
  return int(h), int(w)


def check_crop(images, size) -> tuple[int, int]:
  ch, cw = _size2(size)
  h, w = images.shape[-3], images.shape[-2]
  if ch > h or cw > w:
    raise ValueError(f"crop {ch}x{cw} larger than image {h}x{w} (shape {images.shape})")
  return ch, cw


def random_crop(images, rng, size):
  """Independent random crop for every leading index of `images` (..., H, W, C).

  Offsets are uniform over all valid positions (torch/np `randint(0, H - crop + 1)`),
  drawn per element of the flattened leading dims (e.g. per sample and per timestep).
  Uses `lax.dynamic_slice` under `vmap`; dtype is preserved.
  """
  ch, cw = check_crop(images, size)
  lead = images.shape[:-3]
  h, w, c = images.shape[-3:]
  flat = images.reshape((-1, h, w, c))
  n = flat.shape[0]
  k_top, k_left = jax.random.split(rng)
  tops = jax.random.randint(k_top, (n,), 0, h - ch + 1)
  lefts = jax.random.randint(k_left, (n,), 0, w - cw + 1)

  def one(im, t, l):
    return jax.lax.dynamic_slice(im, (t, l, 0), (ch, cw, c))

  out = jax.vmap(one)(flat, tops, lefts)
  return out.reshape(lead + (ch, cw, c))


def center_crop(images, size):
  """Deterministic center crop of (..., H, W, C): top = (H - crop) // 2 (reference adaptor)."""
  ch, cw = check_crop(images, size)
  h, w = images.shape[-3], images.shape[-2]
  top, left = (h - ch) // 2, (w - cw) // 2
  return images[..., top:top + ch, left:left + cw, :]


def images_to_unit_range(images, dtype=jnp.float32):
  """uint8 [0, 255] -> [-1, 1] via [0, 1] then 2x - 1 (float input is taken as [0, 1]),
  computed in float32 and returned in `dtype`."""
  if images.dtype == jnp.uint8:
    x = images.astype(jnp.float32) / 255.0
  else:
    x = images.astype(jnp.float32)
  return (x * 2.0 - 1.0).astype(dtype)


def camera_module_name(key: str) -> str:
  return f"rgb_{key}"


class ObservationEncoder(nn.Module):
  """obs dict of (B, To, ...) arrays -> (B, To, Dc) per-step features.

  Dc = feature_dim * len(image_keys) + sum of the low-dim keys' trailing sizes
  (137 for the MimicGen setup: 64 + 64 + 3 + 4 + 2).
  """
  image_keys: tuple[str, ...] = ()
  lowdim_keys: tuple[str, ...] = ()
  crop_size: int = 76
  feature_dim: int = 64
  num_kp: int = 32
  stage_widths: tuple[int, ...] = RESNET18_STAGE_WIDTHS   # each camera's ResNet-18 trunk
  compute_dtype: str = "float32"   # the features' dtype (mixed precision, training/policy.py)

  @nn.compact
  def __call__(self, obs: Mapping[str, jax.Array], *, train: bool) -> jax.Array:
    keys = tuple(self.image_keys) + tuple(self.lowdim_keys)
    if not keys:
      raise ValueError("ObservationEncoder needs at least one image or low-dim key")
    for k in keys:
      if k not in obs:
        raise KeyError(f"ObservationEncoder: observation key '{k}' missing (got {sorted(obs)})")
    lead = obs[keys[0]].shape[:2]
    feats = []
    for k in self.image_keys:
      img = obs[k]
      if img.ndim != 5 or img.shape[:2] != lead:
        raise ValueError(f"ObservationEncoder: image '{k}' must be (B, To, H, W, C) with "
                         f"(B, To) = {lead}, got {img.shape}")
      if train:
        img = random_crop(img, self.make_rng("crop"), self.crop_size)
      else:
        img = center_crop(img, self.crop_size)
      x = images_to_unit_range(img, self.compute_dtype)
      x = x.reshape((-1,) + x.shape[2:])                 # (B*To, h, w, C)
      f = ResNet18SpatialSoftmaxEncoder(num_kp=self.num_kp, feature_dim=self.feature_dim,
                                        stage_widths=self.stage_widths,
                                        name=camera_module_name(k))(x)
      feats.append(f.reshape(lead + (f.shape[-1],)))
    for k in self.lowdim_keys:
      x = jnp.asarray(obs[k])
      if x.ndim < 3 or x.shape[:2] != lead:
        raise ValueError(f"ObservationEncoder: low-dim '{k}' must be (B, To, D) with "
                         f"(B, To) = {lead}, got {x.shape}")
      feats.append(x.reshape(lead + (-1,)).astype(self.compute_dtype))
    return jnp.concatenate(feats, axis=-1)
