"""ALOHA datasets (data/aloha.py): our scripted-demo HDF5 -> LeRobot v3.0 with the schema of
LeRobot's published `lerobot/aloha_sim_*` datasets, read back through `sources.load_episodes`
with `aloha_key_map` (actions reordered to the robot's [12 joints, left gripper, right
gripper]) equal to the HDF5; a published-layout dataset (no environment_state, no metadata of
ours) read with the same key map.

Slow (`-m slow`, the real `lerobot` 0.6.1 of `.venv-lerobot`, or LEROBOT_V3_PYTHON): LeRobot's
`LeRobotDataset` opens the exports and reports the published features and our values.
"""
import json
import os
import subprocess

import h5py
import numpy as np
import pytest

from decoupled_jax.data import aloha, sources
from decoupled_jax.data.lerobot import OURS
from decoupled_jax.data.robomimic_hdf5 import DatasetError
from helpers import REPO

LEROBOT_PY = os.environ.get("LEROBOT_V3_PYTHON",
                            os.path.join(REPO, ".venv-lerobot", "bin", "python"))
MOTORS = ["left_waist", "left_shoulder", "left_elbow", "left_forearm_roll", "left_wrist_angle",
          "left_wrist_rotate", "left_gripper", "right_waist", "right_shoulder", "right_elbow",
          "right_forearm_roll", "right_wrist_angle", "right_wrist_rotate", "right_gripper"]
# meta/info.json features of lerobot/aloha_sim_insertion_scripted_image (LeRobot's published
# ALOHA sim schema, codebase v2.0; huggingface.co/datasets/lerobot/aloha_sim_insertion_scripted_
# image/raw/main/meta/info.json), the video datasets the same with dtype "video"; the motor
# names from LeRobot's aloha robot config via convert_dataset_v1_to_v2.py (see data/aloha.py).
PUBLISHED = {
    "observation.images.top": {"dtype": "image", "shape": [480, 640, 3],
                               "names": ["height", "width", "channel"]},
    "observation.state": {"dtype": "float32", "shape": [14], "names": {"motors": MOTORS}},
    "action": {"dtype": "float32", "shape": [14], "names": {"motors": MOTORS}},
    "episode_index": {"dtype": "int64", "shape": [1], "names": None},
    "frame_index": {"dtype": "int64", "shape": [1], "names": None},
    "timestamp": {"dtype": "float32", "shape": [1], "names": None},
    "next.done": {"dtype": "bool", "shape": [1], "names": None},
    "index": {"dtype": "int64", "shape": [1], "names": None},
    "task_index": {"dtype": "int64", "shape": [1], "names": None}}
TASK_TEXT = {"transfer_cube": "Pick up the cube with the right arm and transfer it to the left "
                              "arm.",
             "insertion": "Insert the peg into the socket."}
ROBOT_ORDER = list(range(6)) + list(range(7, 13)) + [6, 13]


