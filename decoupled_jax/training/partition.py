"""What is frozen: declared by *path*, never by shape (docs/method.md §2.1).

A policy's params are a nested dict `{'encoder': ..., 'backbone': ...}`. Leaves are addressed
by their '/'-joined path (e.g. 'backbone/block_3/cond_film/kernel'). Stage 2 ("decoupled")
freezes every backbone leaf outside the conditioning pathway, which each backbone declares
(`backbones.base.ActionExpert.CONDITIONING_PATTERNS`). Normal training freezes nothing.
Where weights come from is a separate concern (`training/weight_loaders.py`).
"""
from __future__ import annotations

import dataclasses
from typing import Mapping

import flax.traverse_util as traverse_util

from decoupled_jax.backbones.paths import matches_any

FlatParams = dict[str, object]

BACKBONE = "backbone"
FREEZE_MODES = ("none", "backbone")


def flatten(tree: Mapping) -> FlatParams:
  return traverse_util.flatten_dict(dict(tree), sep="/")


def unflatten(flat: Mapping[str, object]) -> dict:
  return traverse_util.unflatten_dict(dict(flat), sep="/")


@dataclasses.dataclass(frozen=True)
class FreezeRule:
  """mode 'none' (all train) or 'backbone' (backbone leaves outside `conditioning_patterns`
  are frozen). `also_frozen`: exact full paths frozen in addition (e.g. the random-frozen
  control's conditioning leaves whose shape matches stage 1). `extra_frozen` /
  `extra_trainable`: regexes over full paths from the config, applied last (trainable wins)."""
  mode: str = "none"
  conditioning_patterns: tuple[str, ...] = ()
  also_frozen: frozenset = frozenset()
  extra_frozen: tuple[str, ...] = ()
  extra_trainable: tuple[str, ...] = ()

  def __post_init__(self):
    if self.mode not in FREEZE_MODES:
      raise ValueError(f"freeze mode must be one of {FREEZE_MODES}, got {self.mode!r}")

  def is_frozen(self, path: str) -> bool:
    top, _, rel = path.partition("/")
    frozen = (self.mode == "backbone" and top == BACKBONE
              and not matches_any(rel, self.conditioning_patterns))
    frozen = frozen or path in self.also_frozen or matches_any(path, self.extra_frozen)
    return frozen and not matches_any(path, self.extra_trainable)

  def frozen_paths(self, params: Mapping) -> frozenset:
    return frozenset(p for p in flatten(params) if self.is_frozen(p))


def split(params: Mapping, frozen: frozenset) -> tuple[FlatParams, FlatParams]:
  """Splits nested params into flat (trainable, frozen) dicts keyed by path."""
  flat = flatten(params)
  trainable = {k: v for k, v in flat.items() if k not in frozen}
  frozen_part = {k: v for k, v in flat.items() if k in frozen}
  return trainable, frozen_part


def merge(*flats: Mapping[str, object]) -> dict:
  out = {}
  for f in flats:
    out.update(f)
  return unflatten(out)
