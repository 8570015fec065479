"""LeRobot v3.0 (data/lerobot.py) and conversion between every format (sources.convert,
experiments/convert_dataset.py): our v3.0 writer -> reader bit-exact over several data files
and chunks, mp4 within codec loss, resumable exports, the v2.1 reader, datasets written by
LeRobot 0.6.1 itself (tests/data/lerobot_0.6.1_v3), the converter binary (hdf5 -> lerobot ->
hdf5 bit for bit), --assume_actions, and `--config.data.key_map.<key>=` from the command line.

Slow (`-m slow`, the real `lerobot` package from `make lerobot-env`, or LEROBOT_V3_PYTHON):
LeRobot's `LeRobotDataset` reads our v3.0 exports with identical values, and we read a dataset
written by LeRobot's own `LeRobotDataset.create` + `add_frame` + `save_episode` + `finalize`.
"""
import glob
import json
import os
import subprocess

import h5py
import numpy as np
import pytest

from decoupled_jax.data import lerobot, sources
from decoupled_jax.data import robomimic_hdf5 as rh
from decoupled_jax.data.episodes import EpisodeData
from decoupled_jax.data.robomimic_hdf5 import DatasetError
from helpers import OUR_ENV_ARGS as OURS
from helpers import REPO, run_binary, write_robomimic_hdf5

FIXTURES = os.path.join(REPO, "tests", "data", "lerobot_0.6.1_v3")
LOW_DIM = ["robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos", "robot0_joint_pos",
           "object"]
CAMERAS = ["agentview_image", "robot0_eye_in_hand_image"]
LEROBOT_PY = os.environ.get("LEROBOT_V3_PYTHON",
                            os.path.join(REPO, ".venv-lerobot", "bin", "python"))


class _Crash(Exception):
  """A simulated interruption."""


