"""Dataset formats and conversions: action-convention detection, `load_episodes` (robomimic /
RLDS / LeRobot, key maps and slices), RLDS and LeRobot round trips, delta <-> absolute
relabelling by state replay on REAL human demonstrations (tests/data, robosuite 1.4.1) and on
generated ones, observations regenerated from states, and the real `lerobot` package (slow).
"""
import json
import os
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest

from decoupled_jax.data import lerobot, rlds, sources
from decoupled_jax.data import robomimic_hdf5 as rh
from decoupled_jax.data.episodes import EpisodeData
from decoupled_jax.data.robomimic_hdf5 import DatasetError
from helpers import OUR_ENV_ARGS as OURS
from helpers import REPO, assert_one_line_error, export_robomimic, run_binary, write_robomimic_hdf5

DATA = os.path.join(os.path.dirname(__file__), "data")
REAL_DEMO = os.path.join(DATA, "robosuite_1.4.1_lift_demo.hdf5")
LOW_DIM = ["robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos", "robot0_joint_pos",
           "object"]
IMAGES = ["agentview_image", "robot0_eye_in_hand_image"]

# What our env records (OURS, sim/robosuite_env.py: env_args()), and the two published
# conventions.
V14_DELTA = {"env_name": "Lift", "env_version": "1.4.1", "type": 1, "env_kwargs": {
    "controller_configs": {"type": "OSC_POSE", "control_delta": True}}}
V14_ABS = {"env_name": "Lift", "env_version": "1.4.1", "type": 1, "env_kwargs": {
    "controller_configs": {"type": "OSC_POSE", "control_delta": False}}}
V15_DELTA = {"env_name": "Lift", "type": 1, "env_kwargs": {"controller_configs": {
    "type": "BASIC", "body_parts": {"right": {"type": "OSC_POSE", "input_type": "delta"}}}}}


class _Crash(Exception):
  """A simulated interruption."""


def _demos(lengths=(6, 9, 4), images=True, seed=0):
  rng = np.random.default_rng(seed)
  out = []
  for t in lengths:
    obs = {"robot0_eef_pos": rng.normal(size=(t, 3)), "robot0_eef_quat": rng.normal(size=(t, 4)),
           "robot0_gripper_qpos": rng.normal(size=(t, 2)),
           "robot0_joint_pos": rng.normal(size=(t, 7)), "object": rng.normal(size=(t, 10))}
    if images:
      for k in IMAGES:
        obs[k] = rng.integers(0, 256, size=(t, 84, 84, 3), dtype=np.uint8)
    out.append({"actions": rng.normal(size=(t, 7)), "states": rng.normal(size=(t, 32)),
                "rewards": np.zeros(t), "dones": np.eye(t)[-1], "obs": obs})
  return out


@pytest.fixture(scope="module")
def hdf5_file(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("rm") / "Lift.hdf5")
  write_robomimic_hdf5(path, _demos(), OURS, masks={"train": ["demo_0", "demo_2"],
                                                       "valid": ["demo_1"]})
  return path


# ----------------------------------------------------------------------------- conventions
def test_controller_info_reads_every_layout():
  assert rh.controller_info(OURS).convention == "absolute"
  assert rh.controller_info(OURS).ref_frame == "world"
  i = rh.controller_info(V14_DELTA)
  assert (i.convention, i.ref_frame, i.key) == (
      "delta", "world", "env_args.env_kwargs.controller_configs.control_delta")
  assert rh.controller_info(V14_ABS).convention == "absolute"
  i = rh.controller_info(V15_DELTA)
  assert (i.convention, i.ref_frame) == ("delta", "base")   # robosuite 1.5's default frame
  assert i.key.endswith("body_parts.right.input_type")
  # a robosuite collection file's env_info (flat, no env_kwargs)
  flat = {"env_name": "Lift", "robots": "Panda", "_origin": "data.attrs['env_info']",
          "controller_configs": {"type": "OSC_POSE", "control_delta": True}}
  assert rh.controller_info(flat).key == "data.attrs['env_info'].controller_configs.control_delta"
  for bad, missing in [({"env_name": "Lift"}, "env_args.env_kwargs.controller_configs"),
                       ({"env_kwargs": {"controller_configs": {"type": "OSC_POSE"}}},
                        "controller_configs.control_delta"),
                       ({"env_kwargs": {"controller_configs": {"body_parts": {"right": {
                           "type": "OSC_POSE"}}}}}, "body_parts.right.input_type")]:
    with pytest.raises(rh.ConventionUnknown) as e:
      rh.controller_info(bad, "f.hdf5")
    assert e.value.missing_key.endswith(missing) and missing in str(e.value)


