"""ALOHA (bimanual: two ViperX 300s; gym-aloha 0.1.5's simulated tasks) dataset facts, in one
home: the 14 motors, LeRobot's published column names and schema, the key maps that read our
HDF5 demonstrations and LeRobot datasets alike, and `export_aloha_lerobot`, which writes our
demonstrations as LeRobot v3.0 with the published schema, so a config that trains on
`lerobot/aloha_sim_transfer_cube_human` (or `_scripted`, or `insertion`) trains on ours.

Layer `data`: numpy, h5py and `decoupled_jax.data` only (never jax).

Our HDF5 (`decoupled_jax/aloha/demos.py`, `<dir>/<task>.hdf5`, robomimic-style):
  data/demo_<i>/actions (T, 14) float32   gym-aloha's order = MOTORS
                obs/qpos (T, 14), obs/qvel (T, 14) float32 (the same order),
                obs/env_state (T, 7 | 14) float32 (transfer_cube: box pos + quat (w, x, y, z);
                    insertion: peg pos + quat, socket pos + quat),
                [obs/top (T, H, W, 3) uint8], [rewards (T,), dones (T,)]
  data.attrs    task, fps (50), env_args, action_convention ('joint_pos')

LeRobot's published schema (`lerobot/aloha_sim_{transfer_cube,insertion}_{human,scripted}`
[_image]), as found (no network here; sources named):
  * meta/info.json of lerobot/aloha_sim_insertion_scripted_image (v2.0, a stored copy of
    huggingface.co/datasets/lerobot/aloha_sim_insertion_scripted_image/raw/main/meta/info.json):
      robot_type "aloha", fps 50, features
      observation.images.top  image [480, 640, 3]  names ["height", "width", "channel"]
      observation.state       float32 [14]  names {"motors": MOTORS}
      action                  float32 [14]  names {"motors": MOTORS}
      episode_index, frame_index, index, task_index  int64 [1]  names null
      timestamp  float32 [1]  null;  next.done  bool [1]  null
    (the video variants, e.g. lerobot/aloha_static_vinh_cup_left of the same conversion
    batch: dtype "video", the same shape and names, plus the codec block.)
  * The motor names come from LeRobot's robot config `lerobot/configs/robot/aloha.yaml`
    (follower arms left then right: waist, shoulder, elbow, forearm_roll, wrist_angle,
    wrist_rotate, gripper; the *_shadow motors commented out for these datasets, as
    `batch_convert_dataset_v1_to_v2.py` says) through `convert_dataset_v1_to_v2.py`
    (`names = {"motors": [f"{arm}_{motor}" ...]}`), github:huggingface/lerobot history.
  * The tasks: `batch_convert_dataset_v1_to_v2.py` (single_task per dataset): TASK_TEXT.
  * The columns themselves: `lerobot/common/datasets/push_dataset_to_hub/aloha_hdf5_format.py`
    (ACT's /observations/qpos -> observation.state, /action -> action, qvel ->
    observation.velocity, cameras -> observation.images.<cam>, next.done True at the last
    frame), removed in commit 6bc2d6bf.
  * v2.1 -> v3.0 (`convert_dataset_v21_to_v30.py`, 2025-09) keeps the features and adds
    "fps": 50 to each non-video feature (LeRobot's own writer does not: we don't either);
    video features carry LeRobot's `info` block. Not checked against the published v3.0
    files themselves (not reachable from here).
  The gripper entries are normalised (ACT's PUPPET_GRIPPER_POSITION_NORMALIZE_FN: 0 closed,
  1 open) in both the published data and ours; gym-aloha's env (lerobot's `AlohaEnv`) takes
  the same 14-D action and gives `agent_pos` = qpos -> observation.state, `pixels/top` ->
  observation.images.top (480 x 640).

Columns we add that the published datasets lack (LeRobot ignores features a policy does not
use): observation.velocity (qvel, names {"motors": MOTORS}), observation.environment_state
(env_state; LeRobot's standard name for it), next.reward when the HDF5 holds rewards.

Action order: datasets (ours and LeRobot's) store gym-aloha's order [left 6, left gripper,
right 6, right gripper]; the library's robot order is [12 arm joints (left then right), left
gripper, right gripper], the dataset key's reordering ACTION_ORDER (`sources.parse_key`).
"""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from decoupled_jax.data.episodes import EpisodeData
from decoupled_jax.data.robomimic_hdf5 import DatasetError

TASKS = ("transfer_cube", "insertion")
# LeRobot's task strings (batch_convert_dataset_v1_to_v2.py, single_task)
TASK_TEXT = {"transfer_cube": "Pick up the cube with the right arm and transfer it to the "
                              "left arm.",
             "insertion": "Insert the peg into the socket."}
