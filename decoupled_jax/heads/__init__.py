"""Generative heads: diffusion (DDPM / DDIM, docs/method.md §5) and rectified flow (optional).

Everything is a pure function of ``denoise_fn(x_t, t) -> (B, H, Da)``, a closure that
carries params / cond / rngs; ``t`` is a float32 array of shape ``(B,)`` (diffusion step
0..T-1, or flow time · time_scale).

The head objects are frozen, hashable dataclasses of static hyper-parameters (no arrays),
so they can be closed over or passed as static arguments of ``jax.jit``.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

import jax

from decoupled_jax.heads import diffusion, flow
from decoupled_jax.heads.diffusion import DiffusionSchedule, make_schedule

__all__ = ["DiffusionHead", "FlowHead", "make_head", "head_defaults", "HEAD_TYPES", "diffusion", "flow", "DiffusionSchedule",
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


# Config keys of the flow head that differ from its dataclass field names (the diffusion
# head's own `num_inference_steps`/`clip_sample` keep their names in a shared head section).
_FLOW_CONFIG_NAMES = {"flow_num_steps": "num_steps", "flow_clip_sample": "clip_sample"}
HEAD_TYPES = ("diffusion", "flow")


def head_defaults() -> dict:
  """Every head config key with its default: the dataclasses above are the one home of
  these defaults (`config_lib.head_config` and `make_head` read them from here)."""
  out = {"type": "diffusion"}
  for f in dataclasses.fields(DiffusionHead):
    out[f.name] = f.default
  inverse = {v: k for k, v in _FLOW_CONFIG_NAMES.items()}
  for f in dataclasses.fields(FlowHead):
    out.setdefault(inverse.get(f.name, f.name), f.default)
  return out


def make_head(config: Any):
  """A head from a config section (ConfigDict or mapping) with keys from `head_defaults()`;
  missing keys take the dataclass defaults, unknown keys raise ValueError.

  `type`: 'diffusion' (DDPM/DDIM, docs/method.md §5) or 'flow' (rectified flow). Diffusion
  keys are DiffusionHead's fields; flow keys are `flow_num_steps`, `time_scale`,
  `flow_clip_sample`, plus the shared `num_noise_samples` and `clip_range`.
  """
  if hasattr(config, "to_dict"):
    config = config.to_dict()
  cfg = dict(config)
  kind = cfg.pop("type", "diffusion")
  unknown = set(cfg) - set(head_defaults())
  if unknown:
    raise ValueError(f"unknown head config keys: {sorted(unknown)}")
  if kind == "diffusion":
    names = {f.name for f in dataclasses.fields(DiffusionHead)}
    return DiffusionHead(**{k: v for k, v in cfg.items() if k in names})
  if kind == "flow":
    names = {f.name for f in dataclasses.fields(FlowHead)}
    kw = {_FLOW_CONFIG_NAMES.get(k, k): v for k, v in cfg.items()
          if _FLOW_CONFIG_NAMES.get(k, k) in names and k not in ("clip_sample",
                                                                  "num_inference_steps")}
    return FlowHead(**kw)
  raise ValueError(f"head type must be one of {HEAD_TYPES}, got {kind!r}")
