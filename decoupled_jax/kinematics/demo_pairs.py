"""Stage-1 (joint, pose) pairs from recorded demonstrations: the paper's actual source (§1.1).

Input: a robomimic/MimicGen-layout HDF5 file
  data/demo_N/obs/robot0_joint_pos  (T, 7)
  data/demo_N/obs/robot0_eef_pos    (T, 3)   world frame (robosuite `robot0_eef_pos`)
  data/demo_N/obs/robot0_eef_quat   (T, 4)   xyzw (robosuite `robot0_eef_quat`)
  data/demo_N/actions               (T, 7)   the last column is the gripper command (+-1)
Output: `EpisodeData(fields={'cond': (N, Dc), 'target': (N, 10)}, episode_ends)` with
  target = [eef_pos(3), rot6d(R)(6), gripper_cmd(1)], R from `robot0_eef_quat` read as **xyzw**
  (we fix the wxyz misreading of spec §11.3). `frame='grip_site'` (default, the library's action
  frame, same as the FK generator's default) uses R = R(eef_quat) @ HAND_TO_SITE (R_z(-90 deg),
  see `panda.py`); `frame='hand'` keeps the stored body orientation. cond per `signal` (§1.3):
  'jp' = [joint_pos(7), gripper_cmd]
  (8-D), 'eepose' = target (10-D), 'none' = zeros (8-D). The gripper command is taken as stored
  (the last action column), not the finger qpos.

Windows (`window_indices`, `gather_windows`, `DemoPairWindowSampler`): condition and target cover
the same n frames t-n+1..t; indices outside the episode are clamped to its first/last frame.
"""
from __future__ import annotations

import re
from typing import Sequence

import numpy as np

from decoupled_jax.data import rotation
from decoupled_jax.data.episodes import EpisodeData
from decoupled_jax.kinematics import panda

REQUIRED_OBS = ("robot0_joint_pos", "robot0_eef_pos", "robot0_eef_quat")
_SIGNALS = ("jp", "eepose", "none")


def _demo_sort_key(name: str):
  m = re.search(r"(\d+)$", name)
  return (int(m.group(1)) if m else -1, name)


def list_demos(f, filter_key: str | None = None, path: str = "<hdf5>") -> list[str]:
  if "data" not in f:
    raise KeyError(f"{path}: no group 'data' (not a robomimic/MimicGen HDF5 file)")
  if filter_key is not None:
    key = f"mask/{filter_key}"
    if key not in f:
      raise KeyError(f"{path}: filter key '{key}' not found")
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in f[key][()]]
  else:
    names = [n for n in f["data"].keys() if n.startswith("demo")]
  return sorted(names, key=_demo_sort_key)


def pairs_from_arrays(joint_pos, eef_pos, eef_quat_xyzw, gripper_cmd, signal: str = "jp",
                      frame: str = "grip_site"):
  """One episode's arrays -> (cond (T, Dc), target (T, 10)) float32."""
  if signal not in _SIGNALS:
    raise ValueError(f"signal must be one of {_SIGNALS}, got {signal!r}")
  if frame not in ("grip_site", "hand"):
    raise ValueError(f"frame must be 'grip_site' or 'hand', got {frame!r}")
  g = np.asarray(gripper_cmd, np.float64).reshape(-1, 1)
  rot = rotation.quat_xyzw_to_matrix(np.asarray(eef_quat_xyzw, np.float64))
  if frame == "grip_site":
    rot = rot @ panda.hand_to_site_rotation()
  target = np.concatenate([np.asarray(eef_pos, np.float64), rotation.matrix_to_rot6d(rot), g],
                          axis=-1).astype(np.float32)
  if signal == "jp":
    cond = np.concatenate([np.asarray(joint_pos, np.float64), g], axis=-1).astype(np.float32)
  elif signal == "eepose":
    cond = target.copy()
  else:
    cond = np.zeros((len(target), 8), np.float32)
  return cond, target


