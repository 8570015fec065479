"""LIBERO demonstrations (one robomimic-style HDF5 file per task) as one suite's EpisodeData.

Layout (LIBERO's own, as `libero/demos.py` writes it and LIBERO's released files hold):
  <dataset_dir>/<suite>/<task_name>_demo.hdf5
    data.attrs: problem_info (JSON with language_instruction), suite, task_id, ...
    data/demo_N/actions (T, 7)   LIBERO's native DELTA OSC actions [dpos, d-axis-angle, grip]
    data/demo_N/obs/ee_pos (3), ee_ori (3, axis-angle), gripper_states (2), joint_states (7),
                    object_poses (14, ours: privileged), agentview_rgb, eye_in_hand_rgb
The reader returns the policy's keys (`LIBERO_KEY_MAP`), plus `task_onehot`: the instruction
as a one-hot over the suite's 10 instructions (task-id order). A one-hot through the
conditioning's first linear layer is a learned per-instruction embedding: our stand-in for
the paper's frozen DistilBERT (no pretrained text weights can be downloaded here;
docs/libero.md).
"""
from __future__ import annotations

import glob
import json
import os
from typing import Sequence

import numpy as np

from decoupled_jax.data.episodes import EpisodeData
from decoupled_jax.data.robomimic_hdf5 import DatasetError, is_image_key, read_demos

TASK_KEY = "task_onehot"
NUM_TASKS = 10
# policy key -> key under data/demo_N/obs/ of a LIBERO file
LIBERO_KEY_MAP = {"robot0_eef_pos": "ee_pos", "robot0_eef_axis_angle": "ee_ori",
                  "robot0_gripper_qpos": "gripper_states", "robot0_joint_pos": "joint_states",
                  "object_poses": "object_poses", "agentview_image": "agentview_rgb",
                  "robot0_eye_in_hand_image": "eye_in_hand_rgb"}
LOWDIM_KEYS = ("robot0_eef_pos", "robot0_eef_axis_angle", "robot0_gripper_qpos", "object_poses",
               TASK_KEY)
KNOWN_KEYS = tuple(LIBERO_KEY_MAP) + (TASK_KEY,)


def _attr(v):
  return v.decode() if isinstance(v, bytes) else v


def task_files(dataset_dir: str, suite: str) -> dict[int, tuple[str, str]]:
  """task id -> (file, instruction) of every `<dataset_dir>/<suite>/*_demo.hdf5`."""
  import h5py
  out = {}
  d = os.path.join(dataset_dir, suite)
  for path in sorted(glob.glob(os.path.join(d, "*_demo.hdf5"))):
    try:
      with h5py.File(path, "r") as f:
        a = f["data"].attrs
        info = json.loads(_attr(a["problem_info"])) if "problem_info" in a else {}
        instr = _attr(a.get("language_instruction", info.get("language_instruction", "")))
        tid = int(a["task_id"]) if "task_id" in a else None
    except (OSError, KeyError, ValueError) as e:
      raise DatasetError(f"{path}: not a readable LIBERO demo file ({e})") from None
    if tid is None:
      raise DatasetError(f"{path}: data.attrs has no 'task_id'")
    if tid in out:
      raise DatasetError(f"{path}: task_id {tid} also in {out[tid][0]}")
    out[tid] = (path, str(instr))
  return out


def load_suite(dataset_dir: str, suite: str, obs_keys: Sequence[str],
               tasks: Sequence[int] | None = None, num_demos: int = 0) -> EpisodeData:
  """Every (or the first `num_demos`) demo of the suite's `tasks` (default: all present),
  keyed by policy keys, with 7-D delta `actions` and `task_onehot`. attrs: suite,
  instructions (all 10, by task id, '' where absent), tasks, demo_names, action_space."""
  files = task_files(dataset_dir, suite)
  if not files:
    raise DatasetError(f"{os.path.join(dataset_dir, suite)}: no LIBERO demo files "
                       f"(*_demo.hdf5); generate them with experiments/libero_demos.py")
  tasks = sorted(files) if tasks is None else list(tasks)
  missing = [t for t in tasks if t not in files]
  if missing:
    raise DatasetError(f"{os.path.join(dataset_dir, suite)}: no demo file for task id(s) "
                       f"{missing} (have {sorted(files)})")
  bad = [k for k in obs_keys if k not in KNOWN_KEYS]
  if bad:
    raise DatasetError(f"LIBERO data has no policy key(s) {bad}; known: {list(KNOWN_KEYS)}")
  keys = [k for k in obs_keys if k != TASK_KEY]
  specs = {"actions": "actions", **{k: f"obs/{LIBERO_KEY_MAP[k]}" for k in keys}}
  images = [k for k in keys if is_image_key(k)]
  parts, names = [], []
  for t in tasks:
    path = files[t][0]
    import h5py
    with h5py.File(path, "r") as f:
      demos = sorted(f["data"].keys(), key=lambda n: int(n.split("_")[-1]))
    if num_demos:
      demos = demos[:int(num_demos)]
    data = read_demos(path, specs, image_fields=images, action_convention="any", demos=demos)
    onehot = np.zeros((data.num_frames, NUM_TASKS), np.float32)
    onehot[:, t] = 1.0
    data.fields[TASK_KEY] = onehot
    parts.append(data)
    names += [f"task{t}/{n}" for n in data.attrs.get("demo_names", demos)]
  fields = {k: np.concatenate([p.fields[k] for p in parts]) for k in parts[0].fields
            if k == "actions" or k in obs_keys}
  ends = np.cumsum(np.concatenate([np.diff(np.concatenate([[0], p.episode_ends]))
                                   for p in parts]))
  act = fields["actions"]
  if act.ndim != 2 or act.shape[-1] != 7:
    raise DatasetError(f"{dataset_dir}/{suite}: 'actions' have shape {act.shape[1:]} per frame; "
                       f"LIBERO actions are 7-D [dpos, d-axis-angle, gripper]")
  if np.abs(act).max() > 1.0 + 1e-6:
    raise DatasetError(f"{dataset_dir}/{suite}: actions leave [-1, 1] (max |a| = "
                       f"{np.abs(act).max():.3f}); LIBERO's delta OSC actions are normalised "
                       f"to [-1, 1] — are these absolute actions?")
  instructions = [files[i][1] if i in files else "" for i in range(NUM_TASKS)]
  return EpisodeData(fields, ends, source=os.path.join(dataset_dir, suite),
                     attrs={"suite": suite, "instructions": instructions, "tasks": tasks,
                            "demo_names": names, "action_space": "delta",
                            "env_args": {"env_name": suite}})