def _frames(n, size, offset=0):
  """Smooth rendered-like frames (gradients + a moving square), as video codecs expect."""
  yy, xx = np.mgrid[0:size, 0:size]
  out = []
  for i in range(n):
    im = np.stack([xx * 200 // size + 30, yy * 200 // size + 20, np.full_like(xx, 120)], -1)
    j = (i + offset) % (size // 2)
    im[j:j + size // 4, size // 3:size // 3 + size // 4] = (200, 30, 30)
    out.append(im.clip(0, 255).astype(np.uint8))
  return np.stack(out)


def _demos(lengths=(6, 9, 4, 7, 5), size=32, cameras=CAMERAS, seed=0):
  """robomimic-layout demos: float64 low-dim (as MimicGen files), one float32 field, uint8
  cameras, rewards and dones."""
  rng = np.random.default_rng(seed)
  out = []
  for i, t in enumerate(lengths):
    obs = {"robot0_eef_pos": rng.normal(size=(t, 3)),
           "robot0_eef_quat": rng.normal(size=(t, 4)).astype(np.float32),
           "robot0_gripper_qpos": rng.normal(size=(t, 2)),
           "robot0_joint_pos": rng.normal(size=(t, 7)), "object": rng.normal(size=(t, 10))}
    for c, k in enumerate(cameras):
      obs[k] = _frames(t, size, offset=7 * i + 3 * c)
    out.append({"actions": rng.normal(size=(t, 7)), "rewards": rng.normal(size=t),
                "dones": (np.arange(t) == t - 1).astype(np.int64), "obs": obs})
  return out


def _episode_data(demos, env_args=OURS) -> EpisodeData:
  keys = list(demos[0]["obs"])
  fields = {k: np.concatenate([d["obs"][k] for d in demos]) for k in keys}
  for k in ("actions", "rewards", "dones"):
    fields[k] = np.concatenate([d[k] for d in demos])
  return EpisodeData(fields, np.cumsum([len(d["actions"]) for d in demos]),
                     attrs={"env_args": env_args, "action_convention": "absolute",
                            "demo_names": [f"demo_{i}" for i in range(len(demos))]})


def _assert_fields_equal(a: EpisodeData, b: EpisodeData, keys=None, dtype=True):
  keys = keys or sorted(a.fields)
  assert sorted(b.fields) == sorted(keys) or set(keys) <= set(b.fields), (sorted(a.fields),
                                                                          sorted(b.fields))
  for k in keys:
    if dtype:
      assert a.fields[k].dtype == b.fields[k].dtype, (k, a.fields[k].dtype, b.fields[k].dtype)
    np.testing.assert_array_equal(a.fields[k], b.fields[k], err_msg=k)
  np.testing.assert_array_equal(a.episode_ends, b.episode_ends)


def _episodes_meta(root):
  import pyarrow.parquet as pq
  rows = []
  for p in sorted(glob.glob(os.path.join(root, "meta", "episodes", "*", "*.parquet"))):
    rows += pq.read_table(p).to_pylist()
  return sorted(rows, key=lambda r: r["episode_index"])


# ----------------------------------------------------------------------------- v3.0 round trips
def test_v3_round_trip_bit_exact_over_data_files_and_chunks(tmp_path, monkeypatch):
  ep = _episode_data(_demos())
  masks = {"train": ["demo_0", "demo_2", "demo_4"], "valid": ["demo_1", "demo_3"]}
  out = str(tmp_path / "le")
  # stop once every episode is written on its own (an interruption), to size the files
  real_group = lerobot._group_by_size

  def crash(*a, **kw):
    raise _Crash
  monkeypatch.setattr(lerobot, "_group_by_size", crash)
  with pytest.raises(_Crash):
    lerobot.export_lerobot_v3(ep, out, images="png", masks=masks)
  monkeypatch.setattr(lerobot, "_group_by_size", real_group)
  sizes = [os.path.getsize(p) for p in sorted(glob.glob(
      os.path.join(out + ".incomplete", ".episodes", "*.parquet")))]
  assert len(sizes) == 5
  # data files of at most the first two episodes' size, 2 files per chunk directory
  lerobot.export_lerobot_v3(ep, out, images="png", masks=masks, chunks_size=2,
                            data_files_size_in_mb=(sizes[0] + sizes[1]) / 2 ** 20)
  files = sorted(os.path.relpath(p, out) for p in glob.glob(os.path.join(out, "data", "*", "*")))
  assert files == ["data/chunk-000/file-000.parquet", "data/chunk-000/file-001.parquet",
                   "data/chunk-001/file-000.parquet"], files
  assert not os.path.exists(out + ".incomplete")
  info = json.load(open(os.path.join(out, "meta", "info.json")))
  assert info["codebase_version"] == "v3.0" and info["chunks_size"] == 2 and info["fps"] == 20
  assert info["total_episodes"] == 5 and info["total_frames"] == 31 and info["total_tasks"] == 1
  assert info["data_path"] == "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
  feats = info["features"]
  assert feats["action"]["shape"] == [7] and feats["action"]["dtype"] == "float64"
  assert feats["observation.state"]["shape"] == [9]
  assert feats["observation.state"]["names"][3:7] == ["qx", "qy", "qz", "qw"]
  assert feats["observation.images.agentview"]["dtype"] == "image"
  assert feats["observation.environment_state"]["shape"] == [10]
  assert feats["next.done"]["dtype"] == "bool"
  for k in ("timestamp", "frame_index", "episode_index", "index", "task_index"):
    assert k in feats
  rows = _episodes_meta(out)
  assert [r["length"] for r in rows] == [6, 9, 4, 7, 5]
  assert [(r["dataset_from_index"], r["dataset_to_index"]) for r in rows] == [
      (0, 6), (6, 15), (15, 19), (19, 26), (26, 31)]
  assert [(r["data/chunk_index"], r["data/file_index"]) for r in rows] == [
      (0, 0), (0, 0), (0, 1), (0, 1), (1, 0)]
  assert rows[0]["tasks"] == ["lift the red cube"] and "stats/action/q99" in rows[0]
  stats = json.load(open(os.path.join(out, "meta", "stats.json")))
  np.testing.assert_allclose(stats["action"]["mean"], ep.fields["actions"].mean(0))
  assert np.shape(stats["observation.images.agentview"]["mean"]) == (3, 1, 1)

  back = sources.read_all(out)                 # every field, bit for bit, dtypes kept
  _assert_fields_equal(ep, back)
  assert back.attrs["demo_names"] == ep.attrs["demo_names"] and back.attrs["masks"] == masks
  assert back.attrs["env_args"] == OURS and back.attrs["action_convention"] == "absolute"
  policy = sources.load_episodes(out, LOW_DIM + CAMERAS, format="lerobot")   # float32 view
  for k in LOW_DIM + CAMERAS + ["actions"]:
    want = ep.fields[k] if k in CAMERAS else ep.fields[k].astype(np.float32)
    np.testing.assert_array_equal(policy.fields[k], want, err_msg=k)
  valid = sources.load_episodes(out, LOW_DIM, format="lerobot", filter_key="valid")
  assert valid.attrs["demo_names"] == ["demo_1", "demo_3"]
  np.testing.assert_array_equal(valid.fields["actions"],
                                ep.fields["actions"][np.r_[6:15, 19:26]].astype(np.float32))
  assert sources.load_episodes(out, LOW_DIM, format="lerobot").attrs["key_map"][
      "robot0_gripper_qpos"] == "observation.state[7:9]"


def test_v3_video_concatenated_files_within_codec_loss_and_resume(tmp_path, monkeypatch):
  demos = _demos(lengths=(6, 9, 4, 7), cameras=["agentview_image"], size=64)
  ep = _episode_data(demos)
  out = str(tmp_path / "video")
  # interrupted after every episode was encoded, before the shared files were joined
  real_concat, real_encode = lerobot.concat_videos, lerobot.encode_video

  def crash(*a, **kw):
    raise _Crash
  monkeypatch.setattr(lerobot, "concat_videos", crash)
  with pytest.raises(_Crash):
    lerobot.export_lerobot_v3(ep, out)
  monkeypatch.setattr(lerobot, "concat_videos", real_concat)
  pieces = sorted(glob.glob(os.path.join(out + ".incomplete", ".episodes", "*.mp4")))
  assert len(pieces) == 4 and not os.path.exists(out)
  sizes = [os.path.getsize(p) for p in pieces]
  calls = []
  monkeypatch.setattr(lerobot, "encode_video",
                      lambda *a, **kw: (calls.append(a[1]), real_encode(*a, **kw))[1])
  # the resumed export re-encodes nothing; videos of 2 + 2 episodes, data in 2 files
  lerobot.export_lerobot_v3(ep, out, video_files_size_in_mb=(sizes[0] + sizes[1]) / 2 ** 20,
                            data_files_size_in_mb=1e-9, chunks_size=3)
  assert calls == []
  videos = sorted(os.path.relpath(p, out) for p in glob.glob(os.path.join(out, "videos", "**",
                                                                           "*.mp4"),
                                                            recursive=True))
  assert videos == ["videos/observation.images.agentview/chunk-000/file-000.mp4",
                    "videos/observation.images.agentview/chunk-000/file-001.mp4"], videos
  rows = _episodes_meta(out)
  key = "videos/observation.images.agentview"
  assert [(r[f"{key}/file_index"], r[f"{key}/from_timestamp"], r[f"{key}/to_timestamp"])
          for r in rows] == [(0, 0.0, 0.3), (0, 0.3, 0.75), (1, 0.0, 0.2), (1, 0.2, 0.55)]
  assert [(r["data/chunk_index"], r["data/file_index"]) for r in rows] == [
      (0, 0), (0, 1), (0, 2), (1, 0)]
  first = lerobot.decode_video(os.path.join(out, videos[0]))
  assert len(first) == 15                 # the two episodes' frames back to back
  info = json.load(open(os.path.join(out, "meta", "info.json")))
  vi = info["features"]["observation.images.agentview"]["info"]
  assert vi["video.codec"] == "h264" and vi["video.fps"] == 20 and vi["is_depth_map"] is False
  back = sources.read_all(out)
  _assert_fields_equal(ep, back, keys=[k for k in ep.fields if k != "agentview_image"])
  err = np.abs(back.fields["agentview_image"].astype(int) - ep.fields["agentview_image"])
  assert err.mean() <= 3.0, err.mean()    # lossy H.264 (crf 18): the documented tolerance
  # errors name the directory, episode and key
  os.remove(os.path.join(out, videos[1]))
  with pytest.raises(DatasetError, match=r"video: episode 2 \(demo_2\): key "
                                         r"'observation\.images\.agentview': video file "):
    sources.load_episodes(out, ["agentview_image"], format="lerobot")
  with pytest.raises(DatasetError, match=r"meta/info\.json: missing key 'observation\.nope'"):
    sources.load_episodes(out, ["nope"], format="lerobot")


def test_v21_still_read_and_converted_to_v3(tmp_path):
  ep = _episode_data(_demos(lengths=(5, 8, 3), cameras=["agentview_image"]))
  v21 = lerobot.export_lerobot(ep, str(tmp_path / "v21"), images="png")
  assert json.load(open(os.path.join(v21, "meta", "info.json")))["codebase_version"] == "v2.1"
  keys = LOW_DIM + ["agentview_image"]
  a = sources.load_episodes(v21, keys, format="lerobot")
  for k in keys + ["actions"]:
    want = ep.fields[k] if k == "agentview_image" else ep.fields[k].astype(np.float32)
    np.testing.assert_array_equal(a.fields[k], want, err_msg=k)
  v3 = sources.convert(v21, str(tmp_path / "v3"), to="lerobot", images="png")
  assert json.load(open(os.path.join(v3, "meta", "info.json")))["codebase_version"] == "v3.0"
  b = sources.load_episodes(v3, keys, format="lerobot")
  _assert_fields_equal(a, b, keys=keys + ["actions"])
  assert b.attrs["demo_names"] == a.attrs["demo_names"] == ["demo_0", "demo_1", "demo_2"]


@pytest.mark.parametrize("storage", ["png", "video"])
def test_reads_datasets_written_by_lerobot(storage, tmp_path):
  """tests/data/lerobot_0.6.1_v3/<storage>: written by LeRobot 0.6.1's own writer
  (LEROBOT_WRITE below; AV1 video, two tasks); expected.npz holds the values it was given."""
  root = os.path.join(FIXTURES, storage)
  z = np.load(os.path.join(root, "expected.npz"))
  assert str(z["version"]) == "0.6.1"
  assert lerobot.columns_of(root)["robot0_gripper_qpos"] == "observation.state[7:9]"
  # LeRobot records no action convention: the caller vouches for it (or --assume_actions)
  with pytest.raises(DatasetError, match="--assume_actions=absolute"):
    sources.load_episodes(root, ["robot0_eef_pos"], format="lerobot")
  ep = sources.load_episodes(root, ["robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos",
                                    "agentview_image"], format="lerobot",
                             action_convention="absolute")
  np.testing.assert_array_equal(ep.episode_ends, np.cumsum(z["lengths"]))
  np.testing.assert_array_equal(ep.fields["actions"], z["action"])
  np.testing.assert_array_equal(np.concatenate([ep.fields[k] for k in (
      "robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos")], -1), z["state"])
  assert ep.attrs["tasks"] == ["task 0", "task 1", "task 0"]
  size = ep.fields["agentview_image"].shape[1]
  want = np.concatenate([_lerobot_fixture_frames(e, t, size) for e, t in enumerate(z["lengths"])])
  err = np.abs(ep.fields["agentview_image"].astype(int) - want)
  if storage == "png":
    assert err.max() == 0
  else:
    assert err.mean() <= 3.0, err.mean()   # LeRobot's AV1 (crf 30)
  # converted to our v3.0 (episodes, tasks and values kept)
  out = sources.convert(root, str(tmp_path / "ours"), to="lerobot", images="png",
                        assume_actions="absolute")
  again = sources.load_episodes(out, ["robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos",
                                      "agentview_image"], format="lerobot")
  _assert_fields_equal(ep, again, keys=list(ep.fields))
  assert again.attrs["tasks"] == ["task 0", "task 1", "task 0"]


def _lerobot_fixture_frames(ep, t, size):
  yy, xx = np.mgrid[0:size, 0:size]
  return np.stack([np.stack([xx * 255 // size, yy * 255 // size,
                             np.full_like(xx, 40 * ep + 10 * i)], -1).astype(np.uint8)
                   for i in range(t)])


# ----------------------------------------------------------------------------- converter
def _binary(name, *args):
  return run_binary(name, *args, expect_ok=False)


def _hdf5_tree(path):
  out = {}
  with h5py.File(path, "r") as f:
    def visit(name, obj):
      if isinstance(obj, h5py.Dataset):
        out[name] = obj[()]
    f.visititems(visit)
    attrs = {k: f["data"].attrs[k] for k in f["data"].attrs}
  return out, attrs


def test_converter_binary_hdf5_lerobot_hdf5_bit_exact(tmp_path):
  src = str(tmp_path / "Lift.hdf5")
  write_robomimic_hdf5(src, _demos(lengths=(6, 9, 4)), OURS,
                          masks={"train": ["demo_0", "demo_2"], "valid": ["demo_1"]})
  le, back = str(tmp_path / "le"), str(tmp_path / "back.hdf5")
  r = _binary("convert_dataset.py", f"--input={src}", f"--output={le}", "--to=lerobot",
              "--lerobot_images=png", "--noprogress")
  assert r.returncode == 0, r.stderr[-3000:]
  r = _binary("convert_dataset.py", f"--input={le}", f"--output={back}", "--to=hdf5",
              "--noprogress")
  assert r.returncode == 0, r.stderr[-3000:]
  a, a_attrs = _hdf5_tree(src)
  b, b_attrs = _hdf5_tree(back)
  assert sorted(a) == sorted(b)
  for k in a:
    assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)
  assert json.loads(b_attrs["env_args"]) == OURS and b_attrs["action_convention"] == "absolute"
  assert int(b_attrs["total"]) == 19
  # the same through RLDS (float32 by design): what the policy reads is identical
  rl = sources.convert(le, str(tmp_path / "rl"), to="rlds")
  keys = LOW_DIM + CAMERAS
  _assert_fields_equal(sources.load_episodes(src, keys),
                       sources.load_episodes(rl, keys, format="rlds"), keys=keys + ["actions"])
  assert sources.load_episodes(rl, keys, format="rlds", filter_key="valid").attrs[
      "demo_names"] == ["demo_1"]
  # an existing output is refused in one line
  r = _binary("convert_dataset.py", f"--input={le}", f"--output={back}", "--to=hdf5")
  assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith("error: ")
  assert "exists" in r.stderr and "Traceback" not in r.stderr


def test_assume_actions(tmp_path):
  unknown = str(tmp_path / "unknown.hdf5")
  write_robomimic_hdf5(unknown, _demos(lengths=(5, 6), cameras=()), {"env_name": "Lift"})
  with h5py.File(unknown, "r+") as f:
    del f["data"].attrs["action_convention"]
  # the refusal names the flag (no file to edit by hand)
  with pytest.raises(DatasetError, match=r"cannot tell absolute from delta actions: missing "
                                         r"key.*--to=hdf5 --assume_actions=absolute") as e:
    sources.load_episodes(unknown, LOW_DIM)
  assert "\n" not in str(e.value) and "--assume_actions=delta" in str(e.value)
  r = _binary("convert_dataset.py", f"--input={unknown}", f"--output={tmp_path / 'x'}",
              "--to=lerobot")
  assert r.returncode == 2 and "--assume_actions=absolute" in r.stderr.splitlines()[-1]
  # declared absolute: the copy says so and trains without vouching
  le = str(tmp_path / "le")
  r = _binary("convert_dataset.py", f"--input={unknown}", f"--output={le}", "--to=lerobot",
              "--assume_actions=absolute", "--noprogress")
  assert r.returncode == 0, r.stderr[-3000:]
  ep = sources.load_episodes(le, LOW_DIM, format="lerobot")
  assert ep.attrs["action_convention"] == "absolute" and ep.num_episodes == 2
  h = sources.convert(unknown, str(tmp_path / "abs.hdf5"), to="hdf5", assume_actions="absolute")
  assert sources.load_episodes(h, LOW_DIM).attrs["action_convention"] == "absolute"
  # declared delta: HDF5 keeps it (for --to=absolute); the policy formats refuse it
  d = sources.convert(unknown, str(tmp_path / "delta.hdf5"), to="hdf5", assume_actions="delta")
  with pytest.raises(DatasetError, match="DELTA"):
    sources.load_episodes(d, LOW_DIM)
  with pytest.raises(DatasetError, match=r"DELTA.*--to=absolute"):
    sources.convert(unknown, str(tmp_path / "d_le"), to="lerobot", assume_actions="delta")
  # data that says its convention is never overridden
  with pytest.raises(DatasetError, match="says its actions are delta; --assume_actions="
                                         "absolute is only for data that does not say"):
    sources.convert(d, str(tmp_path / "y.hdf5"), to="hdf5", assume_actions="absolute")


# ----------------------------------------------------------------------------- key_map flags
def test_key_map_from_the_command_line(tmp_path):
  from absl import flags
  from ml_collections import config_flags

  from decoupled_jax import config_lib
  # a file with LIBERO-style names, read through --config.data.key_map.<policy key>=...
  path = str(tmp_path / "renamed.hdf5")
  demos = _demos(lengths=(5, 6), cameras=())
  for d in demos:
    d["obs"]["ee_pos"] = d["obs"].pop("robot0_eef_pos")
  write_robomimic_hdf5(path, demos, OURS)
  def parse(*args):
    argv = ["prog", *args]
    fv = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "", flag_values=fv, lock_config=True,
                                    sys_argv=argv)
    fv(argv)
    return fv
  fv = parse(f"--config={REPO}/configs/train.py:mode=normal,debug",
             "--config.data.key_map.robot0_eef_pos=ee_pos", f"--config.data.dataset={path}")
  c = fv.config
  assert c.data.key_map.robot0_eef_pos == "ee_pos" and c.data.key_map.actions == ""
  assert c.data.key_map.to_dict() == {"robot0_eef_pos": "ee_pos"}    # '' = the default
  assert set(config_lib.KEY_MAP_KEYS) == set(c.data.key_map.keys())
  config_lib.validate(c, num_devices=1)
  ep = sources.load_episodes(path, list(c.data.lowdim_keys), key_map=c.data.key_map.to_dict())
  np.testing.assert_array_equal(ep.fields["robot0_eef_pos"],
                                np.concatenate([d["obs"]["ee_pos"] for d in demos]).astype(
                                    np.float32))
  # an unknown key: one line, no traceback (in-process, and through the real binary)
  with pytest.raises(flags.Error, match=r"config\.data\.key_map: 'bogus' is not a policy key"):
    parse(f"--config={REPO}/configs/train.py:debug", "--config.data.key_map.bogus=x")
  cfg = f"--config={REPO}/configs/train.py:mode=normal,debug"
  r = _binary("train.py", cfg, "--config.data.key_map.bogus=x", f"--workdir={tmp_path / 'w'}")
  assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr[-3000:]
  assert "config.data.key_map: 'bogus' is not a policy key; known: [" in r.stderr
  # a known key is accepted by the binary (it stops later, at the missing dataset)
  r = _binary("train.py", cfg, "--config.data.key_map.agentview_image=agentview_rgb",
              "--config.data.dataset=/nonexistent/demos.hdf5", f"--workdir={tmp_path / 'w'}")
  assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-3000:]
  assert r.stderr.strip().splitlines()[-1] == (
      "error: config.data.dataset: /nonexistent/demos.hdf5 does not exist")
  c.unlock()            # a config file that sets a plain dict: checked by validate()
  c.data.key_map = {"bogus": "x"}
  with pytest.raises(config_lib.ConfigError, match=r"config\.data\.key_map\.bogus: not a "
                                                   r"policy key"):
    config_lib.validate(c, num_devices=1)


# ----------------------------------------------------------------------------- real LeRobot
LEROBOT_READ = r'''
import json, os, sys
os.environ["HF_HUB_OFFLINE"] = "1"; os.environ["HF_DATASETS_OFFLINE"] = "1"
import numpy as np
import lerobot
from lerobot.datasets.lerobot_dataset import LeRobotDataset
out = {"version": lerobot.__version__}
for name in sys.argv[2:]:
  ds = LeRobotDataset("local/decoupled_jax_" + name, root=os.path.join(sys.argv[1], name),
                      video_backend="pyav")
  items = [ds[i] for i in range(len(ds))]
  cams = ds.meta.camera_keys
  np.savez(os.path.join(sys.argv[1], name + ".npz"),
           action=np.stack([x["action"].numpy() for x in items]),
           state=np.stack([x["observation.state"].numpy() for x in items]),
           episode=np.array([int(x["episode_index"]) for x in items]),
           **{c: np.stack([(x[c].numpy() * 255).round().astype(np.uint8).transpose(1, 2, 0)
                           for x in items]) for c in cams})
  out[name] = {"len": len(ds), "episodes": ds.num_episodes, "fps": ds.fps, "cameras": cams,
               "task": items[0]["task"]}
print(json.dumps(out))
'''

# How tests/data/lerobot_0.6.1_v3 was made (and what the slow test runs): LeRobot's own writer.
LEROBOT_WRITE = r'''
import os, sys
os.environ["HF_HUB_OFFLINE"] = "1"; os.environ["HF_DATASETS_OFFLINE"] = "1"
import numpy as np
import lerobot
from lerobot.datasets.lerobot_dataset import LeRobotDataset
root, mode, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
names = ["x", "y", "z", "qx", "qy", "qz", "qw", "gripper_left", "gripper_right"]
feats = {"action": {"dtype": "float32", "shape": (7,),
                    "names": ["x", "y", "z", "ax", "ay", "az", "gripper"]},
         "observation.state": {"dtype": "float32", "shape": (9,), "names": names},
         "observation.images.agentview": {"dtype": mode, "shape": (size, size, 3),
                                          "names": ["height", "width", "channels"]}}
ds = LeRobotDataset.create("local/written_by_lerobot", fps=20, features=feats, root=root,
                           robot_type="panda", use_videos=mode == "video")
rng = np.random.default_rng(0)
yy, xx = np.mgrid[0:size, 0:size]
out = {"action": [], "state": [], "lengths": []}
for ep, t in enumerate([5, 7, 4]):
  for i in range(t):
    img = np.stack([xx * 255 // size, yy * 255 // size, np.full_like(xx, 40 * ep + 10 * i)],
                   -1).astype(np.uint8)
    a, s = rng.normal(size=7).astype(np.float32), rng.normal(size=9).astype(np.float32)
    ds.add_frame({"action": a, "observation.state": s, "observation.images.agentview": img,
                  "task": f"task {ep % 2}"})
    out["action"].append(a)
    out["state"].append(s)
  out["lengths"].append(t)
  ds.save_episode()
ds.finalize()
np.savez_compressed(os.path.join(root, "expected.npz"), action=np.stack(out["action"]),
                    state=np.stack(out["state"]), lengths=np.array(out["lengths"]),
                    version=lerobot.__version__)
print("lerobot", lerobot.__version__)
'''


def _lerobot_python():
  if not os.path.exists(LEROBOT_PY):
    pytest.skip(f"{LEROBOT_PY} missing: `make lerobot-env` (or set LEROBOT_V3_PYTHON to a "
                "python with lerobot >= 0.4)")
  return LEROBOT_PY


def _run_lerobot(script_text, tmp_path, *args):
  script = tmp_path / "script.py"
  script.write_text(script_text)
  env = dict(os.environ, HF_HOME=str(tmp_path / "hf"), HF_HUB_OFFLINE="1",
             HF_DATASETS_OFFLINE="1", HF_LEROBOT_HOME=str(tmp_path / "lerobot_home"))
  r = subprocess.run([_lerobot_python(), str(script), *args], capture_output=True, text=True,
                     env=env, timeout=900)
  assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
  return r.stdout.strip().splitlines()[-1]


@pytest.mark.slow
def test_real_lerobot_reads_our_v3_exports(tmp_path):
  demos = _demos(lengths=(6, 9, 4, 7, 5), cameras=["agentview_image"], size=64)
  ep = _episode_data(demos)
  root = tmp_path / "exports"
  lerobot.export_lerobot_v3(ep, str(root / "png"), images="png", chunks_size=2,
                            data_files_size_in_mb=0.02)
  lerobot.export_lerobot_v3(ep, str(root / "video"), chunks_size=2, data_files_size_in_mb=0.005,
                            video_files_size_in_mb=0.01)
  for name in ("png", "video"):   # several data (and video) files, as the layout allows
    assert len(glob.glob(str(root / name / "data" / "*" / "*.parquet"))) >= 2
  assert len(glob.glob(str(root / "video" / "videos" / "*" / "*" / "*.mp4"))) >= 2
  got = json.loads(_run_lerobot(LEROBOT_READ, tmp_path, str(root), "png", "video"))
  ours_state = np.concatenate([ep.fields[k] for k in ("robot0_eef_pos", "robot0_eef_quat",
                                                      "robot0_gripper_qpos")], -1)
  for name in ("png", "video"):
    g = got[name]
    assert (g["len"], g["episodes"], g["fps"]) == (31, 5, 20)
    assert g["cameras"] == ["observation.images.agentview"] and g["task"] == "lift the red cube"
    z = np.load(root / f"{name}.npz")
    # LeRobot returns float32 tensors: our values as the policy reads them, identical
    np.testing.assert_array_equal(z["action"], ep.fields["actions"].astype(np.float32))
    np.testing.assert_array_equal(z["state"], ours_state.astype(np.float32))
    np.testing.assert_array_equal(z["episode"], np.repeat(np.arange(5), [6, 9, 4, 7, 5]))
    ours = sources.load_episodes(str(root / name), ["agentview_image"], format="lerobot")
    # PNG: the source pixels; mp4: LeRobot's decoder (PyAV) sees what ours decodes
    np.testing.assert_array_equal(z["observation.images.agentview"],
                                  ours.fields["agentview_image"])
    if name == "png":
      np.testing.assert_array_equal(ours.fields["agentview_image"], ep.fields["agentview_image"])
  print("verified against lerobot", got["version"])


@pytest.mark.slow
def test_we_read_a_dataset_written_by_real_lerobot(tmp_path):
  for mode, size in (("image", 16), ("video", 64)):
    root = str(tmp_path / mode)
    _run_lerobot(LEROBOT_WRITE, tmp_path, root, mode, str(size))
    z = np.load(os.path.join(root, "expected.npz"))
    ep = sources.read_all(root, assume_actions="absolute")
    np.testing.assert_array_equal(ep.episode_ends, np.cumsum(z["lengths"]))
    np.testing.assert_array_equal(ep.fields["actions"], z["action"])
    np.testing.assert_array_equal(np.concatenate([ep.fields[k] for k in (
        "robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos")], -1), z["state"])
    want = np.concatenate([_lerobot_fixture_frames(e, t, size)
                           for e, t in enumerate(z["lengths"])])
    err = np.abs(ep.fields["agentview_image"].astype(int) - want)
    assert err.max() == 0 if mode == "image" else err.mean() <= 3.0
    assert ep.attrs["tasks"] == ["task 0", "task 1", "task 0"]
    # and on to our other formats
    h = sources.convert(root, str(tmp_path / f"{mode}.hdf5"), to="hdf5",
                        assume_actions="absolute")
    _assert_fields_equal(ep, sources.read_all(h))


@pytest.mark.sim
def test_assume_delta_relabels_a_file_that_does_not_say(tmp_path):
  """--to=absolute --assume_actions=delta on robosuite's real Lift demo with its controller
  config removed = the conversion of the original (its controller is robosuite's default)."""
  pytest.importorskip("robosuite")
  from decoupled_jax.sim import replay
  real = os.path.join(REPO, "tests", "data", "robosuite_1.4.1_lift_demo.hdf5")
  bare = str(tmp_path / "bare.hdf5")
  with h5py.File(real, "r") as src, h5py.File(bare, "w") as f:
    src.copy(src["data"]["demo_1"], f.create_group("data"), name="demo_1")
    info = json.loads(src["data"].attrs["env_info"])
    f["data"].attrs["env"] = "Lift"
    f["data"].attrs["env_info"] = json.dumps({k: info[k] for k in ("env_name", "robots")})
  with pytest.raises(rh.ConventionUnknown):
    replay.convert_file(bare, str(tmp_path / "x.hdf5"), check=False, progress=False)
  with pytest.raises(DatasetError, match="says its actions are delta"):
    replay.convert_file(real, str(tmp_path / "y.hdf5"), check=False, progress=False,
                        num_demos=1, assume_actions="absolute")
  a = replay.convert_file(real, str(tmp_path / "a.hdf5"), check=False, progress=False,
                          num_demos=1)
  b = replay.convert_file(bare, str(tmp_path / "b.hdf5"), check=False, progress=False,
                          assume_actions="delta")
  assert a["demos"] == b["demos"] == 1
  ra = sources.load_episodes(a["output"], LOW_DIM[:3])
  rb = sources.load_episodes(b["output"], LOW_DIM[:3])
  _assert_fields_equal(ra, rb, keys=LOW_DIM[:3] + ["actions"])
