"""Generative heads: diffusion (DDPM / DDIM, spec §5) and rectified flow (optional).

Everything is a pure function of ``denoise_fn(x_t, t) -> (B, H, Da)``, a closure that
carries params / cond / rngs; ``t`` is a float32 array of shape ``(B,)`` (diffusion step
0..T-1, or flow time · time_scale).

The head objects are frozen, hashable dataclasses of static hyper-parameters (no arrays),
so they can be closed over or passed as static arguments of ``jax.jit``.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional

import jax

from decoupled_jax.heads import diffusion, flow
from decoupled_jax.heads.diffusion import DiffusionSchedule, make_schedule

__all__ = ["DiffusionHead", "FlowHead", "make_head", "diffusion", "flow", "DiffusionSchedule",
           "make_schedule"]


@dataclasses.dataclass(frozen=True)
class DiffusionHead:
  """ε-prediction diffusion head (diffusers DDPM fixed_small / DDIM η, "leading" spacing).

  ``num_inference_steps=None`` means ``num_train_steps`` for DDPM and 10 for DDIM.
  """
  num_train_steps: int = 100
  beta_schedule: str = "squaredcos_cap_v2"
  beta_start: float = 1e-4
  beta_end: float = 0.02
  sampler: str = "ddpm"
  num_inference_steps: Optional[int] = None
  clip_sample: bool = True
  clip_range: float = 1.0
  num_noise_samples: int = 1
  prediction_type: str = "epsilon"
  eta: float = 0.0
  set_alpha_to_one: bool = True
  steps_offset: int = 0

  def __post_init__(self):
    if self.sampler not in ("ddpm", "ddim"):
      raise ValueError(f"sampler must be 'ddpm' or 'ddim', got {self.sampler!r}")
    if self.beta_schedule not in diffusion.BETA_SCHEDULES:
      raise ValueError(f"unknown beta_schedule {self.beta_schedule!r}")
    if self.prediction_type not in diffusion.PREDICTION_TYPES:
      raise ValueError(f"unknown prediction_type {self.prediction_type!r}")
    if self.num_noise_samples < 1:
      raise ValueError("num_noise_samples must be >= 1")
    diffusion.inference_timesteps(self.num_train_steps, self.inference_steps)  # validates

  @property
  def inference_steps(self) -> int:
    if self.num_inference_steps is not None:
      return int(self.num_inference_steps)
    return self.num_train_steps if self.sampler == "ddpm" else 10

  @property
  def schedule(self) -> DiffusionSchedule:
    return make_schedule(self.num_train_steps, self.beta_schedule, self.beta_start,
                         self.beta_end)

  def loss(self, denoise_fn, x0: jax.Array, rng: jax.Array) -> jax.Array:
    return diffusion.loss(denoise_fn, self.schedule, x0, rng,
                          num_noise_samples=self.num_noise_samples,
                          prediction_type=self.prediction_type)

  def sample(self, denoise_fn, rng: jax.Array, shape) -> jax.Array:
    if self.sampler == "ddpm":
      return diffusion.sample_ddpm(denoise_fn, self.schedule, rng, shape,
                                   clip_sample=self.clip_sample, clip_range=self.clip_range,
                                   num_inference_steps=self.inference_steps,
                                   prediction_type=self.prediction_type)
    return diffusion.sample_ddim(denoise_fn, self.schedule, rng, shape,
                                 num_inference_steps=self.inference_steps, eta=self.eta,
                                 clip_sample=self.clip_sample, clip_range=self.clip_range,
                                 set_alpha_to_one=self.set_alpha_to_one,
                                 steps_offset=self.steps_offset,
                                 prediction_type=self.prediction_type)


@dataclasses.dataclass(frozen=True)
class FlowHead:
  """Rectified-flow head (openpi convention; not in the paper, see ``flow``)."""
  num_steps: int = 10
  time_scale: float = 100.0
  clip_sample: bool = False
  clip_range: float = 1.0
  num_noise_samples: int = 1

  def __post_init__(self):
    if self.num_steps < 1:
      raise ValueError("num_steps must be >= 1")
    if self.num_noise_samples < 1:
      raise ValueError("num_noise_samples must be >= 1")

  def loss(self, denoise_fn, x0: jax.Array, rng: jax.Array) -> jax.Array:
    return flow.loss(denoise_fn, x0, rng, time_scale=self.time_scale,
                     num_noise_samples=self.num_noise_samples)

  def sample(self, denoise_fn, rng: jax.Array, shape) -> jax.Array:
    return flow.sample(denoise_fn, rng, shape, num_steps=self.num_steps,
                       time_scale=self.time_scale, clip_sample=self.clip_sample,
                       clip_range=self.clip_range)


_COMMON_KEYS = {"type", "num_noise_samples", "clip_range"}
_DIFFUSION_KEYS = {"num_train_steps", "beta_schedule", "beta_start", "beta_end", "sampler",
                   "num_inference_steps", "clip_sample", "prediction_type", "eta",
                   "set_alpha_to_one", "steps_offset"}
_FLOW_KEYS = {"flow_num_steps", "time_scale", "flow_clip_sample"}


def make_head(config: Any):
  """Build a head from an ``ml_collections.ConfigDict`` or a mapping.

  Fields (all optional except as noted; unknown keys raise ``ValueError``):
    type:                'diffusion' (default) or 'flow'.
    num_noise_samples:   ε replicas per batch element sharing one timestep (spec §4.2
                         ``noise_samples``; 1 for MimicGen, 8 for LIBERO). Default 1.
    clip_range:          clip bound (default 1.0).
  Diffusion only:
    num_train_steps:     T (default 100).
    beta_schedule:       'squaredcos_cap_v2' (default) | 'linear' | 'scaled_linear'.
    beta_start/beta_end: for the linear schedules (default 1e-4 / 0.02).
    sampler:             'ddpm' (MimicGen, default) or 'ddim' (LIBERO).
    num_inference_steps: None → T for DDPM (100), 10 for DDIM.
    clip_sample:         clip x̂0 to [−clip_range, clip_range] in each step (default True).
    prediction_type:     'epsilon' (default) or 'sample'.
    eta, set_alpha_to_one, steps_offset: DDIM options (defaults 0.0, True, 0).
  Flow only:
    flow_num_steps:      Euler steps (default 10).
    time_scale:          the backbone sees t·time_scale (default 100.0).
    flow_clip_sample:    clip the final sample (default False).
  """
  if hasattr(config, "to_dict"):
    config = config.to_dict()
  cfg = dict(config) if isinstance(config, Mapping) else dict(vars(config))
  kind = cfg.get("type", "diffusion")
  allowed = _COMMON_KEYS | _DIFFUSION_KEYS | _FLOW_KEYS
  unknown = set(cfg) - allowed
  if unknown:
    raise ValueError(f"unknown head config keys: {sorted(unknown)}")
  n_noise = int(cfg.get("num_noise_samples", 1))
  clip_range = float(cfg.get("clip_range", 1.0))
  if kind == "diffusion":
    nis = cfg.get("num_inference_steps", None)
    return DiffusionHead(
        num_train_steps=int(cfg.get("num_train_steps", 100)),
        beta_schedule=str(cfg.get("beta_schedule", "squaredcos_cap_v2")),
        beta_start=float(cfg.get("beta_start", 1e-4)),
        beta_end=float(cfg.get("beta_end", 0.02)),
        sampler=str(cfg.get("sampler", "ddpm")),
        num_inference_steps=None if nis is None else int(nis),
        clip_sample=bool(cfg.get("clip_sample", True)),
        clip_range=clip_range,
        num_noise_samples=n_noise,
        prediction_type=str(cfg.get("prediction_type", "epsilon")),
        eta=float(cfg.get("eta", 0.0)),
        set_alpha_to_one=bool(cfg.get("set_alpha_to_one", True)),
        steps_offset=int(cfg.get("steps_offset", 0)),
    )
  if kind == "flow":
    return FlowHead(
        num_steps=int(cfg.get("flow_num_steps", 10)),
        time_scale=float(cfg.get("time_scale", 100.0)),
        clip_sample=bool(cfg.get("flow_clip_sample", False)),
        clip_range=clip_range,
        num_noise_samples=n_noise,
    )
  raise ValueError(f"head type must be 'diffusion' or 'flow', got {kind!r}")
