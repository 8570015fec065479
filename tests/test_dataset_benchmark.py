"""Benchmark 'dataset' (decoupled_jax/benchmarks/dataset.py): stage 2 from a LeRobot v3.0
dataset with joint-position actions, no simulator, scored offline on held-out episodes — on
top of a joint_pos stage 1 of the same robot, frozen (decoupled)."""
import os

import numpy as np
import pytest

from decoupled_jax import config_lib
from decoupled_jax.data.episodes import EpisodeData
from decoupled_jax.errors import CheckpointError, ConfigError
from decoupled_jax.kinematics import robot as robot_lib


def joint_dataset(out_dir: str, episodes: int = 6, length: int = 40, as_state: bool = False) -> str:
  """Smooth Panda joint trajectories inside the joint limits: observations = the joint and
  finger positions at t, actions = [q(t+1), gripper command(t)] (8-D), LeRobot v3.0.
  `as_state`: one `observation.state` column (joints then fingers), as LeRobot robots record."""
  from decoupled_jax.data.lerobot import export_lerobot_v3
  info = robot_lib.load_robot(None).info
  lo, hi = info.joint_lower, info.joint_upper
  rng = np.random.default_rng(0)
  q, grip, act, ends = [], [], [], []
  for _ in range(episodes):
    t = np.arange(length + 1)[:, None] / length
    c = lo + (hi - lo) * rng.uniform(0.3, 0.7, lo.shape)
    traj = c + 0.15 * (hi - lo) * np.sin(2 * np.pi * (t * rng.uniform(0.5, 1.5, lo.shape)
                                                      + rng.uniform(0, 1, lo.shape)))
    g = np.where(t[:-1, 0] < rng.uniform(0.3, 0.7), -1.0, 1.0)
    q.append(traj[:-1])
    grip.append(np.stack([0.04 - 0.04 * (g > 0)] * 2, -1))
    act.append(np.concatenate([traj[1:], g[:, None]], -1))
    ends.append(length * (len(ends) + 1))
  fields = {"robot0_joint_pos": np.concatenate(q).astype(np.float32),
            "robot0_gripper_qpos": np.concatenate(grip).astype(np.float32),
            "actions": np.concatenate(act).astype(np.float32)}
  if as_state:
    fields = {"state": np.concatenate([fields.pop("robot0_joint_pos"),
                                       fields.pop("robot0_gripper_qpos")], -1), **fields}
  data = EpisodeData(fields, np.asarray(ends), source="synthetic joints",
                     attrs={"action_convention": "joint_pos", "env_args": {}})
  return export_lerobot_v3(data, out_dir, task="move the arm")


def _tiny(c):
  c.backbone.kwargs.update(config_lib.debug_backbone_kwargs("dp_mlp"))
  c.progress = False
  return c


def test_stage2_from_lerobot_v3_joint_pos_without_a_simulator(tmp_path):
  from decoupled_jax.pipelines import run
  root = joint_dataset(str(tmp_path / "joints"))
  s1c = _tiny(config_lib.pretrain_config("dp_mlp", signal="eepose"))
  s1c.robot.action_space = "joint_pos"
  s1c.train.update(num_steps=20, batch_size=16, checkpoint_every=20)
  s1c.eval.num_windows = 8
  s1 = run.run(s1c, str(tmp_path / "s1"))

  runs = {}
  for mode in ("normal", "decoupled"):
    c = _tiny(config_lib.dataset_config(mode, "dp_mlp"))
    c.data.update(dataset=root, format="lerobot")
    c.train.update(num_steps=30, batch_size=16, checkpoint_every=30, log_every=1)
    c.eval.num_windows = 16
    if mode == "decoupled":
      c.stage1_checkpoint = s1["checkpoint_dir"]
    runs[mode] = run.run(c, str(tmp_path / mode))
  for mode, s in runs.items():
    ev = s["eval"]
    assert s["benchmark"] == "dataset" and s["task"] == "joints"
    assert ev["windows"] == 16
    for k in ("joint_abs_err", "gripper_abs_err", "open_loop_joint_abs_err", "normalized_mse",
              "baseline_joint_abs_err", "baseline_normalized_mse"):
      assert np.isfinite(ev[k]), (mode, k, ev)
  dec = runs["decoupled"]
  assert dec["loaded"]["copied"] > 0 and dec["num_trainable"] < dec["num_params"]
  assert runs["normal"]["num_trainable"] == runs["normal"]["num_params"]

  # The trained policy returns the robot's 8-D joint actions (no end-effector conversion).
  from decoupled_jax.inference import load_policy
  runner, meta = load_policy(dec["checkpoint_dir"])
  assert meta["action_space"] == "joint_pos" and meta["action_dim"] == 8
  obs = {"robot0_joint_pos": np.zeros((1, 2, 7), np.float32),
         "robot0_gripper_qpos": np.zeros((1, 2, 2), np.float32)}
  assert runner(obs).shape == (1, 8, 8)

  # An end-effector stage 1 cannot be frozen under a joint-position policy: one line.
  ee = _tiny(config_lib.pretrain_config("dp_mlp"))
  ee.train.update(num_steps=2, batch_size=8, checkpoint_every=2)
  ee.eval.num_windows = 0
  s1_ee = run.run(ee, str(tmp_path / "s1_ee"))
  c = _tiny(config_lib.dataset_config("decoupled", "dp_mlp"))
  c.data.update(dataset=root, format="lerobot")
  c.stage1_checkpoint = s1_ee["checkpoint_dir"]
  with pytest.raises(CheckpointError, match="ee_pose targets .* 8-D joint_pos actions"):
    run.run(c, str(tmp_path / "bad"))
  assert not os.path.exists(tmp_path / "bad" / "checkpoints")


