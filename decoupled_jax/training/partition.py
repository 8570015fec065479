"""Which parameters train: freezing is declared by *path*, never by shape.

A policy's params are a nested dict `{'encoder': ..., 'backbone': ...}`. We address leaves
by their '/'-joined path (e.g. 'backbone/block_3/cond_film/kernel'). Stage 2 ("decoupled")
freezes every backbone leaf except the conditioning pathway, which each backbone declares
with `CONDITIONING_PATTERNS` (regexes over paths relative to the backbone). Normal training
freezes nothing. A config can override both sets with extra regexes.
"""
from __future__ import annotations

import re
from typing import Iterable, Mapping, Sequence

import flax.traverse_util as traverse_util

FlatParams = dict[str, object]

BACKBONE = "backbone"
ENCODER = "encoder"


def flatten(tree: Mapping) -> FlatParams:
  return traverse_util.flatten_dict(dict(tree), sep="/")


def unflatten(flat: Mapping[str, object]) -> dict:
  return traverse_util.unflatten_dict(dict(flat), sep="/")


def _matches(path: str, patterns: Iterable[str]) -> bool:
  return any(re.search(p, path) for p in patterns)


def frozen_paths(params: Mapping, *, mode: str, conditioning_patterns: Sequence[str],
                 extra_trainable: Sequence[str] = (), extra_frozen: Sequence[str] = ()) -> frozenset:
  """Returns the set of frozen leaf paths.

  mode: 'none' (normal training: all train) or 'backbone' (stage 2 / random-frozen control:
  backbone leaves outside the conditioning pathway are frozen). `extra_*` regexes are
  matched against full paths and applied last (trainable wins over frozen).
  """
  if mode not in ("none", "backbone"):
    raise ValueError(f"config.freeze.mode must be 'none' or 'backbone', got {mode!r}")
  frozen = set()
  for path in flatten(params):
    top, _, rel = path.partition("/")
    is_frozen = (mode == "backbone" and top == BACKBONE
                 and not _matches(rel, conditioning_patterns))
    if extra_frozen and _matches(path, extra_frozen):
      is_frozen = True
    if extra_trainable and _matches(path, extra_trainable):
      is_frozen = False
    frozen.add(path) if is_frozen else None
  return frozenset(frozen)


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


def copy_by_path(target: Mapping, source: Mapping, *, prefix: str = BACKBONE + "/",
                 skip_patterns: Sequence[str] = (), copy_matching_biases: bool = False,
                 source_name: str = "source checkpoint") -> tuple[dict, list[str]]:
  """Copies every `prefix`-leaf of `source` into `target` by path (stage-1 -> stage-2 load).

  Leaves whose path (relative to prefix) matches `skip_patterns` (the conditioning pathway)
  keep the target's fresh init; with `copy_matching_biases` their biases are still copied
  when shapes agree, reproducing the reference's "smart bias" rule (spec §2.1).

  Raises ValueError naming the first path that is missing or whose shape differs, so a
  stage-1 checkpoint of another architecture fails loudly instead of half-loading.
  """
  tgt, src = flatten(target), flatten(source)
  copied = []
  for path, value in tgt.items():
    if not path.startswith(prefix):
      continue
    rel = path[len(prefix):]
    conditioning = _matches(rel, skip_patterns)
    if conditioning and not (copy_matching_biases and path.endswith("/bias")):
      continue
    if path not in src:
      if conditioning:
        continue
      raise ValueError(
          f"{source_name} has no parameter '{path}' (target shape {tuple(value.shape)}); "
          f"the stage-1 and stage-2 backbones differ. First source paths: "
          f"{sorted(k for k in src if k.startswith(prefix))[:5]}")
    if tuple(src[path].shape) != tuple(value.shape):
      if conditioning:
        continue
      raise ValueError(
          f"shape mismatch at '{path}': {source_name} has {tuple(src[path].shape)}, "
          f"the model expects {tuple(value.shape)}; the backbones differ (check backbone "
          f"name/sizes and horizon between stage 1 and stage 2).")
    tgt[path] = src[path]
    copied.append(path)
  extra = sorted(k for k in src if k.startswith(prefix) and k not in tgt)
  if extra:
    raise ValueError(f"{source_name} has backbone parameter '{extra[0]}' that the model "
                     f"lacks ({len(extra)} in all); the backbones differ.")
  return unflatten(tgt), copied
