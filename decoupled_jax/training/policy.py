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


COMPUTE_DTYPES = ("float32", "bfloat16")


def cast_floating(tree, dtype):
  """Floating leaves to `dtype` (uint8 images, integer and key leaves untouched)."""
  return jax.tree.map(
      lambda x: x.astype(dtype) if jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating) else x,
      tree)


class Policy(nn.Module):
  """`compute_dtype`: the dtype of the forward pass (matmuls, convolutions, activations).
  Parameters, optimizer state, the heads' schedule arithmetic and the loss stay float32:
  the float32 parameters are cast on the way in and the model output cast back
  (mixed precision; docs/pods.md). 'float32' leaves everything as is."""
  encoder: nn.Module
  backbone: nn.Module
  compute_dtype: str = "float32"

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


def encode(policy: Policy, params, obs, *, train: bool, rngs=None):
  """Observation features (B, To, Dc) in the policy's compute dtype."""
  if policy.compute_dtype != "float32":
    params, obs = cast_floating(params, policy.compute_dtype), cast_floating(obs, policy.compute_dtype)
  return policy.apply({"params": params}, obs, train=train, method=Policy.encode,
                      rngs=rngs or {})


def make_denoise_fn(policy: Policy, params, cond, *, train: bool, rng=None) -> Callable:
  """A head-facing closure x_t, t -> float32 model output. When the head replicates the batch
  (several noise samples per element, replicas adjacent as `jnp.repeat` lays them out), the
  condition is repeated the same way."""
  rngs = {"dropout": rng} if (train and rng is not None) else {}
  dtype = policy.compute_dtype
  if dtype != "float32":
    params = cast_floating(params, dtype)

  def denoise_fn(x_t, t):
    c = cond
    if x_t.shape[0] != cond.shape[0]:
      c = jnp.repeat(cond, x_t.shape[0] // cond.shape[0], axis=0)
    if dtype != "float32":
      x_t, t, c = x_t.astype(dtype), jnp.asarray(t).astype(dtype), c.astype(dtype)
    out = policy.apply({"params": params}, x_t, t, c, train=train, method=Policy.denoise,
                       rngs=rngs)
    return out.astype(jnp.float32)

  return denoise_fn


def make_sample_fn(policy: Policy, head: Any, action_shape) -> Callable:
  """Returns sample(params, obs, rng) -> normalised action chunks (B, H, Da); jit it."""

  def sample(params, obs, rng):
    cond = encode(policy, params, obs, train=False)
    denoise_fn = make_denoise_fn(policy, params, cond, train=False)
    return head.sample(denoise_fn, rng, (cond.shape[0],) + tuple(action_shape))

  return sample


def policy_from_config(config, image_keys=(), lowdim_keys=()) -> Policy:
  """The policy a config describes (`config.backbone`, observation keys); the one place a
  policy is built, for training, evaluation, export and serving alike."""
  from decoupled_jax import backbones
  from decoupled_jax.encoders import ObservationEncoder
  # `config.encoder` (camera encoders) is absent from stage-1 configs and from checkpoints
  # written before it existed: the defaults are the paper's encoder.
  enc = dict(config.get("encoder") or {})
  if "stage_widths" in enc:
    enc["stage_widths"] = tuple(int(w) for w in enc["stage_widths"])
  encoder = ObservationEncoder(image_keys=tuple(image_keys), lowdim_keys=tuple(lowdim_keys),
                               compute_dtype=config.compute_dtype, **enc)
  backbone = backbones.make_backbone(config.backbone.name, **dict(config.backbone.kwargs))
  return Policy(encoder=encoder, backbone=backbone, compute_dtype=config.compute_dtype)