PUBLISHED = {"transfer_cube": ("lerobot/aloha_sim_transfer_cube_human",
                               "lerobot/aloha_sim_transfer_cube_scripted"),
             "insertion": ("lerobot/aloha_sim_insertion_human",
                           "lerobot/aloha_sim_insertion_scripted")}
ROBOT_TYPE = "aloha"
FPS = 50
IMAGE_SHAPE = (480, 640, 3)          # the published top camera (height, width, channel)
ARMS = ("left", "right")
ARM_MOTORS = ("waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate",
              "gripper")
MOTORS = tuple(f"{arm}_{m}" for arm in ARMS for m in ARM_MOTORS)   # gym-aloha's 14-D order
JOINTS_PER_ARM = 6
# gym-aloha order -> the robot's [12 arm joints, left gripper, right gripper]
ACTION_INDEX = tuple(range(0, 6)) + tuple(range(7, 13)) + (6, 13)
ACTION_ORDER = "[0:6,7:13,6,13]"
ROBOT_MOTORS = tuple(MOTORS[i] for i in ACTION_INDEX)

# LeRobot columns (the published ones, and the two we add)
STATE = "observation.state"
ACTION = "action"
TOP = "observation.images.top"
VELOCITY = "observation.velocity"
ENV_STATE = "observation.environment_state"
IMAGE_NAMES = ["height", "width", "channel"]
_FREE = ("x", "y", "z", "qw", "qx", "qy", "qz")       # a MuJoCo free joint: pos + quat (wxyz)
ENV_STATE_NAMES = {"transfer_cube": [f"box_{n}" for n in _FREE],
                   "insertion": [f"peg_{n}" for n in _FREE] + [f"socket_{n}" for n in _FREE]}

POLICY_KEYS = ("qpos", "qvel", "env_state", "top_image", "actions")
# policy key -> dataset key, per format (actions in gym-aloha's order; see aloha_key_map)
HDF5_KEYS = {"qpos": "qpos", "qvel": "qvel", "env_state": "env_state", "top_image": "top",
             "actions": "actions"}
LEROBOT_COLUMNS = {"qpos": STATE, "qvel": VELOCITY, "env_state": ENV_STATE, "top_image": TOP,
                   "actions": ACTION}


def published_features(image: str | None = "video",
                       image_shape: Sequence[int] = IMAGE_SHAPE) -> dict:
  """meta/info.json `features` of LeRobot's published ALOHA sim datasets (see the module
  docstring): image = 'video' | 'image' (the `_image` variants) | None (no camera); without
  the video codec block and the per-feature fps of the v3.0 conversion."""
  motors = {"motors": list(MOTORS)}
  out = {}
  if image is not None:
    out[TOP] = {"dtype": image, "shape": [int(x) for x in image_shape],
                "names": list(IMAGE_NAMES)}
  out.update({
      STATE: {"dtype": "float32", "shape": [14], "names": motors},
      ACTION: {"dtype": "float32", "shape": [14], "names": {"motors": list(MOTORS)}},
      "episode_index": {"dtype": "int64", "shape": [1], "names": None},
      "frame_index": {"dtype": "int64", "shape": [1], "names": None},
      "timestamp": {"dtype": "float32", "shape": [1], "names": None},
      "next.done": {"dtype": "bool", "shape": [1], "names": None},
      "index": {"dtype": "int64", "shape": [1], "names": None},
      "task_index": {"dtype": "int64", "shape": [1], "names": None}})
  return out


def aloha_key_map(fmt: str) -> dict[str, str]:
  """policy key -> dataset key for `sources.load_episodes(..., format=fmt, key_map=...,
  joint_actions=14)`: fmt 'robomimic' (our HDF5) or 'lerobot' (our export and LeRobot's
  published datasets; `env_state`/`qvel` only in ours). Actions come back in the robot's order
  [12 arm joints, left gripper, right gripper]; observations in gym-aloha's order."""
  if fmt == "robomimic":
    keys = dict(HDF5_KEYS)
  elif fmt == "lerobot":
    keys = dict(LEROBOT_COLUMNS)
  else:
    raise ValueError(f"ALOHA datasets come as 'robomimic' (our HDF5) or 'lerobot', got {fmt!r}")
  keys["actions"] += ACTION_ORDER
  return keys


def check_task(task: str) -> str:
  if task not in TASKS:
    raise ValueError(f"ALOHA task must be one of {TASKS}, got {task!r}")
  return task


def _attr(v):
  return v.decode() if isinstance(v, bytes) else v