def test_dataset_benchmark_refusals(tmp_path):
  """Actions of the wrong width, and a joint dataset read as end-effector actions, are one
  line naming the key or the switch."""
  from decoupled_jax.data.robomimic_hdf5 import DatasetError
  from decoupled_jax.data.sources import load_episodes
  root = joint_dataset(str(tmp_path / "joints"), episodes=2, length=12)
  with pytest.raises(DatasetError, match="expected 9-D joint-position actions"):
    load_episodes(root, ("robot0_joint_pos",), format="lerobot", joint_actions=9)
  with pytest.raises(DatasetError, match="config.benchmark='dataset'"):
    load_episodes(root, ("robot0_joint_pos",), format="lerobot")
  c = config_lib.dataset_config("normal")
  c.data.update(dataset=root, format="lerobot")
  c.eval.holdout_fraction = 1.0
  with pytest.raises(ConfigError, match="config.eval.holdout_fraction"):
    config_lib.validate(c, num_devices=1)
  c.eval.holdout_fraction = 0.1
  c.benchmark = "libero_spatial"
  with pytest.raises(ConfigError, match="config.benchmark: must be one of"):
    config_lib.validate(c, num_devices=1)


def test_joint_pos_stage1_of_other_joints_is_refused(monkeypatch):
  """A joint_pos stage 1 must have learnt this robot's joints, in this order: one line naming
  both joint lists (the same width is not enough)."""
  from decoupled_jax.benchmarks import dataset
  from decoupled_jax.benchmarks.base import TaskData
  ours = robot_lib.load_robot(None).info.describe()
  theirs = dict(ours, joints=list(reversed(ours["joints"])), name="other_arm")
  monkeypatch.setattr(dataset, "check_stage1_checkpoint", lambda *a, **k: {"robot": theirs})
  c = config_lib.dataset_config("decoupled")
  c.stage1_checkpoint = "/some/stage1/checkpoints"
  data = TaskData(EpisodeData({"actions": np.zeros((4, 8), np.float32)}, np.asarray([4])),
                  norm=None, task="t", action_space="joint_pos", extra_meta={"robot": ours})
  with pytest.raises(CheckpointError, match=r"pretrained on joints \['joint7'.*of other_arm; "
                                            r"this run's robot \(panda\) has \['joint1'"):
    dataset.PlainDataset().check_stage1(c, data)
  monkeypatch.setattr(dataset, "check_stage1_checkpoint", lambda *a, **k: {"robot": ours})
  assert dataset.PlainDataset().check_stage1(c, data) == {"robot": ours}


def test_benchmark_names_match_the_registry():
  from decoupled_jax import benchmarks
  assert {s: tuple(sorted(b)) for s, b in benchmarks.BENCHMARKS.items()} == {
      s: tuple(sorted(b)) for s, b in config_lib.BENCHMARKS.items()}
  for stage, names in config_lib.BENCHMARKS.items():
    for name in names:
      assert benchmarks.get(stage, name).name == name


def test_train_binary_on_a_lerobot_state_column(tmp_path):
  """The command line: configs/train.py:benchmark=dataset with the key map sliced out of one
  `observation.state` column (`--config.data.key_map.<ours>=<theirs>[a:b]`)."""
  import json
  import subprocess
  import sys
  from helpers import REPO_PATH as REPO
  root = joint_dataset(str(tmp_path / "state"), episodes=3, length=24, as_state=True)
  proc = subprocess.run(
      [sys.executable, str(REPO / "experiments" / "train.py"),
       f"--config={REPO / 'configs' / 'train.py'}:benchmark=dataset,mode=normal,debug",
       f"--config.data.dataset={root}", "--config.data.format=lerobot",
       "--config.data.key_map.robot0_joint_pos=observation.state[0:7]",
       "--config.data.key_map.robot0_gripper_qpos=observation.state[7:9]",
       f"--workdir={tmp_path / 'run'}"], capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  s = json.load(open(tmp_path / "run" / "summary.json"))
  assert s["benchmark"] == "dataset" and np.isfinite(s["eval"]["joint_abs_err"])