def test_reader_refuses_delta_and_unknown_conventions(tmp_path):
  delta = str(tmp_path / "mimicgen.hdf5")
  write_robomimic_hdf5(delta, _demos(images=False), V14_DELTA)
  cmd = (f"python experiments/convert_dataset.py --input={delta} --output="
         f"{tmp_path / 'mimicgen_abs.hdf5'} --to=absolute")
  for load in (lambda: rh.load_robomimic_hdf5(delta, LOW_DIM),
               lambda: sources.load_episodes(delta, LOW_DIM)):
    with pytest.raises(DatasetError) as e:
      load()
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(delta) and "DELTA" in msg and cmd in msg
  v15 = str(tmp_path / "v15.hdf5")
  write_robomimic_hdf5(v15, _demos(images=False), V15_DELTA)
  with pytest.raises(DatasetError, match="body_parts.right.input_type says delta"):
    sources.load_episodes(v15, LOW_DIM)
  # absolute, but in the robot base frame: refused too
  base = json.loads(json.dumps(OURS))
  base["env_kwargs"]["controller_configs"]["body_parts"]["right"]["input_ref_frame"] = "base"
  pb = str(tmp_path / "base.hdf5")
  write_robomimic_hdf5(pb, _demos(images=False), base)
  with pytest.raises(DatasetError, match="'base' frame"):
    sources.load_episodes(pb, LOW_DIM)
  # a file that records nothing (not written by us): refused, naming the missing key
  unknown = str(tmp_path / "unknown.hdf5")
  shutil.copy(delta, unknown)
  with h5py.File(unknown, "r+") as f:
    f["data"].attrs["env_args"] = json.dumps({"env_name": "Lift"})
    del f["data"].attrs["action_convention"]
  with pytest.raises(DatasetError, match=r"unknown\.hdf5: data attrs: cannot tell absolute "
                                         r"from delta actions: missing key 'env_args\.env_kwargs"
                                         r"\.controller_configs'"):
    sources.load_episodes(unknown, LOW_DIM)
  # ...unless the caller vouches for it; 'any' skips the check (stage-1 pairs)
  assert sources.load_episodes(unknown, LOW_DIM, action_convention="absolute").num_episodes == 3
  assert sources.load_episodes(delta, LOW_DIM, action_convention="any").attrs[
      "action_convention"] == "delta"
  with pytest.raises(DatasetError, match="DELTA"):     # vouching does not override the file
    sources.load_episodes(delta, LOW_DIM, action_convention="absolute")
  # our writer records the convention when env_args name no controller (test fixtures do this)
  plain = str(tmp_path / "plain.hdf5")
  write_robomimic_hdf5(plain, _demos(images=False), {"env_name": "Lift", "env_kwargs": {}})
  ep = sources.load_episodes(plain, LOW_DIM)
  assert ep.attrs["action_convention"] == "absolute" and ep.attrs["env_args"]["env_name"] == "Lift"


def test_load_episodes_matches_load_robomimic_hdf5(hdf5_file):
  a = rh.load_robomimic_hdf5(hdf5_file, LOW_DIM + IMAGES)
  b = sources.load_episodes(hdf5_file, LOW_DIM + IMAGES)
  assert set(a.fields) == set(b.fields) == set(LOW_DIM + IMAGES + ["actions"])
  for k in a.fields:
    np.testing.assert_array_equal(a.fields[k], b.fields[k])
  np.testing.assert_array_equal(a.episode_ends, b.episode_ends)
  assert b.attrs["env_args"] == OURS and b.attrs["demo_names"] == ["demo_0", "demo_1", "demo_2"]
  v = sources.load_episodes(hdf5_file, LOW_DIM, filter_key="valid")
  assert v.attrs["demo_names"] == ["demo_1"] and v.num_frames == 9
  assert set(sources.load_episodes(hdf5_file, LOW_DIM + IMAGES, load_images=False).fields) == (
      set(LOW_DIM) | {"actions"})


def test_key_map_names_and_slices(tmp_path):
  """A LIBERO-style file: other obs names, one state vector sliced into several policy keys."""
  rng = np.random.default_rng(1)
  path = str(tmp_path / "libero_like.hdf5")
  demos = []
  for t in (5, 7):
    st = rng.normal(size=(t, 9))
    demos.append({"actions": rng.normal(size=(t, 7)), "obs": {
        "agentview_rgb": rng.integers(0, 256, (t, 84, 84, 3), dtype=np.uint8),
        "ee_states": st, "joint_states": rng.normal(size=(t, 7))},
        "extra": {"actions_abs": rng.normal(size=(t, 7))}})
  write_robomimic_hdf5(path, demos, OURS)
  key_map = {"agentview_image": "agentview_rgb", "robot0_eef_pos": "ee_states[0:3]",
             "robot0_eef_quat": "ee_states[3:7]", "robot0_gripper_qpos": "ee_states[7:]",
             "robot0_joint_pos": "obs/joint_states", "actions": "actions_abs"}
  ep = sources.load_episodes(path, ["agentview_image", "robot0_eef_pos", "robot0_eef_quat",
                                    "robot0_gripper_qpos", "robot0_joint_pos"], key_map=key_map)
  st = np.concatenate([d["obs"]["ee_states"] for d in demos]).astype(np.float32)
  np.testing.assert_array_equal(ep.fields["robot0_eef_pos"], st[:, 0:3])
  np.testing.assert_array_equal(ep.fields["robot0_eef_quat"], st[:, 3:7])
  np.testing.assert_array_equal(ep.fields["robot0_gripper_qpos"], st[:, 7:9])
  np.testing.assert_array_equal(ep.fields["actions"], np.concatenate(
      [d["extra"]["actions_abs"] for d in demos]).astype(np.float32))
  assert ep.fields["agentview_image"].dtype == np.uint8
  assert ep.attrs["key_map"]["robot0_eef_pos"] == "ee_states[0:3]"
  one = sources.load_episodes(path, ["robot0_eef_pos"], key_map={"robot0_eef_pos": "ee_states[8]"})
  np.testing.assert_array_equal(one.fields["robot0_eef_pos"], st[:, 8:9])
  assert sources.parse_key("observation.state[-2:]").index == slice(-2, None)
  # several selections concatenate in order (ALOHA's [l6, lg, r6, rg] -> [l6, r6, lg, rg])
  two = sources.load_episodes(path, ["robot0_eef_pos"],
                              key_map={"robot0_eef_pos": "ee_states[4:6,0,-1]"})
  np.testing.assert_array_equal(two.fields["robot0_eef_pos"], st[:, [4, 5, 0, 8]])
  with pytest.raises(ValueError, match=r"'x' is not a slice"):
    sources.parse_key("ee_states[0:2,x]")
  with pytest.raises(DatasetError, match=r"key 'ee_states\[0:2,12\]'.*index 12 out of range"):
    sources.load_episodes(path, ["robot0_eef_pos"], key_map={"robot0_eef_pos": "ee_states[0:2,12]"})
  with pytest.raises(DatasetError, match=r"libero_like\.hdf5: .*key 'ee_states\[9:12\]'.*out of "
                                         r"range"):
    sources.load_episodes(path, ["robot0_eef_pos"], key_map={"robot0_eef_pos": "ee_states[9:12]"})
  with pytest.raises(DatasetError, match=r"libero_like\.hdf5: data/demo_0/obs: missing key "
                                         r"'robot0_eef_pos'"):
    sources.load_episodes(path, ["robot0_eef_pos"])
  with pytest.raises(ValueError, match="image keys cannot be sliced"):
    sources.load_episodes(path, ["agentview_image"], key_map={"agentview_image": "x[0:3]"})
  with pytest.raises(ValueError, match="format must be one of"):
    sources.load_episodes(path, ["robot0_eef_pos"], format="zarr")
  # actions must be 7-D env actions
  with pytest.raises(DatasetError, match=r"key 'ee_states' \(actions\): expected 7-D"):
    sources.load_episodes(path, [], key_map={"actions": "ee_states"})


