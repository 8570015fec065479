"""AdamW with the reference's weight-decay groups and LR schedule (docs/method.md §5).

The optimizer only ever sees the *trainable* leaves (a flat path -> array dict), so it holds
no state for frozen leaves. Leaves are sorted into three groups by path: encoder leaves get
`encoder_weight_decay`; backbone leaves matching the backbone's own
`NO_WEIGHT_DECAY_PATTERNS` (regexes over backbone-relative paths: biases, norms, position
embeddings, modulation layers, depending on the architecture) or the config's extra
`no_decay_patterns` (regexes over full paths) get none; the rest get `weight_decay`.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import optax

from decoupled_jax.backbones.paths import matches_any


def lr_schedule(config, total_steps: int) -> optax.Schedule:
  """diffusers 'cosine': linear warm-up from 0, then a half cosine to 0 at total_steps."""
  if config.schedule == "constant":
    return optax.constant_schedule(config.learning_rate)
  if config.schedule != "cosine":
    raise ValueError(f"config.optimizer.schedule must be 'cosine' or 'constant', got {config.schedule!r}")
  warmup = min(int(config.warmup_steps), max(total_steps - 1, 0))
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=config.learning_rate, warmup_steps=warmup,
      decay_steps=max(total_steps, warmup + 1), end_value=0.0)


def decay_group(path: str, config, backbone_no_decay: Sequence[str] = ()) -> str:
  if path.startswith("encoder/"):
    return "encoder"
  rel = path[len("backbone/"):] if path.startswith("backbone/") else None
  if rel is not None and matches_any(rel, backbone_no_decay):
    return "no_decay"
  if matches_any(path, config.no_decay_patterns):
    return "no_decay"
  return "decay"


def make_optimizer(config, trainable: Mapping[str, object], total_steps: int,
                   backbone_no_decay: Sequence[str] = ()):
  """Returns (optax transform over the flat trainable dict, lr schedule)."""
  schedule = lr_schedule(config, total_steps)

  def adamw(wd):
    return optax.adamw(schedule, b1=config.b1, b2=config.b2, eps=config.eps, weight_decay=wd)

  labels = {path: decay_group(path, config, backbone_no_decay) for path in trainable}
  transforms = {"decay": adamw(config.weight_decay),
                "encoder": adamw(config.encoder_weight_decay),
                "no_decay": adamw(0.0)}
  used = set(labels.values())
  tx = optax.multi_transform({k: v for k, v in transforms.items() if k in used}, labels)
  return tx, schedule
