"""Limits normaliser (docs/method.md §6): x -> 2 (x - min) / (max - min) - 1, per dimension.

Matches the reference `dp_model.py::_normalize_limits` exactly:
  range = max - min;  range = 2 where range < 1e-7;  scale = 2 / range;
  offset = -1 - scale * min;  y = x * scale + offset;  x = (y - offset) / scale.
For a degenerate dimension this gives y = x - min - 1 (a constant field maps to -1).

Design
  * `FieldStats(min, max, dims)`: `dims=None` normalises the whole field (stats have the
    field's per-frame shape); otherwise `dims` is a tuple of indices into the *last* axis
    (built from a slice, a bool mask or an index list) and min/max have shape
    (..., len(dims)). Dims not selected pass through bit-exactly.
  * `LimitsNormalizer(stats: dict[name, FieldStats])` is a JAX pytree (min/max are
    leaves, dims static), so it can be passed into `jit`. `normalize` / `unnormalize`
    take a flat dict and work on numpy (numpy out) or jax arrays; keys without stats pass
    through untouched.
  * `fit(episodes, {name: dims})` computes min/max from EpisodeData fields; `to_json` /
    `from_json` persist them (saved next to checkpoints as `norm_stats.json`).

The stage-2 scheme (which fields, which stats) is `pipelines/finetune.py: policy_normalizer`;
stage 1's is `pipelines/pretrain.py: stage1_normalizer`.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

RANGE_EPS = 1e-7
DEGENERATE_RANGE = 2.0

# ABCDEFGH (8 MimicGen tasks) end-effector position stats, hard-coded by the reference
# (`dp_defaults.py`: ABCDEFGH_POS_STATS == ABCDEFGH_ACTION_STATS[:3]).
ABCDEFGH_POS_MIN = np.array([-0.5149909853935242, -0.47873401641845703, 0.808495819568634],
                            dtype=np.float32)
ABCDEFGH_POS_MAX = np.array([0.2891242802143097, 0.44041508436203003, 1.2235039472579956],
                            dtype=np.float32)

_FORMAT = "decoupled_jax.limits_normalizer.v1"


def _canonical_dims(dims) -> tuple[int, ...] | None:
  """None | slice | bool mask | int sequence -> None or a sorted tuple of non-negative ints."""
  if dims is None:
    return None
  if isinstance(dims, slice):
    if dims.stop is None or dims.stop < 0 or (dims.start is not None and dims.start < 0):
      raise ValueError(f"dims slice needs explicit non-negative bounds, got {dims}")
    idx = tuple(range(*dims.indices(dims.stop)))
  else:
    arr = np.asarray(dims)
    if arr.dtype == bool:
      idx = tuple(int(i) for i in np.flatnonzero(arr))
    else:
      idx = tuple(int(i) for i in arr.reshape(-1))
  if not idx:
    raise ValueError("dims selects no dimension")
  if any(i < 0 for i in idx) or len(set(idx)) != len(idx):
    raise ValueError(f"dims must be distinct non-negative indices, got {idx}")
  return tuple(sorted(idx))


def _is_jax(*xs) -> bool:
  return any(isinstance(x, jax.Array) for x in xs)


@dataclasses.dataclass(frozen=True)
class FieldStats:
  """min/max of one field; `dims` = last-axis indices that are normalised (None = all)."""
  min: Any
  max: Any
  dims: tuple[int, ...] | None = None

  def __post_init__(self):
    # Leaves may be tracers or placeholders during pytree ops: only canonicalise `dims`.
    object.__setattr__(self, "dims", _canonical_dims(self.dims))

  @classmethod
  def create(cls, min, max, dims=None) -> "FieldStats":
    mn = np.asarray(min, dtype=np.float32)
    mx = np.asarray(max, dtype=np.float32)
    if mn.shape != mx.shape:
      raise ValueError(f"min shape {mn.shape} != max shape {mx.shape}")
    dims = _canonical_dims(dims)
    if dims is not None and (mn.ndim == 0 or mn.shape[-1] != len(dims)):
      raise ValueError(f"stats last axis {mn.shape} must match the {len(dims)} selected dims {dims}")
    return cls(mn, mx, dims)

  def scale_offset(self):
    """(scale, offset) over the stats' own shape, reference formula."""
    xp = jnp if _is_jax(self.min, self.max) else np
    rng = self.max - self.min
    rng = xp.where(rng < RANGE_EPS, DEGENERATE_RANGE, rng)
    scale = 2.0 / rng
    offset = -1.0 - scale * self.min
    return scale, offset


jax.tree_util.register_dataclass(FieldStats, data_fields=["min", "max"], meta_fields=["dims"])


def _fail_shape(name, x, expected):
  raise ValueError(f"LimitsNormalizer: field '{name}' has shape {tuple(x.shape)}, "
                   f"incompatible with its stats ({expected})")