# ----------------------------------------------------------------------------- RLDS
def _assert_same(a: EpisodeData, b: EpisodeData, images_exact=True):
  assert set(a.fields) == set(b.fields)
  for k in a.fields:
    assert a.fields[k].dtype == b.fields[k].dtype, k
    if images_exact or not rh.is_image_key(k):
      np.testing.assert_array_equal(a.fields[k], b.fields[k], err_msg=k)
  np.testing.assert_array_equal(a.episode_ends, b.episode_ends)
  assert a.attrs["env_args"] == b.attrs["env_args"]
  assert a.attrs["demo_names"] == b.attrs["demo_names"]


def test_rlds_export_read_bit_exact_and_equal_to_hdf5(hdf5_file, tmp_path):
  out = str(tmp_path / "rlds")
  vdir = export_robomimic(hdf5_file, out, to="rlds")
  assert os.path.isfile(os.path.join(vdir, "dataset_info.json"))
  assert any("array_record" in f for f in os.listdir(vdir))
  keys = LOW_DIM + IMAGES
  ref = sources.load_episodes(hdf5_file, keys)
  for p in (out, vdir):            # the export dir or the version dir
    _assert_same(ref, sources.load_episodes(p, keys, format="rlds"))
  for fk in ("train", "valid"):
    _assert_same(sources.load_episodes(hdf5_file, keys, filter_key=fk),
                 sources.load_episodes(out, keys, format="rlds", filter_key=fk))
  # Open-X names, the 9-D state, the RLDS step flags, episode metadata
  import tensorflow_datasets as tfds
  ds = tfds.builder_from_directory(vdir).as_data_source(split="train")
  ep = ds[1]
  steps = ep["steps"]
  assert len(steps) == 9 and bool(steps[0]["is_first"]) and bool(steps[8]["is_last"])
  assert bool(steps[8]["is_terminal"]) and not bool(steps[3]["is_last"])
  assert steps[0]["language_instruction"] == b"lift the red cube"
  assert set(steps[0]["observation"]) >= {"image", "wrist_image", "joint_state", "state",
                                          "robot0_eef_pos", "object"}
  np.testing.assert_array_equal(steps[2]["observation"]["state"], np.concatenate(
      [ref.fields[k][6 + 2] for k in ("robot0_eef_pos", "robot0_eef_quat",
                                      "robot0_gripper_qpos")]))
  assert ep["episode_metadata"]["demo_name"] == b"demo_1"
  assert int(ep["episode_metadata"]["episode_index"]) == 1
  # an existing export is kept (no rewrite), overwrite replaces it
  mtime = os.path.getmtime(os.path.join(vdir, "dataset_info.json"))
  assert export_robomimic(hdf5_file, out, to="rlds") == vdir
  assert os.path.getmtime(os.path.join(vdir, "dataset_info.json")) == mtime


def test_rlds_reader_errors(hdf5_file, tmp_path):
  out = str(tmp_path / "rlds")
  export_robomimic(hdf5_file, out, to="rlds")
  with pytest.raises(DatasetError, match=r"rlds/lift_episodes/1\.0\.0: episode 0 \(demo_0\): "
                                         r"missing key 'observation/nope'"):
    sources.load_episodes(out, ["nope"], format="rlds")
  with pytest.raises(DatasetError, match="filter key 'test' not found"):
    sources.load_episodes(out, LOW_DIM, format="rlds", filter_key="test")
  with pytest.raises(DatasetError, match="no TFDS dataset"):
    sources.load_episodes(str(tmp_path), LOW_DIM, format="rlds")
  # a dataset that says its actions are delta is refused like an HDF5 file
  delta = str(tmp_path / "delta.hdf5")
  write_robomimic_hdf5(delta, _demos(images=False), V14_DELTA)
  ep = rh.load_robomimic_hdf5(delta, LOW_DIM, action_convention="any")
  with pytest.raises(DatasetError, match="refusing to export 'delta'"):
    rlds.export_rlds(ep, str(tmp_path / "x"))
  vdir = rlds.find_version_dir(out)
  meta = json.load(open(os.path.join(vdir, "metadata.json")))
  meta["decoupled_jax"]["env_args"] = V14_DELTA
  json.dump(meta, open(os.path.join(vdir, "metadata.json"), "w"))
  with pytest.raises(DatasetError, match=r"metadata\.json decoupled_jax\.env_args: actions are "
                                         r"DELTA"):
    sources.load_episodes(out, LOW_DIM, format="rlds")