def _frames(t, h, w, offset):
  yy, xx = np.mgrid[0:h, 0:w]
  out = []
  for i in range(t):
    im = np.stack([xx * 200 // w + 30, yy * 200 // h + 20, np.full_like(xx, 120)], -1)
    j = (i + offset) % (h // 2)
    im[j:j + h // 4, w // 3:w // 3 + w // 4] = (200, 30, 30)
    out.append(im.clip(0, 255).astype(np.uint8))
  return np.stack(out)


def write_aloha_hdf5(path, task, lengths=(5, 8, 6), camera=None, qvel=True, env_state=True,
                     seed=0):
  """Our demos layout (decoupled_jax/aloha/demos.py): float32 actions/qpos/qvel/env_state in
  gym-aloha's order, optional uint8 top camera, rewards/dones, data.attrs task/fps/env_args."""
  rng = np.random.default_rng(seed)
  env_w = 7 if task == "transfer_cube" else 14
  raw = []
  with h5py.File(path, "w") as f:
    data = f.create_group("data")
    for i, t in enumerate(lengths):
      g = data.create_group(f"demo_{i}")
      d = {"actions": rng.normal(size=(t, 14)).astype(np.float32),
           "qpos": rng.normal(size=(t, 14)).astype(np.float32),
           "qvel": rng.normal(size=(t, 14)).astype(np.float32),
           "env_state": rng.normal(size=(t, env_w)).astype(np.float32)}
      if camera:
        d["top"] = _frames(t, camera[0], camera[1], 5 * i)
      g.create_dataset("actions", data=d["actions"])
      g.create_dataset("rewards", data=rng.uniform(0, 4, t).astype(np.float32))
      g.create_dataset("dones", data=(np.arange(t) == t - 1).astype(np.int64))
      for k in ("qpos", "qvel", "env_state", "top"):
        if k in d and (k != "qvel" or qvel) and (k != "env_state" or env_state):
          g.create_dataset(f"obs/{k}", data=d[k])
      g.attrs["num_samples"] = t
      raw.append(d)
    data.attrs["task"] = task
    data.attrs["fps"] = 50
    data.attrs["env_args"] = json.dumps({"env_name": f"gym_aloha/{task}", "type": "gym_aloha",
                                         "env_kwargs": {"task": task, "control": "joint"}})
    data.attrs["action_convention"] = "joint_pos"
  return {k: np.concatenate([d[k] for d in raw]) for k in raw[0]}, np.cumsum(lengths)


def _load(path, keys, fmt):
  return sources.load_episodes(str(path), keys, format=fmt, key_map=aloha.aloha_key_map(fmt),
                               joint_actions=14)


def _info(root):
  return json.load(open(os.path.join(root, "meta", "info.json")))


def _schema(feats, cols):
  return {c: {k: feats[c][k] for k in ("dtype", "shape", "names")} for c in cols}


# ----------------------------------------------------------------------------- tests
def test_facts_and_key_maps():
  assert list(aloha.MOTORS) == MOTORS and aloha.TASK_TEXT == TASK_TEXT
  assert list(aloha.ACTION_INDEX) == ROBOT_ORDER
  assert list(aloha.ROBOT_MOTORS) == [MOTORS[i] for i in ROBOT_ORDER]
  assert aloha.published_features("image") == PUBLISHED
  assert aloha.aloha_key_map("lerobot") == {
      "qpos": "observation.state", "qvel": "observation.velocity",
      "env_state": "observation.environment_state", "top_image": "observation.images.top",
      "actions": "action[0:6,7:13,6,13]"}
  assert aloha.aloha_key_map("robomimic")["actions"] == "actions[0:6,7:13,6,13]"
  spec = sources.parse_key(aloha.aloha_key_map("robomimic")["actions"])
  np.testing.assert_array_equal(spec.apply(np.arange(14)[None], "x")[0], ROBOT_ORDER)
  with pytest.raises(ValueError, match="'robomimic' .* or 'lerobot'"):
    aloha.aloha_key_map("rlds")


def test_export_low_dim_round_trip_and_schema(tmp_path):
  h5 = tmp_path / "transfer_cube.hdf5"
  raw, ends = write_aloha_hdf5(h5, "transfer_cube")
  out = aloha.export_aloha_lerobot(str(h5), str(tmp_path / "lr"), task="transfer_cube")
  keys = ["qpos", "qvel", "env_state"]
  ours, exp = _load(h5, keys, "robomimic"), _load(out, keys, "lerobot")
  np.testing.assert_array_equal(exp.episode_ends, ends)
  np.testing.assert_array_equal(ours.episode_ends, ends)
  for k in keys:                                     # low-dim: bit for bit
    np.testing.assert_array_equal(exp.fields[k], raw[k], err_msg=k)
    np.testing.assert_array_equal(ours.fields[k], raw[k], err_msg=k)
  for ep in (ours, exp):                              # the robot's action order
    assert ep.fields["actions"].dtype == np.float32
    np.testing.assert_array_equal(ep.fields["actions"], raw["actions"][:, ROBOT_ORDER])
  assert exp.attrs["tasks"] == [TASK_TEXT["transfer_cube"]] * 3
  assert exp.attrs["fps"] == 50 and exp.attrs["action_convention"] == "joint_pos"

  info = _info(out)
  assert (info["codebase_version"], info["robot_type"], info["fps"]) == ("v3.0", "aloha", 50)
  assert (info["total_episodes"], info["total_frames"], info["total_tasks"]) == (3, 19, 1)
  published = [c for c in PUBLISHED if c != "observation.images.top"]
  assert _schema(info["features"], published) == {c: PUBLISHED[c] for c in published}
  # extra features (the published datasets lack them)
  extra = set(info["features"]) - set(PUBLISHED)
  assert extra == {"observation.velocity", "observation.environment_state", "next.reward"}
  assert info["features"]["observation.velocity"]["names"] == {"motors": MOTORS}
  assert info["features"]["observation.environment_state"] == {
      "dtype": "float32", "shape": [7], "names": ["box_x", "box_y", "box_z", "box_qw", "box_qx",
                                                  "box_qy", "box_qz"]}
  # the stored action column is gym-aloha's order, as published
  import pyarrow.parquet as pq
  t = pq.read_table(os.path.join(out, "data", "chunk-000", "file-000.parquet"))
  np.testing.assert_array_equal(np.stack(t.column("action").to_pylist()), raw["actions"])
  np.testing.assert_array_equal(t.column("next.done").to_numpy(),
                                np.isin(np.arange(19), ends - 1))


def test_camera_png_exact_and_video_within_codec_loss(tmp_path):
  h5 = tmp_path / "insertion.hdf5"
  raw, ends = write_aloha_hdf5(h5, "insertion", lengths=(6, 4, 7), camera=(48, 64), seed=1)
  png = aloha.export_aloha_lerobot(str(h5), str(tmp_path / "png"), task="insertion",
                                   images="png")
  vid = aloha.export_aloha_lerobot(str(h5), str(tmp_path / "vid"))   # task from the file
  ours = _load(h5, ["top_image", "qpos"], "robomimic")
  np.testing.assert_array_equal(ours.fields["top_image"], raw["top"])
  for root, dtype in ((png, "image"), (vid, "video")):
    ep = _load(root, ["top_image", "qpos"], "lerobot")
    np.testing.assert_array_equal(ep.episode_ends, ends)
    np.testing.assert_array_equal(ep.fields["qpos"], raw["qpos"])
    np.testing.assert_array_equal(ep.fields["actions"], raw["actions"][:, ROBOT_ORDER])
    err = np.abs(ep.fields["top_image"].astype(int) - raw["top"])
    assert err.max() == 0 if dtype == "image" else err.mean() <= 3.0, (dtype, err.mean())
    feats = _info(root)["features"]
    want = dict(PUBLISHED)
    want["observation.images.top"] = {**PUBLISHED["observation.images.top"], "dtype": dtype,
                                      "shape": [48, 64, 3]}
    assert _schema(feats, PUBLISHED) == want
    assert feats["observation.environment_state"]["shape"] == [14]
    assert ep.attrs["tasks"] == [TASK_TEXT["insertion"]] * 3


def test_published_layout_read_with_the_same_key_map(tmp_path):
  """A dataset with only the published columns and no metadata of ours (as downloaded from
  the hub): its features are exactly the published ones; qpos / top_image and the actions are
  read with the same key map."""
  h5 = tmp_path / "insertion.hdf5"
  raw, ends = write_aloha_hdf5(h5, "insertion", camera=(16, 16), qvel=False, env_state=False)
  with h5py.File(h5, "a") as f:
    for g in f["data"].values():
      del g["rewards"]
  root = aloha.export_aloha_lerobot(str(h5), str(tmp_path / "pub"), images="png")
  os.remove(os.path.join(root, OURS))
  feats = _info(root)["features"]
  assert sorted(feats) == sorted(PUBLISHED)
  assert _schema(feats, PUBLISHED) == {**PUBLISHED, "observation.images.top": {
      **PUBLISHED["observation.images.top"], "shape": [16, 16, 3]}}
  ep = _load(root, ["top_image", "qpos"], "lerobot")
  np.testing.assert_array_equal(ep.fields["qpos"], raw["qpos"])
  np.testing.assert_array_equal(ep.fields["top_image"], raw["top"])
  np.testing.assert_array_equal(ep.fields["actions"], raw["actions"][:, ROBOT_ORDER])
  np.testing.assert_array_equal(ep.episode_ends, ends)
  with pytest.raises(DatasetError, match="missing key 'observation.environment_state'"):
    _load(root, ["qpos", "env_state"], "lerobot")


def test_refusals(tmp_path):
  h5 = tmp_path / "transfer_cube.hdf5"
  write_aloha_hdf5(h5, "transfer_cube", lengths=(3, 4))
  with pytest.raises(DatasetError, match="task='transfer_cube', but task='insertion'"):
    aloha.export_aloha_lerobot(str(h5), str(tmp_path / "x"), task="insertion")
  with pytest.raises(ValueError, match="must be one of"):
    aloha.export_aloha_lerobot(str(h5), str(tmp_path / "x"), task="cube")
  bad = tmp_path / "bad.hdf5"
  with h5py.File(bad, "w") as f:
    f.create_dataset("data/demo_0/actions", data=np.zeros((3, 7), np.float32))
    f.create_dataset("data/demo_0/obs/qpos", data=np.zeros((3, 14), np.float32))
  with pytest.raises(DatasetError, match=r"key 'actions': expected \(14,\) per frame"):
    aloha.export_aloha_lerobot(str(bad), str(tmp_path / "y"), task="transfer_cube")
  assert not os.path.exists(tmp_path / "x") and not os.path.exists(tmp_path / "y")


# ----------------------------------------------------------------------------- real LeRobot
LEROBOT_OPEN = r'''
import json, os, sys
os.environ["HF_HUB_OFFLINE"] = "1"; os.environ["HF_DATASETS_OFFLINE"] = "1"
import numpy as np
import lerobot
from lerobot.datasets.lerobot_dataset import LeRobotDataset
out = {"version": lerobot.__version__}
for root in sys.argv[1:]:
  ds = LeRobotDataset("local/aloha_" + os.path.basename(root), root=root, video_backend="pyav")
  items = [ds[i] for i in range(len(ds))]
  np.savez(root + ".npz", state=np.stack([x["observation.state"].numpy() for x in items]),
           action=np.stack([x["action"].numpy() for x in items]),
           episode=np.array([int(x["episode_index"]) for x in items]),
           top=np.stack([(x["observation.images.top"].numpy() * 255).round().astype(np.uint8)
                         .transpose(1, 2, 0) for x in items]))
  out[root] = {"len": len(ds), "episodes": ds.num_episodes, "fps": ds.fps,
               "robot_type": ds.meta.robot_type, "cameras": ds.meta.camera_keys,
               "task": items[0]["task"], "features": ds.meta.features}
print(json.dumps(out))
'''


@pytest.mark.slow
def test_real_lerobot_opens_the_export(tmp_path):
  if not os.path.exists(LEROBOT_PY):
    pytest.skip(f"{LEROBOT_PY} missing: `make lerobot-env` (or set LEROBOT_V3_PYTHON)")
  h5 = tmp_path / "insertion.hdf5"
  raw, ends = write_aloha_hdf5(h5, "insertion", lengths=(6, 4, 7), camera=(32, 48), seed=2)
  roots = [aloha.export_aloha_lerobot(str(h5), str(tmp_path / m), images=m)
           for m in ("png", "video")]
  script = tmp_path / "open.py"
  script.write_text(LEROBOT_OPEN)
  env = dict(os.environ, HF_HOME=str(tmp_path / "hf"), HF_HUB_OFFLINE="1",
             HF_DATASETS_OFFLINE="1", HF_LEROBOT_HOME=str(tmp_path / "lerobot_home"))
  r = subprocess.run([LEROBOT_PY, str(script), *roots], capture_output=True, text=True, env=env,
                     timeout=900)
  assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
  got = json.loads(r.stdout.strip().splitlines()[-1])
  for root, dtype in zip(roots, ("image", "video")):
    g = got[root]
    assert (g["len"], g["episodes"], g["fps"], g["robot_type"]) == (17, 3, 50, "aloha")
    assert g["cameras"] == ["observation.images.top"] and g["task"] == TASK_TEXT["insertion"]
    want = {**PUBLISHED, "observation.images.top": {**PUBLISHED["observation.images.top"],
                                                    "dtype": dtype, "shape": [32, 48, 3]}}
    assert _schema(g["features"], PUBLISHED) == want
    z = np.load(root + ".npz")
    np.testing.assert_array_equal(z["state"], raw["qpos"])
    np.testing.assert_array_equal(z["action"], raw["actions"])      # gym-aloha's order
    np.testing.assert_array_equal(z["episode"], np.repeat(np.arange(3), [6, 4, 7]))
    ours = _load(root, ["top_image"], "lerobot").fields["top_image"]
    np.testing.assert_array_equal(z["top"], ours)   # LeRobot's decoder sees what ours does
    if dtype == "image":
      np.testing.assert_array_equal(z["top"], raw["top"])
  print("verified against lerobot", got["version"])
