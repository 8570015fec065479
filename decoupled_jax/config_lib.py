"""Building blocks for the ml_collections configs in `configs/` (one get_config per
experiment, big_vision style). Values follow spec §5 per architecture and stage.
"""
from __future__ import annotations

import ml_collections

ConfigDict = ml_collections.ConfigDict

TRANSFORMER_ARCHS = ("dp_t", "dp_t_film", "unified")
ARCHS = ("dp_c", "dp_mlp") + TRANSFORMER_ARCHS
CONDITIONINGS = ("adaln_zero", "adaln", "ada_rms_norm", "film", "additive", "cross_attn",
                 "prefix", "lora_cond")


def parse_arg(arg: str | None, **defaults) -> ConfigDict:
  """'arch=dp_mlp,head=flow,debug' -> ConfigDict; bare words are booleans; types follow defaults."""
  out = ConfigDict(dict(defaults))
  if not arg:
    return out
  for item in arg.split(","):
    item = item.strip()
    if not item:
      continue
    key, eq, value = item.partition("=")
    if key not in defaults:
      raise ValueError(f"unknown config argument {key!r}; known: {sorted(defaults)}")
    if not eq:
      out[key] = True
      continue
    default = defaults[key]
    if isinstance(default, bool):
      out[key] = value.lower() in ("1", "true", "yes", "y")
    elif isinstance(default, int):
      out[key] = int(value)
    elif isinstance(default, float):
      out[key] = float(value)
    else:
      out[key] = value
  return out


def default_horizon(arch: str) -> int:
  return 10 if arch in TRANSFORMER_ARCHS else 16


def backbone_config(arch: str, conditioning: str = "adaln_zero", **overrides) -> ConfigDict:
  if arch not in ARCHS:
    raise ValueError(f"unknown backbone {arch!r}; choose one of {ARCHS}")
  kwargs = dict(overrides)
  if arch == "unified":
    if conditioning not in CONDITIONINGS:
      raise ValueError(f"unknown conditioning {conditioning!r}; choose one of {CONDITIONINGS}")
    kwargs["conditioning"] = conditioning
  return ConfigDict({"name": arch, "kwargs": kwargs})


def head_config(head: str = "diffusion", sampler: str = "ddpm") -> ConfigDict:
  if head not in ("diffusion", "flow"):
    raise ValueError(f"head must be 'diffusion' or 'flow', got {head!r}")
  return ConfigDict({
      "type": head,
      "num_train_steps": 100,
      "beta_schedule": "squaredcos_cap_v2",
      "prediction_type": "epsilon",
      "sampler": sampler,               # 'ddpm' (100 steps, the MimicGen setting) or 'ddim'
      "num_inference_steps": 100 if sampler == "ddpm" else 10,
      "clip_sample": True,
      "num_noise_samples": 1,
      "flow_num_steps": 10,
      "time_scale": 100.0,
  })


def optimizer_config(arch: str, stage: str) -> ConfigDict:
  """AdamW groups, betas and decay per spec §5 (stage: 'pretrain' | 'finetune')."""
  c = ConfigDict({"learning_rate": 1e-4, "eps": 1e-8, "warmup_steps": 500, "schedule": "cosine",
                  "encoder_weight_decay": 1e-6})
  # Which backbone leaves escape decay is the backbone's own NO_WEIGHT_DECAY_PATTERNS;
  # `no_decay_patterns` adds regexes over full paths.
  c.no_decay_patterns = ()
  if arch == "dp_c":
    c.update(b1=0.95, b2=0.999, weight_decay=1e-6)
  elif arch == "dp_mlp":
    betas = (0.9, 0.95) if stage == "pretrain" else (0.95, 0.999)
    c.update(b1=betas[0], b2=betas[1], weight_decay=1e-3)
  else:
    c.update(b1=0.9, b2=0.95, weight_decay=1e-3)
  return c


def ema_config() -> ConfigDict:
  return ConfigDict({"enabled": True, "power": 0.75, "max_decay": 0.9999})


def freeze_config(mode: str = "none", init_from: str = "") -> ConfigDict:
  """mode 'none' = normal training; 'backbone' = stage 2 (decoupled) or, with no
  init_from, the random_frozen control."""
  return ConfigDict({"mode": mode, "init_from": init_from, "copy_conditioning_biases": True,
                     "extra_trainable": (), "extra_frozen": ()})


def debug_backbone_kwargs(arch: str) -> dict:
  """Tiny sizes of each backbone for smoke tests (same code paths, seconds to compile)."""
  if arch == "dp_c":
    return {"down_dims": (16, 32, 64), "diffusion_step_embed_dim": 16}
  if arch == "dp_mlp":
    return {"n_layer": 2, "n_emb": 32}
  return {"n_layer": 2, "n_head": 2, "n_emb": 32}