# ----------------------------------------------------------------------------- LeRobot
def test_lerobot_png_bit_exact_and_layout(hdf5_file, tmp_path):
  out = str(tmp_path / "lerobot_png")
  export_robomimic(hdf5_file, out, to="lerobot", images="png", lerobot_version="v2.1")
  keys = LOW_DIM + IMAGES
  ref = sources.load_episodes(hdf5_file, keys)
  _assert_same(ref, sources.load_episodes(out, keys, format="lerobot"))
  _assert_same(sources.load_episodes(hdf5_file, keys, filter_key="valid"),
               sources.load_episodes(out, keys, format="lerobot", filter_key="valid"))
  info = json.load(open(os.path.join(out, "meta", "info.json")))
  assert info["codebase_version"] == "v2.1" and info["fps"] == 20
  assert info["features"]["observation.eePose"]["shape"] == [9]
  assert info["features"]["observation.image"]["dtype"] == "image"
  assert info["features"]["actions"]["shape"] == [7]
  for f in ("episodes.jsonl", "episodes_stats.jsonl", "stats.json", "tasks.jsonl",
            "decoupled_jax.json"):
    assert os.path.isfile(os.path.join(out, "meta", f)), f
  assert os.path.isfile(os.path.join(out, "data", "chunk-000", "episode_000002.parquet"))
  eps = [json.loads(x) for x in open(os.path.join(out, "meta", "episodes.jsonl"))]
  assert [e["length"] for e in eps] == [6, 9, 4]
  assert not os.path.exists(out + ".incomplete")


def test_lerobot_video_tolerance_resume_and_errors(tmp_path):
  # smooth rendered-like images (gradients + a moving square), as video codecs expect
  n_eps, t = 2, 12
  yy, xx = np.mgrid[0:84, 0:84]
  frames = []
  for i in range(n_eps * t):
    im = np.stack([xx * 2 + 40, yy * 2 + 20, np.full_like(xx, 120)], -1).astype(np.float64)
    im[20 + i:35 + i, 30:45] = (200, 30, 30)
    frames.append(im.clip(0, 255).astype(np.uint8))
  rng = np.random.default_rng(0)
  f = {"agentview_image": np.stack(frames), "robot0_eef_pos": rng.normal(size=(n_eps * t, 3)),
       "actions": rng.normal(size=(n_eps * t, 7))}
  f = {k: (v if v.dtype == np.uint8 else v.astype(np.float32)) for k, v in f.items()}
  ep = EpisodeData(f, [t, 2 * t], attrs={"env_args": {"env_name": "Lift"},
                                          "demo_names": ["demo_0", "demo_1"]})
  out = str(tmp_path / "lerobot_video")
  # an interrupted export resumes: fake a crash after episode 0
  calls = []
  real = lerobot.encode_video

  def crashing(frames_, path, *a, **kw):
    calls.append(path)
    if len(calls) == 2:
      raise _Crash
    return real(frames_, path, *a, **kw)
  lerobot.encode_video = crashing
  try:
    with pytest.raises(_Crash):
      lerobot.export_lerobot(ep, out)
  finally:
    lerobot.encode_video = real
  assert os.path.isdir(out + ".incomplete") and not os.path.exists(out)
  calls.clear()
  lerobot.encode_video = lambda *a, **kw: (calls.append(a[1]), real(*a, **kw))[1]
  try:
    lerobot.export_lerobot(ep, out)
  finally:
    lerobot.encode_video = real
  assert len(calls) == 1 and "episode_000001" in calls[0]    # episode 0 was not redone
  back = sources.load_episodes(out, ["agentview_image", "robot0_eef_pos"], format="lerobot",
                               key_map={"robot0_eef_pos": "observation.robot0_eef_pos"})
  np.testing.assert_array_equal(back.fields["robot0_eef_pos"], f["robot0_eef_pos"])
  np.testing.assert_array_equal(back.fields["actions"], f["actions"])
  err = np.abs(back.fields["agentview_image"].astype(int) - f["agentview_image"].astype(int))
  assert err.mean() <= 3.0, err.mean()     # lossy H.264 (crf 18): the documented tolerance
  # errors name the directory, episode and key
  with pytest.raises(DatasetError, match=r"lerobot_video: meta/info\.json: missing key "
                                         r"'observation\.nope'"):
    sources.load_episodes(out, ["nope"], format="lerobot")
  vid = os.path.join(out, "videos", "chunk-000", "observation.image", "episode_000001.mp4")
  lerobot.encode_video(f["agentview_image"][:5], vid, 20)
  with pytest.raises(DatasetError, match=r"episode 1 \(demo_1\): key 'observation\.image': "
                                         r"video episode_000001\.mp4 has 5 frames, the episode "
                                         r"has 12"):
    sources.load_episodes(out, ["agentview_image"], format="lerobot")
  info_p = os.path.join(out, "meta", "info.json")
  info = json.load(open(info_p))
  info["codebase_version"] = "v3.0"
  json.dump(info, open(info_p, "w"))
  with pytest.raises(DatasetError, match="codebase_version='v3.0'"):
    sources.load_episodes(out, ["robot0_eef_pos"], format="lerobot")


LEROBOT_CHECK = r'''
import json, os, sys
os.environ.setdefault("HF_HUB_OFFLINE", "1"); os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
from lerobot.datasets.lerobot_dataset import LeRobotDataset
ds = LeRobotDataset("local/decoupled_jax_test", root=sys.argv[1], video_backend="pyav",
                    delta_timestamps={"observation.image": [-0.05, 0.0],
                                      "actions": [i / 20 for i in range(-1, 15)]})
x = ds[int(sys.argv[2])]
print(json.dumps({"len": len(ds), "episodes": ds.num_episodes, "fps": ds.fps,
                  "actions": x["actions"].tolist(), "eePose": x["observation.eePose"].tolist(),
                  "image": (x["observation.image"] * 255).round().tolist(),
                  "image_shape": list(x["observation.image"].shape), "task": x["task"]}))
'''


