"""Episode-aware, fully vectorised window sampler over `EpisodeData` (spec §1.1, §2.3, §5).

Each sample is anchored at a frame t (the *current* observation frame):
  obs frames     t - To + 1 ... t                       (To = n_obs_steps)
  action frames  t - To + 1 ... t - To + H              (action window starts at the first
                                                         observation frame; H = horizon)
Indices outside the anchor's episode are clamped to the episode edge, so edge frames
repeat (LeRobot behaviour). Every frame of an episode is a valid anchor except the last
`drop = H - To - pad_after` frames, with `pad_after = n_action_steps - 1` by default, i.e.
`H - To - Ta + 1` frames are dropped (7 for H=16, To=2, Ta=8; 1 for H=10) -- the
reference `VLADataModule` sampler. (For H=16 the executed actions [To-1, To-1+Ta) then
never need clamping; for H=10 the last anchors' executed actions are clamped, as in the
reference.)

Stage-1 windows (condition and target over the same n frames) are
`kinematics/demo_pairs.py`'s `gather_windows`.

Batches are built by numpy fancy indexing with precomputed (B, T) gather indices
`clip(t + offsets, ep_start, ep_end - 1)`; no per-sample Python loop, dtypes preserved
(images stay uint8).
"""
from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np

from decoupled_jax.data import rotation
from decoupled_jax.data.episodes import EpisodeData


def _as_rng(rng) -> np.random.Generator:
  if isinstance(rng, np.random.Generator):
    return rng
  return np.random.default_rng(rng)


class WindowSampler:
  """Samples {'obs': {key: (B, To, ...)}, 'actions': (B, H, ...)} windows from EpisodeData."""

  def __init__(self, episodes: EpisodeData, *, n_obs_steps: int, horizon: int,
               n_action_steps: int, obs_keys: Sequence[str],
               action_key: str | None = "actions", pad_after: int | None = None,
               drop_last_frames: bool = True):
    if n_obs_steps < 1:
      raise ValueError(f"n_obs_steps must be >= 1, got {n_obs_steps}")
    if horizon is None or n_action_steps is None:
      raise ValueError("WindowSampler needs horizon and n_action_steps")
    if horizon < n_obs_steps:
      raise ValueError(f"horizon ({horizon}) < n_obs_steps ({n_obs_steps})")
    if pad_after is None:
      pad_after = n_action_steps - 1
    self.episodes = episodes
    self.n_obs_steps = int(n_obs_steps)
    self.horizon = int(horizon)
    self.n_action_steps = int(n_action_steps)
    self.obs_keys = tuple(obs_keys)
    self.action_key = action_key
    for k in self.obs_keys + ((action_key,) if action_key is not None else ()):
      if k not in episodes.fields:
        raise KeyError(f"WindowSampler: field '{k}' not in {episodes.source} "
                       f"(has {sorted(episodes.fields)})")
    self.drop = max(0, self.horizon - self.n_obs_steps - int(pad_after)) if drop_last_frames else 0

    starts, ends = episodes.episode_starts, episodes.episode_ends
    lengths = ends - starts
    n_valid = np.maximum(lengths - self.drop, 0)
    self.valid_per_episode = n_valid                       # (E,) anchors per episode
    ep_of = np.repeat(np.arange(len(ends)), n_valid)
    first = np.cumsum(n_valid) - n_valid                   # position of each episode's first anchor
    self.anchors = (starts[ep_of] + np.arange(int(n_valid.sum())) - first[ep_of]).astype(np.int64)
    self.anchor_episode = ep_of.astype(np.int64)
    self._ep_start = starts[ep_of].astype(np.int64)
    self._ep_end = ends[ep_of].astype(np.int64)
    self.obs_offsets = np.arange(-(self.n_obs_steps - 1), 1, dtype=np.int64)
    self.action_offsets = np.arange(self.horizon, dtype=np.int64) - (self.n_obs_steps - 1)

  def __len__(self) -> int:
    return len(self.anchors)

  def num_batches(self, batch_size: int, drop_last: bool = True) -> int:
    n = len(self)
    return n // batch_size if drop_last else -(-n // batch_size)

  def gather_indices(self, positions) -> tuple[np.ndarray, np.ndarray]:
    """Frame indices (B, To) and (B, H) for anchor positions (indices into `self.anchors`)."""
    p = np.asarray(positions, dtype=np.int64)
    t, s, e = self.anchors[p][:, None], self._ep_start[p][:, None], self._ep_end[p][:, None]
    obs_idx = np.clip(t + self.obs_offsets[None], s, e - 1)
    act_idx = np.clip(t + self.action_offsets[None], s, e - 1)
    return obs_idx, act_idx

  def get_batch(self, positions) -> dict:
    obs_idx, act_idx = self.gather_indices(positions)
    f = self.episodes.fields
    batch = {"obs": {k: f[k][obs_idx] for k in self.obs_keys}}
    if self.action_key is not None:
      batch["actions"] = f[self.action_key][act_idx]
    return batch

  def sample(self, rng, batch_size: int) -> dict:
    """A batch of uniformly drawn anchors (with replacement); rng = np Generator or seed."""
    if len(self) == 0:
      raise ValueError(f"WindowSampler: no valid windows in {self.episodes.source}")
    pos = _as_rng(rng).integers(0, len(self), size=batch_size)
    return self.get_batch(pos)

  def iterate_epoch(self, batch_size: int, rng, drop_last: bool = True) -> Iterator[dict]:
    """One pass over all anchors in a random order (plain shuffling)."""
    perm = _as_rng(rng).permutation(len(self))
    for i in range(self.num_batches(batch_size, drop_last)):
      yield self.get_batch(perm[i * batch_size:(i + 1) * batch_size])


def prepare_policy_dataset(episodes: EpisodeData, obs_keys: Sequence[str], *,
                           action_key: str = "actions", convert_actions: bool = True,
                           normalizer=None) -> EpisodeData:
  """Keep `obs_keys` + actions, convert 7-D env actions to 10-D model actions once up-front.

  Low-dim float fields become float32; uint8 image fields are kept as they are (no copy).
  If `normalizer` (a LimitsNormalizer) is given, its fields are normalised here too (all
  of them must be among the kept fields), so batches come out model-ready.
  """
  keep = tuple(dict.fromkeys(tuple(obs_keys) + (action_key,)))
  fields = {}
  for k in keep:
    if k not in episodes.fields:
      raise KeyError(f"prepare_policy_dataset: field '{k}' not in {episodes.source} "
                     f"(has {sorted(episodes.fields)})")
    v = episodes.fields[k]
    fields[k] = v if v.dtype == np.uint8 else np.asarray(v, dtype=np.float32)
  act = np.asarray(episodes.fields[action_key])
  if convert_actions:
    if act.shape[-1] != 7:
      raise ValueError(f"prepare_policy_dataset: '{action_key}' must be 7-D env actions "
                       f"[pos, axis-angle, gripper], got shape {act.shape}")
    fields[action_key] = rotation.env_action_to_model(act.astype(np.float64)).astype(np.float32)
  if normalizer is not None:
    fields = normalizer.normalize(fields)
    fields = {k: (v if v.dtype == np.uint8 else np.asarray(v, dtype=np.float32))
              for k, v in fields.items()}
  return EpisodeData(fields, episodes.episode_ends.copy(), episodes.source, dict(episodes.attrs))
