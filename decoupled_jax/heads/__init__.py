"""Generative heads: diffusion (DDPM / DDIM, docs/method.md §5) and rectified flow (optional).

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

__all__ = ["DiffusionHead", "FlowHead", "make_head", "head_defaults", "typed_head_config",
           "merge_head_config", "HeadConfigError", "HEAD_TYPES", "diffusion", "flow",
           "DiffusionSchedule", "make_schedule"]


class HeadConfigError(ValueError):
  """A bad head config value; `field` is its dotted path inside the head section
  ('type', 'diffusion.sampler', 'flow.num_steps', ...)."""

  def __init__(self, field: str, msg: str):
    super().__init__(f"{field}: {msg}")
    self.field, self.msg = field, msg


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
      raise HeadConfigError("sampler", f"must be 'ddpm' or 'ddim', got {self.sampler!r}")
    if self.beta_schedule not in diffusion.BETA_SCHEDULES:
      raise HeadConfigError("beta_schedule", f"unknown beta_schedule {self.beta_schedule!r} "
                            f"(one of {tuple(diffusion.BETA_SCHEDULES)})")
    if self.prediction_type not in diffusion.PREDICTION_TYPES:
      raise HeadConfigError("prediction_type", f"unknown prediction_type "
                            f"{self.prediction_type!r} (one of "
                            f"{tuple(diffusion.PREDICTION_TYPES)})")
    if self.num_noise_samples < 1:
      raise HeadConfigError("num_noise_samples", f"must be >= 1, got {self.num_noise_samples}")
    if self.num_train_steps < 1:
      raise HeadConfigError("num_train_steps", f"must be >= 1, got {self.num_train_steps}")
    if not 1 <= self.inference_steps <= self.num_train_steps:
      raise HeadConfigError("num_inference_steps", f"{self.inference_steps} must be in [1, "
                            f"num_train_steps={self.num_train_steps}]")

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
      raise HeadConfigError("num_steps", f"must be >= 1, got {self.num_steps}")
    if self.num_noise_samples < 1:
      raise HeadConfigError("num_noise_samples", f"must be >= 1, got {self.num_noise_samples}")

  def loss(self, denoise_fn, x0: jax.Array, rng: jax.Array) -> jax.Array:
    return flow.loss(denoise_fn, x0, rng, time_scale=self.time_scale,
                     num_noise_samples=self.num_noise_samples)

  def sample(self, denoise_fn, rng: jax.Array, shape) -> jax.Array:
    return flow.sample(denoise_fn, rng, shape, num_steps=self.num_steps,
                       time_scale=self.time_scale, clip_sample=self.clip_sample,
                       clip_range=self.clip_range)


# A head config section is typed: `type` picks the head, and each head has its own section
# whose keys are exactly its dataclass's fields (the one home of their defaults):
#   head.type = 'diffusion' | 'flow'
#   head.diffusion.{num_train_steps, beta_schedule, ..., sampler, num_inference_steps, ...}
#   head.flow.{num_steps, time_scale, clip_sample, clip_range, num_noise_samples}
HEAD_TYPES = ("diffusion", "flow")
_HEAD_CLASSES = {"diffusion": DiffusionHead, "flow": FlowHead}


def head_defaults() -> dict:
  """Every head config key with its default, in the typed form (`config_lib.head_config`
  reads it): the dataclasses above are the one home of these defaults."""
  out: dict = {"type": "diffusion"}
  for kind, cls in _HEAD_CLASSES.items():
    out[kind] = {f.name: f.default for f in dataclasses.fields(cls)}
  return out


def _mapping(value: Any, field: str) -> dict:
  if hasattr(value, "to_dict"):
    value = value.to_dict()
  if not isinstance(value, Mapping):
    raise HeadConfigError(field, f"must be a mapping, got {type(value).__name__}")
  return dict(value)


def typed_head_config(config: Any) -> dict:
  """The typed form `{'type', 'diffusion': {...}, 'flow': {...}}` of a head section (a fresh
  dict of plain dicts; keys absent from `config` stay absent, `type` included).

  Takes the typed form, or the flat one that checkpoint metas, shipped experts and exports
  written before the typed sections carry: `type` + DiffusionHead's fields + `flow_num_steps`,
  `time_scale`, `flow_clip_sample`, with `clip_range` and `num_noise_samples` shared by both
  heads (so they go to both sections). A key neither form has raises HeadConfigError naming it
  (keys inside the sections are checked by `make_head`)."""
  d = _mapping(config, "head")
  out = {"type": d.pop("type")} if "type" in d else {}
  if any(k in d for k in HEAD_TYPES):   # typed
    for k in d:
      if k not in HEAD_TYPES:
        raise HeadConfigError(k, f"unknown head key (a head section holds 'type' and the "
                              f"sections {HEAD_TYPES})")
    out.update({k: _mapping(d.get(k, {}), k) for k in HEAD_TYPES})
    return out
  # flat (before the typed sections)
  out.update(diffusion={}, flow={})
  diffusion_keys = {f.name for f in dataclasses.fields(DiffusionHead)}
  for k, v in d.items():
    if k == "flow_num_steps":
      out["flow"]["num_steps"] = v
    elif k == "flow_clip_sample":
      out["flow"]["clip_sample"] = v
    elif k == "time_scale":
      out["flow"]["time_scale"] = v
    elif k in diffusion_keys:
      out["diffusion"][k] = v
      if k in ("clip_range", "num_noise_samples"):
        out["flow"][k] = v
    else:
      raise HeadConfigError(k, f"unknown head key (a head section holds 'type' and the "
                            f"sections {HEAD_TYPES})")
  return out


def merge_head_config(config: Any, overrides: Optional[Any] = None) -> dict:
  """`typed_head_config(config)` with `overrides` (typed, e.g. `{'diffusion': {'sampler':
  'ddim'}, 'flow': {'num_steps': 10}}`, or old flat keys) applied section by section."""
  out = typed_head_config(config)
  if overrides:
    over = typed_head_config(overrides)
    if "type" in over:
      out["type"] = over["type"]
    for k in HEAD_TYPES:
      out[k].update(over[k])
  return out


def make_head(config: Any):
  """A head from a head config section (ConfigDict or mapping), typed or old flat (see
  `typed_head_config`); missing keys take the dataclass defaults. Unknown keys and bad values
  raise HeadConfigError (a ValueError) naming the field, e.g. 'diffusion.sampler: ...'.

  `type`: 'diffusion' (DDPM/DDIM, docs/method.md §5) or 'flow' (rectified flow); the
  `diffusion` section holds DiffusionHead's fields, the `flow` section FlowHead's. Only the
  section of `type` is built (the other's keys must still be fields of its head).
  """
  cfg = typed_head_config(config)
  kind = cfg.get("type", "diffusion")
  if not isinstance(kind, str) or kind not in HEAD_TYPES:
    raise HeadConfigError("type", f"must be one of {HEAD_TYPES}, got {kind!r}")
  for name, cls in _HEAD_CLASSES.items():
    fields = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(cfg[name]) - set(fields))
    if unknown:
      raise HeadConfigError(f"{name}.{unknown[0]}", f"not a field of {cls.__name__} "
                            f"(fields: {fields})")
  try:
    return _HEAD_CLASSES[kind](**cfg[kind])
  except HeadConfigError as e:
    raise HeadConfigError(f"{kind}.{e.field}", e.msg) from None