@pytest.mark.slow
def test_real_lerobot_package_reads_our_export(hdf5_file, tmp_path):
  """`LeRobotDataset` (lerobot 0.3.3, codebase v2.1) from a separate venv: set LEROBOT_PYTHON
  to its python (`python3 -m venv /tmp/lerobot-venv && /tmp/lerobot-venv/bin/pip install
  lerobot==0.3.3`)."""
  py = os.environ.get("LEROBOT_PYTHON", "")
  if not py or not os.path.exists(py):
    pytest.skip("LEROBOT_PYTHON (a python with lerobot==0.3.3) not set")
  out = str(tmp_path / "lerobot")
  export_robomimic(hdf5_file, out, to="lerobot", lerobot_version="v2.1")
  script = tmp_path / "check.py"
  script.write_text(LEROBOT_CHECK)
  ref = sources.load_episodes(hdf5_file, LOW_DIM + IMAGES)
  ours = sources.load_episodes(out, LOW_DIM + IMAGES, format="lerobot")
  idx = 8   # episode 1, frame 2
  env = dict(os.environ, HF_HOME=str(tmp_path / "hf"))
  r = subprocess.run([py, str(script), out, str(idx)], capture_output=True, text=True, env=env,
                     timeout=600)
  assert r.returncode == 0, r.stderr[-3000:]
  got = json.loads(r.stdout.strip().splitlines()[-1])
  assert got["len"] == 19 and got["episodes"] == 3 and got["fps"] == 20
  assert got["task"] == "lift the red cube"
  # actions window [-1, 15) frames around frame 2 of episode 1, clamped to the episode (6..14)
  want = ref.fields["actions"][np.clip(idx + np.arange(-1, 15), 6, 14)]
  np.testing.assert_array_equal(np.asarray(got["actions"], np.float32), want)
  np.testing.assert_array_equal(np.asarray(got["eePose"], np.float32), np.concatenate(
      [ref.fields[k][idx] for k in ("robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos")]))
  img = np.asarray(got["image"]).transpose(0, 2, 3, 1)        # (2, 84, 84, 3), frames 7 and 8
  assert got["image_shape"] == [2, 3, 84, 84]
  np.testing.assert_array_equal(img, ours.fields["agentview_image"][[idx - 1, idx]])


# ----------------------------------------------------------------------------- simulation
sim = pytest.mark.sim


@pytest.fixture(scope="module")
def robosuite_mod():
  return pytest.importorskip("robosuite")


@sim
def test_delta_goal_matches_robosuite_controller(robosuite_mod):
  """Our delta -> absolute formula equals robosuite 1.5's own OSC goal, world and base frames."""
  from scipy.spatial.transform import Rotation
  from decoupled_jax.sim import replay, robosuite_env as rse
  with h5py.File(REAL_DEMO, "r") as f:
    states = f["data/demo_1/states"][()]
  rng = np.random.default_rng(0)
  for frame in ("world", "base"):
    cfg = rse.absolute_osc_controller_config()
    cfg["body_parts"]["right"].update(input_type="delta", input_ref_frame=frame)
    env = robosuite_mod.make("Lift", robots=["Panda"], controller_configs=cfg,
                             has_renderer=False, has_offscreen_renderer=False,
                             use_camera_obs=False, ignore_done=True)
    try:
      env.reset()
      ctrl = env.robots[0].part_controllers["right"]
      scaling = replay.DeltaScaling.from_config(cfg["body_parts"]["right"])
      for t in range(0, len(states), 60):
        env.sim.set_state_from_flattened(states[t])
        env.sim.forward()
        env.robots[0].composite_controller.update_state()
        ctrl.update(force=True)
        a = np.concatenate([rng.uniform(-1.3, 1.3, 6), [1.0]])   # includes clipped inputs
        ctrl.reset_goal()
        ctrl.set_goal(a[:6])
        gp, gr = np.array(ctrl.goal_pos), np.array(ctrl.goal_ori)
        if frame == "base":
          gp, gr = ctrl.origin_pos + ctrl.origin_ori @ gp, ctrl.origin_ori @ gr
        p, r = replay.site_pose(env)
        ro = replay.origin_rot(env)[None] if frame == "base" else None
        ours = replay.delta_to_absolute(a[None], p[None], r[None], scaling, ro)[0]
        np.testing.assert_allclose(ours[:3], gp, atol=1e-12)
        assert Rotation.from_matrix(Rotation.from_rotvec(ours[3:6]).as_matrix().T @ gr
                                    ).magnitude() < 1e-6
        assert ours[6] == 1.0
        back, clipped = replay.absolute_to_delta(ours[None], p[None], r[None], scaling, ro)
        np.testing.assert_allclose(back[0, :6], np.clip(a[:6], -1, 1), atol=1e-9)
        assert not clipped.any()
    finally:
      env.close()


@pytest.fixture(scope="module")
def real_converted(robosuite_mod, tmp_path_factory):
  from decoupled_jax.sim import replay
  out = str(tmp_path_factory.mktemp("real") / "lift_human_abs.hdf5")
  summary = replay.convert_file(REAL_DEMO, out, to="absolute", progress=False)
  return out, summary


@sim
def test_real_human_demos_delta_to_absolute(real_converted):
  """REAL teleoperated robosuite-1.4 demos: relabelled absolute actions replayed open loop by
  our absolute controller follow the recorded trajectory and lift the cube like the originals."""
  out, s = real_converted
  assert s["source_action_convention"] == "delta" and s["demos"] == 3
  print("\nreal human demos, open-loop replay of converted actions:", json.dumps(s["open_loop"]))
  for name, r in s["per_demo"].items():
    print(f"  {name}: mean {r['pos_err_mean_mm']:.2f} mm, max {r['pos_err_max_mm']:.2f} mm, "
          f"rot max {r['rot_err_max_deg']:.2f} deg, success {r['success']}")
    assert r["source_success"] and r["success"], name
    assert r["observations"] == "regenerated"
    assert r["pos_err_mean_mm"] < 1.5 and r["pos_err_max_mm"] < 8.0, r
    assert r["rot_err_max_deg"] < 5.0, r
  ep = sources.load_episodes(out, LOW_DIM)
  assert ep.attrs["demo_names"] == ["demo_1", "demo_2", "demo_3"]
  assert ep.num_frames == 482 + 510 + 392
  with h5py.File(out, "r") as f, h5py.File(REAL_DEMO, "r") as src:
    assert f["data"].attrs["action_convention"] == "absolute"
    env_args = json.loads(f["data"].attrs["env_args"])
    arm = env_args["env_kwargs"]["controller_configs"]["body_parts"]["right"]
    assert arm["input_type"] == "absolute" and arm["input_ref_frame"] == "world"
    prov = json.loads(f["data"].attrs["conversion"])
    assert prov["source_action_convention"] == "delta" and prov["to"] == "absolute"
    assert prov["source_env_args"]["env_kwargs"]["controller_configs"]["control_delta"] is True
    for k in ("source_file", "source_sha256", "date", "robosuite_version", "method"):
      assert prov[k], k
    for n in ("demo_1", "demo_2", "demo_3"):
      g = f["data"][n]
      np.testing.assert_array_equal(g["actions_delta"][()], src["data"][n]["actions"][()])
      np.testing.assert_array_equal(g["states"][()], src["data"][n]["states"][()])
      np.testing.assert_array_equal(g["actions"][:, 6], src["data"][n]["actions"][:, 6])
      assert g.attrs["model_file"] == src["data"][n].attrs["model_file"]
      assert g["rewards"].shape == (g.attrs["num_samples"],) and g["dones"][-1] == 1
      # regenerated observations agree with the states: eef_pos is the grip site
      a = g["actions"][()]
      p = g["obs/robot0_eef_pos"][()]
      assert np.abs(a[:-1, :3] - p[1:]).max() < 0.06    # targets lead the site by < 6 cm
  # stage-1 pairs read the converted file too
  from decoupled_jax.kinematics import demo_pairs
  assert demo_pairs.load_demo_pairs(out).num_frames == ep.num_frames