def read_aloha_hdf5(path: str, *, lazy_images: bool = True) -> EpisodeData:
  """Every field of our ALOHA HDF5 keyed by policy keys (qpos, qvel, env_state, top_image when
  present, actions in gym-aloha's order, rewards/dones when present); attrs task, fps,
  env_args, demo_names, action_convention 'joint_pos'. `lazy_images`: camera frames read from
  the file on demand (`data/lazy.py`)."""
  import h5py

  from decoupled_jax.data import robomimic_hdf5
  path = str(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path}: no such ALOHA demonstration file")
  with h5py.File(path, "r") as f:
    if "data" not in f or not any(k.startswith("demo_") for k in f["data"]):
      raise DatasetError(f"{path}: no data/demo_<i> groups")
    first = f["data"][sorted(k for k in f["data"] if k.startswith("demo_"))[0]]
    obs = set(first["obs"].keys()) if "obs" in first else set()
    attrs = {k: _attr(v) for k, v in f["data"].attrs.items()}
    extra = [k for k in ("rewards", "dones") if k in first]
  missing = [HDF5_KEYS[k] for k in ("qpos",) if HDF5_KEYS[k] not in obs]
  if missing:
    raise DatasetError(f"{path}: data/demo_*/obs: missing key '{missing[0]}' (has "
                       f"{sorted(obs)})")
  specs = {k: HDF5_KEYS[k] for k in POLICY_KEYS if HDF5_KEYS[k] in obs or k == "actions"}
  specs.update({k: k for k in extra})
  images = ["top_image"] if "top_image" in specs else []
  ep = robomimic_hdf5.read_demos(path, specs, image_fields=images, action_field="actions",
                                 action_convention="any", lazy_images=lazy_images and
                                 bool(images))
  for k, width in (("actions", 14), ("qpos", 14), ("qvel", 14)):
    if k in ep.fields and ep.fields[k].shape[1:] != (width,):
      raise DatasetError(f"{path}: key '{specs[k]}': expected ({width},) per frame "
                         f"(gym-aloha's 14 motors), got {ep.fields[k].shape[1:]}")
  out = dict(ep.attrs)
  out.update(task=attrs.get("task"), fps=int(attrs.get("fps", FPS)),
             action_convention="joint_pos")
  return EpisodeData(ep.fields, ep.episode_ends, source=path, attrs=out)


def export_aloha_lerobot(hdf5_path: str, out_dir: str, *, task: str | None = None,
                         images: str = "video", overwrite: bool = False, crf: int = 18,
                         progress: bool = False) -> str:
  """Our ALOHA HDF5 -> LeRobot v3.0 at `out_dir` with the schema of LeRobot's published ALOHA
  sim datasets (`published_features`; module docstring): observation.state = qpos,
  action = the actions in gym-aloha's order, observation.images.top (when the file has the
  camera; 'video' = H.264 mp4 as published, 'png' = lossless, like the `_image` variants),
  next.done, robot_type 'aloha', fps 50, the published task string. Extra features (absent
  from the published datasets): observation.velocity (qvel), observation.environment_state
  (env_state), next.reward (rewards). `task` ('transfer_cube' | 'insertion'; default the
  file's `task` attribute) must agree with the file. Resumable and atomic
  (`lerobot.export_lerobot_v3`); an existing export is kept unless `overwrite`. Returns
  `out_dir`."""
  from decoupled_jax.data.lerobot import export_lerobot_v3
  ep = read_aloha_hdf5(hdf5_path)
  recorded = ep.attrs.get("task")
  if task is None:
    if recorded is None:
      raise DatasetError(f"{hdf5_path}: data.attrs has no 'task'; pass task= one of {TASKS}")
    task = str(recorded)
  check_task(task)
  if recorded is not None and str(recorded) != task:
    raise DatasetError(f"{hdf5_path}: data.attrs task={recorded!r}, but task={task!r} was asked")
  if int(ep.attrs["fps"]) != FPS:
    raise DatasetError(f"{hdf5_path}: data.attrs fps={ep.attrs['fps']}; ALOHA runs at {FPS} Hz")
  if "env_state" in ep.fields and ep.fields["env_state"].shape[1] != len(ENV_STATE_NAMES[task]):
    raise DatasetError(f"{hdf5_path}: key 'env_state': {ep.fields['env_state'].shape[1]} per "
                       f"frame, {task} has {len(ENV_STATE_NAMES[task])}")
  attrs = dict(ep.attrs)
  attrs["tasks"] = [TASK_TEXT[task]] * ep.num_episodes
  data = EpisodeData(ep.fields, ep.episode_ends, source=ep.source, attrs=attrs)
  motors = {"motors": list(MOTORS)}
  return export_lerobot_v3(
      data, out_dir, fps=FPS, task=TASK_TEXT[task], images=images, crf=crf,
      source=str(hdf5_path), robot_type=ROBOT_TYPE, overwrite=overwrite, progress=progress,
      columns=LEROBOT_COLUMNS,
      feature_names={STATE: motors, ACTION: motors, VELOCITY: motors, TOP: list(IMAGE_NAMES),
                     ENV_STATE: list(ENV_STATE_NAMES[task])})
