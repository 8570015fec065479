"""In-memory episode storage: every field of every episode concatenated along time.

This is the one exchange format between data sources (robomimic/MimicGen HDF5 files,
generated demonstrations, stage-1 demo-derived pairs) and the window sampler, in the style
of Diffusion Policy's ReplayBuffer: arrays of shape (N_total, ...) plus `episode_ends`,
the exclusive end index of each episode.
"""
from __future__ import annotations

import dataclasses
from typing import Mapping

import numpy as np


@dataclasses.dataclass
class EpisodeData:
  fields: dict[str, np.ndarray]   # name -> (N_total, ...), e.g. 'actions', 'robot0_eef_pos', 'agentview_image'
  episode_ends: np.ndarray        # (E,) int64, strictly increasing, last == N_total
  source: str = "<memory>"        # file the data came from, for error messages
  attrs: Mapping[str, object] = dataclasses.field(default_factory=dict)  # e.g. env_args

  def __post_init__(self):
    self.episode_ends = np.asarray(self.episode_ends, dtype=np.int64)
    if self.episode_ends.ndim != 1 or len(self.episode_ends) == 0:
      raise ValueError(f"{self.source}: episode_ends must be a non-empty 1-D array")
    if np.any(np.diff(self.episode_ends) <= 0) or self.episode_ends[0] <= 0:
      raise ValueError(f"{self.source}: episode_ends must be strictly increasing and positive")
    n = int(self.episode_ends[-1])
    for k, v in self.fields.items():
      if v.shape[0] != n:
        raise ValueError(
            f"{self.source}: field '{k}' has {v.shape[0]} frames, expected {n} (episode_ends[-1])")

  @property
  def num_episodes(self) -> int:
    return len(self.episode_ends)

  @property
  def num_frames(self) -> int:
    return int(self.episode_ends[-1])

  @property
  def episode_starts(self) -> np.ndarray:
    return np.concatenate([[0], self.episode_ends[:-1]])

  def episode(self, i: int) -> dict[str, np.ndarray]:
    s, e = int(self.episode_starts[i]), int(self.episode_ends[i])
    return {k: v[s:e] for k, v in self.fields.items()}

  def select_episodes(self, idx) -> "EpisodeData":
    idx = np.asarray(idx, dtype=np.int64)
    starts, ends = self.episode_starts[idx], self.episode_ends[idx]
    frames = np.concatenate([np.arange(s, e) for s, e in zip(starts, ends)])
    return EpisodeData({k: v[frames] for k, v in self.fields.items()},
                       np.cumsum(ends - starts), self.source, dict(self.attrs))


def mask_indices(masks, names) -> dict[str, list[int]]:
  """robomimic-style masks (name -> member demo names) as episode indices of `names`; a mask
  naming a demo that is not there is an error (the exporters' shared rule)."""
  index = {n: i for i, n in enumerate(names)}
  out = {}
  for k, members in dict(masks or {}).items():
    missing = [m for m in members if m not in index]
    if missing:
      raise ValueError(f"mask {k!r} names demos not in the episodes: {missing[:5]}")
    out[k] = [index[m] for m in members]
  return out