@sim
def test_real_human_demo_reader_refusal_and_scene(robosuite_mod, tmp_path):
  from decoupled_jax.sim import replay
  with pytest.raises(DatasetError) as e:
    sources.load_episodes(REAL_DEMO, LOW_DIM)
  msg = str(e.value)
  assert "data.attrs['env_info'].controller_configs.control_delta says delta" in msg
  assert f"--input={REAL_DEMO}" in msg and "--to=absolute" in msg
  # the recorded scene's cube (random size per demo) replaces ours
  r = replay.SceneReplayer("lift")
  try:
    with h5py.File(REAL_DEMO, "r") as f:
      xml = f["data/demo_1"].attrs["model_file"]
    assert r.load_scene(xml, "demo_1") == ["cube_g0", "cube_g0_vis"]
    gid = r.raw.sim.model.geom_name2id("cube_g0")
    np.testing.assert_allclose(r.raw.sim.model.geom_size[gid], [0.021066, 0.0202026, 0.0205654])
    with pytest.raises(DatasetError, match="attr model_file does not load"):
      r.load_scene("<mujoco><worldbody>", "x.hdf5: data/demo_1")
  finally:
    r.close()


@pytest.fixture(scope="module")
def generated(robosuite_mod, tmp_path_factory):
  from decoupled_jax.sim import demos
  root = str(tmp_path_factory.mktemp("gen"))
  demos.generate_task("lift", root, num_demos=2, num_workers=1, progress=False)
  return os.path.join(root, "Lift.hdf5")


@sim
def test_generated_demos_absolute_to_delta_and_back(generated, robosuite_mod, tmp_path):
  from decoupled_jax.sim import replay
  delta = str(tmp_path / "Lift_delta.hdf5")
  sd = replay.convert_file(generated, delta, to="delta", progress=False)
  assert sd["source_action_convention"] == "absolute"
  print("\ngenerated demos, recorded absolute actions replayed open loop:",
        json.dumps(sd["open_loop"]))
  assert sd["open_loop"]["success"] == 2 and sd["open_loop"]["source_success"] == 2
  with pytest.raises(DatasetError, match="DELTA"):
    sources.load_episodes(delta, LOW_DIM)
  # the delta file is a real robosuite delta dataset: robosuite's own delta controller replays it
  with h5py.File(delta, "r") as f:
    env_args = json.loads(f["data"].attrs["env_args"])
    cfg = env_args["env_kwargs"]["controller_configs"]
    d_states = f["data/demo_0/states"][()]
    d_actions = f["data/demo_0/actions"][()]
    clipped = [f["data"][n].attrs["delta_clipped_fraction"] for n in ("demo_0", "demo_1")]
  env = robosuite_mod.make("Lift", robots=["Panda"], controller_configs=cfg, has_renderer=False,
                           has_offscreen_renderer=False, use_camera_obs=False, ignore_done=True,
                           control_freq=20)
  try:
    env.reset()
    site = []
    for s in d_states:
      env.sim.set_state_from_flattened(s)
      env.sim.forward()
      site.append(replay.site_pose(env)[0])
    env.reset()
    env.sim.set_state_from_flattened(d_states[0])
    env.sim.forward()
    replay.refresh_controllers(env)     # else the first delta goal uses the reset pose
    replay.adopt_initial_joints(env)    # the episode's nullspace target, as when recorded
    err, success = [], False
    for t, a in enumerate(d_actions):
      env.step(a)
      success = success or env._check_success()
      if t + 1 < len(d_actions):
        err.append(np.linalg.norm(replay.site_pose(env)[0] - site[t + 1]))
  finally:
    env.close()
  print(f"\ngenerated demo_0 as delta, replayed by robosuite's delta controller: mean "
        f"{1000 * np.mean(err):.2f} mm, max {1000 * np.max(err):.2f} mm, success {success}; "
        f"clipped fractions {clipped}")
  assert success and 1000 * np.max(err) < 2.0
  back = str(tmp_path / "Lift_back.hdf5")
  sb = replay.convert_file(delta, back, to="absolute", progress=False)
  print("generated demos delta -> absolute, open loop:", json.dumps(sb["open_loop"]))
  assert sb["open_loop"]["success"] == 2 and sb["open_loop"]["pos_err_max_mm"] < 5.0
  with h5py.File(generated, "r") as f0, h5py.File(back, "r") as f1, h5py.File(delta, "r") as fd:
    for n in ("demo_0", "demo_1"):
      a0, a1 = f0["data"][n]["actions"][()], f1["data"][n]["actions"][()]
      # exact where the delta was inside the controller's input range
      d = fd["data"][n]["actions"][()]
      inside = (np.abs(d[:, :6]) < 1 - 1e-9).all(-1)
      assert inside.mean() > 0.8
      np.testing.assert_allclose(a1[inside], a0[inside], atol=1e-9)
      np.testing.assert_array_equal(fd["data"][n]["actions_absolute"][()], a0)
  assert sources.load_episodes(back, LOW_DIM).num_episodes == 2


