"""The policy = observation encoder + action expert (backbone), and its sampling function.

Parameters live under two stable top-level names, 'encoder' and 'backbone', which is what
the path-based freezing rule relies on. The generative head is not a module: it is a pure
function that calls `Policy.denoise` through a closure.
"""
from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

ACTION_DIM = 10   # model actions [pos(3), rot6d(6), gripper(1)] (docs/method.md §6)


class Policy(nn.Module):
  encoder: nn.Module
  backbone: nn.Module

  def encode(self, obs, *, train: bool = False):
    return self.encoder(obs, train=train)

  def denoise(self, x, t, cond, *, train: bool = False):
    return self.backbone(x, t, cond, train=train)

  def __call__(self, obs, x, t, *, train: bool = False):
    return self.denoise(x, t, self.encode(obs, train=train), train=train)


def init_policy(policy: Policy, rng, example_obs, action_shape) -> dict:
  """Initialises params from one example observation batch (leading dims (B, To))."""
  batch = jax.tree.leaves(example_obs)[0].shape[0]
  x = jnp.zeros((batch,) + tuple(action_shape), jnp.float32)
  t = jnp.zeros((batch,), jnp.float32)
  variables = policy.init({"params": rng, "dropout": rng, "crop": rng}, example_obs, x, t,
                          train=False)
  return dict(variables["params"])


def make_denoise_fn(policy: Policy, params, cond, *, train: bool, rng=None) -> Callable:
  """A head-facing closure x_t, t -> model output. When the head replicates the batch
  (several noise samples per element, replicas adjacent as `jnp.repeat` lays them out), the
  condition is repeated the same way."""
  rngs = {"dropout": rng} if (train and rng is not None) else {}

  def denoise_fn(x_t, t):
    c = cond
    if x_t.shape[0] != cond.shape[0]:
      c = jnp.repeat(cond, x_t.shape[0] // cond.shape[0], axis=0)
    return policy.apply({"params": params}, x_t, t, c, train=train, method=Policy.denoise,
                        rngs=rngs)

  return denoise_fn


def make_sample_fn(policy: Policy, head: Any, action_shape) -> Callable:
  """Returns sample(params, obs, rng) -> normalised action chunks (B, H, Da); jit it."""

  def sample(params, obs, rng):
    cond = policy.apply({"params": params}, obs, train=False, method=Policy.encode)
    denoise_fn = make_denoise_fn(policy, params, cond, train=False)
    return head.sample(denoise_fn, rng, (cond.shape[0],) + tuple(action_shape))

  return sample


def policy_from_config(config, image_keys=(), lowdim_keys=()) -> Policy:
  """The policy a config describes (`config.backbone`, observation keys); the one place a
  policy is built, for training, evaluation, export and serving alike."""
  from decoupled_jax import backbones
  from decoupled_jax.encoders import ObservationEncoder
  encoder = ObservationEncoder(image_keys=tuple(image_keys), lowdim_keys=tuple(lowdim_keys))
  backbone = backbones.make_backbone(config.backbone.name, **dict(config.backbone.kwargs))
  return Policy(encoder=encoder, backbone=backbone)