@dataclasses.dataclass(frozen=True)
class LimitsNormalizer:
  stats: dict[str, FieldStats] = dataclasses.field(default_factory=dict)

  # ------------------------------------------------------------------ construction
  @classmethod
  def from_stats(cls, stats: Mapping[str, FieldStats | Mapping[str, Any]]) -> "LimitsNormalizer":
    out = {}
    for k, v in stats.items():
      if isinstance(v, FieldStats):
        out[k] = FieldStats.create(v.min, v.max, v.dims)
      else:
        out[k] = FieldStats.create(v["min"], v["max"], v.get("dims"))
    return cls(out)

  @classmethod
  def fit(cls, source, fields: Mapping[str, Any], *,
          overrides: Mapping[str, FieldStats] | None = None) -> "LimitsNormalizer":
    """min/max over all frames of each field (EpisodeData or a dict of (N, ...) arrays).

    `fields`: name -> dims (None = whole field; a slice / mask / indices on the last axis).
    `overrides`: name -> FieldStats used as-is instead of data stats (hard-coded stats).
    """
    data = getattr(source, "fields", source)
    src = getattr(source, "source", "<data>")
    overrides = dict(overrides or {})
    out = {}
    for name, dims in fields.items():
      if name in overrides:
        continue
      if name not in data:
        raise KeyError(f"LimitsNormalizer.fit: field '{name}' not in {src} (has {sorted(data)})")
      x = np.asarray(data[name])
      if x.ndim < 1 or x.shape[0] == 0:
        raise ValueError(f"LimitsNormalizer.fit: field '{name}' is empty (shape {x.shape})")
      dims = _canonical_dims(dims)
      if dims is not None:
        if x.ndim < 2 or max(dims) >= x.shape[-1]:
          _fail_shape(name, x, f"dims {dims}")
        x = x[..., list(dims)]
      x = x.astype(np.float64)
      out[name] = FieldStats.create(x.min(axis=0), x.max(axis=0), dims)
    for name, st in overrides.items():
      out[name] = FieldStats.create(st.min, st.max, st.dims)
    return cls(out)

  # ------------------------------------------------------------------ access
  @property
  def fields(self) -> tuple[str, ...]:
    return tuple(self.stats)

  def __contains__(self, name) -> bool:
    return name in self.stats

  def _get(self, name) -> FieldStats:
    if name not in self.stats:
      raise KeyError(f"LimitsNormalizer: no stats for field '{name}' (has {sorted(self.stats)})")
    return self.stats[name]

  def _full_scale_offset(self, name, x):
    """Broadcastable (scale, offset) for x, identity on dims that are not selected."""
    st = self._get(name)
    scale, offset = st.scale_offset()
    sshape = tuple(np.shape(st.min))
    xshape = tuple(x.shape)
    if st.dims is None:
      if len(xshape) < len(sshape) or (sshape and xshape[-len(sshape):] != sshape):
        _fail_shape(name, x, f"per-frame shape {sshape}")
      return scale, offset
    if len(xshape) < len(sshape) or max(st.dims) >= xshape[-1] or \
       xshape[len(xshape) - len(sshape):-1] != sshape[:-1]:
      _fail_shape(name, x, f"shape {sshape} on last-axis dims {st.dims}")
    d = xshape[-1]
    proj = np.zeros((len(st.dims), d), np.float32)
    proj[np.arange(len(st.dims)), list(st.dims)] = 1.0
    keep = np.ones(d, np.float32)
    keep[list(st.dims)] = 0.0
    xp = jnp if _is_jax(scale, offset) else np
    # One-hot projection: selected dims get exactly (scale, offset); others exactly (1, 0).
    return xp.matmul(scale, proj) + keep, xp.matmul(offset, proj)

  def normalize_field(self, name: str, x):
    scale, offset = self._full_scale_offset(name, x)
    y = x * scale + offset
    return y

  def unnormalize_field(self, name: str, y):
    scale, offset = self._full_scale_offset(name, y)
    return (y - offset) / scale

  def _apply(self, data, fields, fn):
    names = self.fields if fields is None else tuple(fields)
    for k in names:
      if k not in data:
        raise KeyError(f"LimitsNormalizer: field '{k}' missing from input (has {sorted(data)})")
    out = dict(data)
    for k in names:
      out[k] = fn(k, data[k])
    return out

  def normalize(self, data: Mapping[str, Any], *, fields=None) -> dict:
    """Normalise the listed fields (default: every field with stats, all must be present)."""
    return self._apply(data, fields, self.normalize_field)

  def unnormalize(self, data: Mapping[str, Any], *, fields=None) -> dict:
    return self._apply(data, fields, self.unnormalize_field)

  # ------------------------------------------------------------------ persistence
  def to_dict(self) -> dict:
    return {"format": _FORMAT, "mode": "limits", "fields": {
        k: {"min": np.asarray(st.min, np.float32).tolist(),
            "max": np.asarray(st.max, np.float32).tolist(),
            "dims": None if st.dims is None else list(st.dims)}
        for k, st in self.stats.items()}}

  def to_json(self, path: str | os.PathLike | None = None) -> str:
    text = json.dumps(self.to_dict(), indent=1)
    if path is not None:
      with open(path, "w") as f:
        f.write(text)
    return text

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> "LimitsNormalizer":
    if d.get("format") != _FORMAT:
      raise ValueError(f"not a LimitsNormalizer file (format={d.get('format')!r})")
    return cls.from_stats(d["fields"])

  @classmethod
  def from_json(cls, text_or_path: str | os.PathLike) -> "LimitsNormalizer":
    """Accepts the JSON text itself or a path to a file holding it."""
    s = os.fspath(text_or_path)
    if not s.lstrip().startswith("{"):
      with open(s) as f:
        s = f.read()
    return cls.from_dict(json.loads(s))


jax.tree_util.register_dataclass(LimitsNormalizer, data_fields=["stats"], meta_fields=[])