@sim
def test_images_regenerated_from_states_match_the_env(robosuite_mod):
  """Observations rebuilt from a state equal what our env reports at that state (images in
  robosuite's default vertically flipped convention). Compared at reset states: after `step`
  robosuite samples its observables at 20 Hz inside the 25 physics substeps, so step
  observations can lag the final state by one substep (see test_convert_dataset_binary)."""
  from decoupled_jax.sim import replay, robosuite_env as rse
  env = rse.make_env("lift", use_images=True)
  recorded = []
  try:
    for seed in (3, 4):
      obs = env.reset(seed)
      recorded.append((obs, env.get_state(), env.env.sim.model.get_xml()))
  finally:
    env.close()   # one rendering env at a time: a scene reload recreates the GL context
  r = replay.SceneReplayer("lift", images=True)
  try:
    for obs, state, xml in recorded:
      # the cube's size is drawn when a model is built: take the env's scene (transplant)
      r.load_scene(xml, "t")
      r.set_state(state, "t")
      got = r.observation()
      for k in LOW_DIM:
        np.testing.assert_allclose(got[k], obs[k], atol=1e-6, err_msg=k)   # float32 quats
      for k in IMAGES:
        assert got[k].shape == (84, 84, 3) and got[k].dtype == np.uint8
        d = np.abs(got[k].astype(int) - obs[k].astype(int))
        # software GL: a few pixels may differ by one level; the flipped image would not match
        assert d.max() <= 2 and (d > 0).mean() < 0.01, (k, d.max(), (d > 0).mean())
        assert np.abs(got[k][::-1].astype(int) - obs[k].astype(int)).mean() > 5 * d.mean() + 1
      assert got["agentview_image"].std() > 1.0
  finally:
    r.close()


@sim
def test_conversion_bad_inputs_and_resume(generated, robosuite_mod, tmp_path, monkeypatch):
  from decoupled_jax.sim import replay

  def corrupt(name, fn):
    p = str(tmp_path / name)
    shutil.copy(generated, p)
    with h5py.File(p, "r+") as f:
      fn(f)
    return p

  def short_states(f):
    s = f["data/demo_1/states"][()]
    del f["data/demo_1/states"]
    f["data/demo_1/states"] = s[:, :-2]
  p = corrupt("short.hdf5", short_states)
  with pytest.raises(DatasetError, match=r"short\.hdf5: data/demo_1: \d+-D states, but Lift here "
                                         r"has \d+-D states"):
    replay.convert_file(p, str(tmp_path / "o1.hdf5"), progress=False, check=False)
  p = corrupt("model.hdf5", lambda f: f["data/demo_0"].attrs.__setitem__("model_file", "<mj"))
  with pytest.raises(DatasetError, match=r"model\.hdf5: data/demo_0: attr model_file does not "
                                         r"load"):
    replay.convert_file(p, str(tmp_path / "o2.hdf5"), progress=False, check=False)

  def unknown(f):
    f["data"].attrs["env_args"] = json.dumps({"env_name": "Lift"})
    del f["data"].attrs["action_convention"]
  p = corrupt("unknown.hdf5", unknown)
  with pytest.raises(DatasetError, match=r"missing key 'env_args\.env_kwargs\.controller_configs'"):
    replay.convert_file(p, str(tmp_path / "o3.hdf5"), progress=False)
  p = corrupt("task.hdf5", lambda f: f["data"].attrs.__setitem__(
      "env_args", json.dumps(dict(V14_DELTA, env_name="Coffee_D2"))))
  with pytest.raises(DatasetError, match=r"env_name='Coffee_D2' is not a task"):
    replay.convert_file(p, str(tmp_path / "o4.hdf5"), progress=False)
  p = corrupt("nostates.hdf5", lambda f: f["data/demo_0"].__delitem__("states"))
  with pytest.raises(DatasetError, match=r"nostates\.hdf5: data/demo_0: missing key 'states'"):
    replay.convert_file(p, str(tmp_path / "o5.hdf5"), progress=False)

  # resumable per demo: a crash in demo_1 keeps demo_0's shard, the rerun converts only demo_1
  out = str(tmp_path / "resume.hdf5")
  seen = []
  real = replay.scan_states

  def crash_on_second(rp, states, where, **kw):
    seen.append(where)
    if len(seen) == 2:
      raise _Crash
    return real(rp, states, where, **kw)
  monkeypatch.setattr(replay, "scan_states", crash_on_second)
  with pytest.raises(_Crash):
    replay.convert_file(generated, out, to="delta", progress=False, check=False)
  assert os.path.exists(out + ".shards/demo_0.hdf5") and not os.path.exists(out)
  seen.clear()
  monkeypatch.setattr(replay, "scan_states", lambda *a, **kw: (seen.append(a[2]), real(*a, **kw))[1])
  s = replay.convert_file(generated, out, to="delta", progress=False, check=False)
  assert len(seen) == 1 and seen[0].endswith("data/demo_1") and s["demos"] == 2
  assert os.path.exists(out) and not os.path.exists(out + ".shards")
  seen.clear()
  assert replay.convert_file(generated, out, to="delta", progress=False, check=False)["demos"] == 2
  assert not seen                                    # done before: nothing redone


