"""Param-path helpers: '/'-joined paths, counting, and pattern masks (spec §2.1, §12)."""
from __future__ import annotations

import re
from typing import Any, Iterable, Sequence

import jax
import numpy as np

__all__ = ["path_str", "param_paths", "count_params", "matches_any", "split_by_patterns",
           "partition_by_patterns"]


def _key_name(k: Any) -> str:
  for attr in ("key", "name", "idx"):
    if hasattr(k, attr):
      return str(getattr(k, attr))
  return str(k)


def path_str(path: Sequence[Any]) -> str:
  """A jax key path -> 'a/b/kernel'."""
  return "/".join(_key_name(k) for k in path)


def param_paths(tree: Any) -> list[str]:
  """'/'-joined paths of every leaf, in tree order."""
  return [path_str(p) for p, _ in jax.tree_util.tree_leaves_with_path(tree)]


def count_params(tree: Any) -> int:
  """Number of scalars in a tree of arrays or ``jax.ShapeDtypeStruct``s."""
  return int(sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(tree)))


def matches_any(path: str, patterns: Iterable[str]) -> bool:
  return any(re.search(p, path) for p in patterns)


def split_by_patterns(params: Any, patterns: Iterable[str]) -> Any:
  """Bool tree (same structure as ``params``): True where the leaf's path matches a pattern.

  ``params`` is the backbone's own param dict (without the outer ``{'params': ...}``), so
  paths look like 'down_0_block_1/cond_film/kernel'. With a backbone's
  ``CONDITIONING_PATTERNS`` the True leaves are those trained in stage 2.
  """
  patterns = tuple(patterns)
  return jax.tree_util.tree_map_with_path(lambda p, _: matches_any(path_str(p), patterns), params)


def partition_by_patterns(params: Any, patterns: Iterable[str]) -> tuple[dict, dict]:
  """(matching, rest) as flat {path: leaf} dicts; convenient for counting and reports."""
  patterns = tuple(patterns)
  match, rest = {}, {}
  for p, leaf in jax.tree_util.tree_leaves_with_path(params):
    s = path_str(p)
    (match if matches_any(s, patterns) else rest)[s] = leaf
  return match, rest
