"""Stage-1 (joint, pose) pairs from recorded demonstrations: the paper's actual source (§1.1).

Input: a robomimic/MimicGen-layout HDF5 file (or any dataset `load_episodes` reads)
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

Any format `decoupled_jax.data.sources.load_episodes` reads works (`format=`, `key_map=`), e.g.
LeRobot `observation.joint_position` / `observation.eePose` of the paper's stage-1 datasets.

Windows (`window_indices`, `gather_windows`): condition and target cover
the same n frames t-n+1..t; indices outside the episode are clamped to its first/last frame
(the one stage-1 window implementation; `data/windows.py` is the stage-2 sampler).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from decoupled_jax.data import rotation
from decoupled_jax.data.episodes import EpisodeData
from decoupled_jax.data.robomimic_hdf5 import DatasetError
from decoupled_jax.kinematics import SIGNALS, panda

REQUIRED_OBS = ("robot0_joint_pos", "robot0_eef_pos", "robot0_eef_quat")
_DIMS = {"robot0_joint_pos": 7, "robot0_eef_pos": 3, "robot0_eef_quat": 4}


def pairs_from_arrays(joint_pos, eef_pos, eef_quat_xyzw, gripper_cmd, signal: str = "jp",
                      frame: str = "grip_site"):
  """One episode's arrays -> (cond (T, Dc), target (T, 10)) float32."""
  if signal not in SIGNALS or signal == "jv":
    raise ValueError(f"signal must be one of {tuple(s for s in SIGNALS if s != 'jv')} for "
                     f"demonstration pairs ('jv' is generated data's), got {signal!r}")
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
                    frame: str = "grip_site", *, format: str = "robomimic",  # noqa: A002
                    key_map: Mapping[str, str] | None = None) -> EpisodeData:
  """(cond, target) pairs of every demo (or `demos`, or those of `filter_key`), in numeric order.

  Reads through `decoupled_jax.data.sources.load_episodes` (any format, `key_map` as there),
  without the action-convention check: only observations and the gripper column are used, and
  the gripper command means the same in delta and absolute files. Malformed input raises
  `DatasetError` naming the file, demo and key.
  """
  from decoupled_jax.data.sources import load_episodes
  path = str(path)
  eps = load_episodes(path, REQUIRED_OBS, format=format, key_map=key_map,
                      filter_key=filter_key, action_convention="any")
  names = list(eps.attrs.get("demo_names") or [])
  if demos is not None:
    pos = {n: i for i, n in enumerate(names)}
    missing = [d for d in demos if d not in pos]
    if missing:
      raise DatasetError(f"{path}: data/{missing[0]}: demo not found")
    idx = [pos[d] for d in demos]
    eps, names = eps.select_episodes(idx), list(demos)
  if max_demos is not None:
    eps, names = eps.select_episodes(np.arange(min(max_demos, eps.num_episodes))), names[:max_demos]
  if eps.num_episodes == 0:
    raise DatasetError(f"{path}: no demos found")
  for k, d in _DIMS.items():
    if eps.fields[k].shape[1:] != (d,):
      raise DatasetError(f"{path}: obs/{k}: expected shape (T, {d}), got "
                         f"(T,) + {eps.fields[k].shape[1:]}")
  conds, targets = [], []
  for i in range(eps.num_episodes):
    ep = eps.episode(i)
    c, t = pairs_from_arrays(ep["robot0_joint_pos"], ep["robot0_eef_pos"], ep["robot0_eef_quat"],
                             ep["actions"][:, -1], signal, frame)
    conds.append(c)
    targets.append(t)
  return EpisodeData({"cond": np.concatenate(conds), "target": np.concatenate(targets)},
                     eps.episode_ends.copy(), source=path,
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