@sim
def test_convert_dataset_binary(generated, tmp_path):
  """The thin binary: --to=absolute on a states-only file (robosuite collection layout without
  obs), then --to=rlds and --to=lerobot from the result."""
  states_only = str(tmp_path / "states_only.hdf5")
  with h5py.File(generated, "r") as src, h5py.File(states_only, "w") as f:
    env_args = json.loads(src["data"].attrs["env_args"])
    f.create_group("data")
    f["data"].attrs["env"] = "Lift"
    f["data"].attrs["env_info"] = json.dumps({
        "env_name": "Lift", "robots": "Panda",
        "controller_configs": env_args["env_kwargs"]["controller_configs"]})
    for n in ("demo_0",):
      g = f.create_group(f"data/{n}")
      g["states"] = src["data"][n]["states"][()]
      g["actions"] = src["data"][n]["actions"][()]
  with pytest.raises(DatasetError, match=r"no observations.*convert_dataset\.py"):
    export_robomimic(states_only, str(tmp_path / "x"), to="rlds")
  binary = os.path.join(REPO, "experiments", "convert_dataset.py")

  def run(*args):
    return subprocess.run([sys.executable, binary, *args, "--noprogress"], capture_output=True,
                          text=True, timeout=600, cwd=REPO)
  out = str(tmp_path / "abs.hdf5")
  r = run(f"--input={states_only}", f"--output={out}", "--to=absolute")
  assert r.returncode == 0, r.stderr[-2000:]
  assert "success 1/1" in r.stdout
  ep = sources.load_episodes(out, LOW_DIM)
  ref = sources.load_episodes(generated, LOW_DIM, filter_key=None)
  n0 = int(ref.episode_ends[0])
  # observations regenerated from the states = the ones recorded live, up to robosuite's
  # observable sampling inside a control step (live step observations can lag the recorded
  # state by one 2 ms physics substep: measured <= 1 mm, <= 3e-3 rad); the first frame (a
  # reset observation) is exact
  for k in LOW_DIM:
    np.testing.assert_allclose(ep.fields[k][0], ref.fields[k][0], atol=1e-6, err_msg=k)
    np.testing.assert_allclose(ep.fields[k], ref.fields[k][:n0], atol=5e-3, err_msg=k)
  np.testing.assert_array_equal(ep.fields["actions"], ref.fields["actions"][:n0])
  r = run(f"--input={out}", f"--output={tmp_path / 'rl'}", "--to=rlds")
  assert r.returncode == 0, r.stderr[-2000:]
  _assert_same(ep, sources.load_episodes(str(tmp_path / "rl"), LOW_DIM, format="rlds"))
  r = run(f"--input={out}", f"--output={tmp_path / 'le'}", "--to=lerobot")
  assert r.returncode == 0, r.stderr[-2000:]
  _assert_same(ep, sources.load_episodes(str(tmp_path / "le"), LOW_DIM, format="lerobot"))
  bad = run(f"--input={REAL_DEMO}", f"--output={tmp_path / 'r'}", "--to=rlds")
  assert bad.returncode == 2 and "DELTA" in bad.stderr
  assert bad.stderr.strip().splitlines()[-1].startswith("error: ")


@sim
def test_train_binary_on_real_demos_refuses_delta_and_trains_on_converted(real_converted, tmp_path):
  """The delta-action original is refused by experiments/train.py with the conversion command;
  the converted file trains."""
  out, _ = real_converted
  cfg = "--config=" + os.path.join(REPO, "configs/train.py") + ":mode=normal,debug"
  proc = run_binary("train.py", cfg, f"--config.data.dataset={REAL_DEMO}",
                    "--config.eval.num_episodes=0", f"--workdir={tmp_path / 'delta'}",
                    expect_ok=False)
  line = assert_one_line_error(proc)
  assert "delta" in line and "experiments/convert_dataset.py" in line and "--to=absolute" in line
  run_binary("train.py", cfg, f"--config.data.dataset={out}", "--config.eval.num_episodes=0",
             f"--workdir={tmp_path / 'abs'}")
  s = json.load(open(tmp_path / "abs" / "summary.json"))
  assert s["task"] == "Lift" and s["steps"] == 3


def test_lazy_images_give_the_same_windows_as_loaded_ones(tmp_path):
  """config.data.lazy_images: frames read from the HDF5 file on demand (datasets larger than
  RAM) give exactly the windows of the in-memory path, also through a pickle (env workers)."""
  import pickle
  from decoupled_jax.data.lazy import LazyFrames
  from decoupled_jax.data.windows import WindowSampler, prepare_policy_dataset
  rng = np.random.default_rng(0)
  demos = []
  for t in (9, 14, 6):
    demos.append({"actions": np.concatenate([rng.normal(size=(t, 6)), np.ones((t, 1))], -1),
                  "obs": {"agentview_image": rng.integers(0, 255, (t, 12, 12, 3), dtype=np.uint8),
                          "robot0_eef_pos": rng.normal(size=(t, 3))}})
  path = str(tmp_path / "img.hdf5")
  write_robomimic_hdf5(path, demos, {"env_name": "Lift", "type": 1, "env_kwargs": {}})
  keys = ("agentview_image", "robot0_eef_pos")
  eager = sources.load_episodes(path, keys)
  lazy = sources.load_episodes(path, keys, lazy_images=True)
  assert isinstance(lazy.fields["agentview_image"], LazyFrames)
  assert lazy.fields["agentview_image"].shape == eager.fields["agentview_image"].shape
  samplers = [WindowSampler(prepare_policy_dataset(e, keys), n_obs_steps=2, horizon=4,
                            n_action_steps=2, obs_keys=keys) for e in (eager, lazy)]
  pos = rng.integers(0, len(samplers[0]), 64)
  a, b = (s.get_batch(pos) for s in samplers)
  np.testing.assert_array_equal(a["obs"]["agentview_image"], b["obs"]["agentview_image"])
  np.testing.assert_array_equal(a["actions"], b["actions"])
  frames = pickle.loads(pickle.dumps(lazy.fields["agentview_image"]))
  np.testing.assert_array_equal(frames[[3, 0, 3, 28]], eager.fields["agentview_image"][[3, 0, 3, 28]])
  with pytest.raises(IndexError):
    frames[[29]]