def load_demo_pairs(path, signal: str = "jp", demos: Sequence[str] | None = None,
                    filter_key: str | None = None, max_demos: int | None = None,
                    frame: str = "grip_site") -> EpisodeData:
  """Reads every demo (or `demos`, or those of `mask/<filter_key>`), in demo_N numeric order."""
  import h5py
  path = str(path)
  conds, targets, ends, names = [], [], [], []
  with h5py.File(path, "r") as f:
    names = list(demos) if demos is not None else list_demos(f, filter_key, path)
    if max_demos is not None:
      names = names[:max_demos]
    if not names:
      raise ValueError(f"{path}: no demos found")
    total = 0
    for name in names:
      where = f"{path}: data/{name}"
      if f"data/{name}" not in f:
        raise KeyError(f"{where}: demo not found")
      grp = f[f"data/{name}"]
      for k in REQUIRED_OBS:
        if f"obs/{k}" not in grp:
          raise KeyError(f"{where}/obs/{k}: missing key (needed for stage-1 pairs)")
      if "actions" not in grp:
        raise KeyError(f"{where}/actions: missing key (gripper command = actions[:, -1])")
      jp = grp["obs/robot0_joint_pos"][()]
      pos = grp["obs/robot0_eef_pos"][()]
      quat = grp["obs/robot0_eef_quat"][()]
      act = grp["actions"][()]
      shapes = {"obs/robot0_joint_pos": (jp, 7), "obs/robot0_eef_pos": (pos, 3),
                "obs/robot0_eef_quat": (quat, 4)}
      for k, (a, d) in shapes.items():
        if a.ndim != 2 or a.shape[1] != d:
          raise ValueError(f"{where}/{k}: expected shape (T, {d}), got {a.shape}")
      lens = {len(jp), len(pos), len(quat), len(act)}
      if len(lens) != 1:
        raise ValueError(f"{where}: obs/actions lengths differ: joint_pos {len(jp)}, eef_pos "
                         f"{len(pos)}, eef_quat {len(quat)}, actions {len(act)}")
      if len(jp) == 0:
        raise ValueError(f"{where}: empty demo")
      c, t = pairs_from_arrays(jp, pos, quat, act[:, -1], signal, frame)
      conds.append(c)
      targets.append(t)
      total += len(c)
      ends.append(total)
  return EpisodeData({"cond": np.concatenate(conds), "target": np.concatenate(targets)},
                     np.asarray(ends), source=path,
                     attrs={"demos": tuple(names), "signal": signal, "frame": frame})


def window_indices(episode_ends, horizon: int, end_frames=None) -> np.ndarray:
  """(M, horizon) global frame indices of the windows ending at `end_frames` (default: every
  frame), i.e. frames t-horizon+1..t clamped to the episode of t."""
  episode_ends = np.asarray(episode_ends, np.int64)
  starts = np.concatenate([[0], episode_ends[:-1]])
  t = np.arange(episode_ends[-1]) if end_frames is None else np.asarray(end_frames, np.int64)
  ep = np.searchsorted(episode_ends, t, side="right")
  idx = t[:, None] + np.arange(-horizon + 1, 1)[None, :]
  return np.clip(idx, starts[ep][:, None], episode_ends[ep][:, None] - 1)


def gather_windows(data: EpisodeData, horizon: int, end_frames=None):
  """cond (M, horizon, Dc), target (M, horizon, 10) for windows ending at `end_frames`."""
  idx = window_indices(data.episode_ends, horizon, end_frames)
  return data.fields["cond"][idx], data.fields["target"][idx]


class DemoPairWindowSampler:
  """Uniform random windows over all frames (each frame is the end t of one window).

  Numpy: `sample(np_rng, batch_size)`. On device: `device_arrays()` gives (cond, target,
  window_start, window_end) so `sample_jax(rng, arrays, batch_size)` can run inside jit.
  """

  def __init__(self, data: EpisodeData, horizon: int):
    self.data, self.horizon = data, int(horizon)
    n = data.num_frames
    starts = np.concatenate([[0], data.episode_ends[:-1]])
    ep = np.searchsorted(data.episode_ends, np.arange(n), side="right")
    self._lo = starts[ep]                  # first frame of each frame's episode
    self._hi = data.episode_ends[ep] - 1   # last frame

  def __len__(self) -> int:
    return self.data.num_frames

  def sample(self, rng: np.random.Generator, batch_size: int):
    t = rng.integers(0, self.data.num_frames, size=batch_size)
    return gather_windows(self.data, self.horizon, t)

  def device_arrays(self):
    import jax.numpy as jnp
    return (jnp.asarray(self.data.fields["cond"]), jnp.asarray(self.data.fields["target"]),
            jnp.asarray(self._lo, jnp.int32), jnp.asarray(self._hi, jnp.int32))

  def sample_jax(self, rng, arrays, batch_size: int):
    import jax
    import jax.numpy as jnp
    cond, target, lo, hi = arrays
    t = jax.random.randint(rng, (batch_size,), 0, cond.shape[0])
    idx = t[:, None] + jnp.arange(-self.horizon + 1, 1)[None, :]
    idx = jnp.clip(idx, lo[t][:, None], hi[t][:, None])
    return cond[idx], target[idx]
