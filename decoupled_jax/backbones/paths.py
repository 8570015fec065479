"""Param-path helpers shared by the training code: counting and regex matching over
'/'-joined paths (docs/method.md §2.1, §12). Flattening lives in `training/partition.py`."""
from __future__ import annotations

import re
from typing import Any, Iterable

import jax
import numpy as np

__all__ = ["count_params", "matches_any"]


def count_params(tree: Any) -> int:
  """Number of scalars in a tree of arrays or ``jax.ShapeDtypeStruct``s."""
  return int(sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(tree)))


def matches_any(path: str, patterns: Iterable[str]) -> bool:
  return any(re.search(p, path) for p in patterns)
