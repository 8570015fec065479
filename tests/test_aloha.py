"""The second robot, bimanual ALOHA (docs/aloha.md), on the JAX side: the packaged MJCF and its
FK stage 1, benchmark 'aloha' (data, action order, the stage-1 rule) on a small synthetic
dataset in the demos' layout, and the chain (slow, needs the ALOHA venv)."""
import filecmp
import json
import os

import h5py
import numpy as np
import pytest
from helpers import REPO

from decoupled_jax import config_lib
from decoupled_jax.data import aloha as aloha_data
from decoupled_jax.errors import CheckpointError
from decoupled_jax.kinematics import robot as robot_lib

ALOHA_PY = os.environ.get("ALOHA_PYTHON", os.path.join(REPO, ".venv-aloha", "bin", "python"))
needs_aloha = pytest.mark.skipif(not os.path.exists(ALOHA_PY),
                                 reason=f"no ALOHA venv at {ALOHA_PY} (make aloha-env)")
# gym-aloha's action order [left 6, left gripper, right 6, right gripper] -> the robot's order
ROBOT_ORDER = list(range(6)) + list(range(7, 13)) + [6, 13]
ACTION_KEY = "actions" + aloha_data.ACTION_ORDER


def write_aloha_hdf5(path: str, task: str = "transfer_cube", episodes: int = 4,
                     length: int = 40, camera: tuple | None = None) -> str:
  """Smooth joint trajectories of both arms inside the limits, in the demos' layout
  (decoupled_jax/aloha/demos.py): actions = the next frame's 14 joint positions in gym-aloha's
  order, obs/qpos the current ones, obs/env_state a box pose."""
  info = robot_lib.load_robot(robot_lib.packaged_robot_config("aloha")).info
  lo, hi = info.joint_lower, info.joint_upper
  rng = np.random.default_rng(0)
  with h5py.File(path, "w") as f:
    data = f.create_group("data")
    data.attrs["task"], data.attrs["fps"] = task, 50
    for e in range(episodes):
      t = np.arange(length + 1)[:, None] / length
      home = np.asarray(info.init_qpos)
      arms = home + 0.1 * (hi - lo) * np.sin(2 * np.pi * (t * rng.uniform(0.5, 1.5, lo.shape)
                                                          + rng.uniform(0, 1, lo.shape)))
      grip = np.where(t < rng.uniform(0.3, 0.7), 1.0, 0.0) * np.ones((1, 2))
      q = np.concatenate([arms[:, :6], grip[:, :1], arms[:, 6:], grip[:, 1:]], -1)
      g = data.create_group(f"demo_{e}")
      g.attrs["num_samples"] = length
      g.create_dataset("actions", data=q[1:].astype(np.float32))
      obs = g.create_group("obs")
      obs.create_dataset("qpos", data=q[:-1].astype(np.float32))
      obs.create_dataset("qvel", data=np.diff(q, axis=0).astype(np.float32) * 50)
      box = np.concatenate([rng.uniform(-0.1, 0.1, (1, 3)) + [0.0, 0.5, 0.05], [[1, 0, 0, 0]]], -1)
      obs.create_dataset("env_state", data=np.repeat(box, length, 0).astype(np.float32))
      if camera:
        obs.create_dataset("top", data=rng.integers(0, 256, (length, *camera, 3), np.uint8))
  return path


def _tiny(c):
  c.backbone.kwargs.update(config_lib.debug_backbone_kwargs("dp_mlp"))
  c.progress = False
  return c


def test_packaged_aloha_robot():
  r = robot_lib.load_robot(robot_lib.packaged_robot_config("aloha")).info
  assert r.num_joints == 12 and r.num_grippers == 2 and r.target_dim == 14
  assert r.joint_names[:6] == tuple(f"vx300s_left/{j}" for j in (
      "waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate"))
  assert r.joint_names[6] == "vx300s_right/waist"
  np.testing.assert_allclose(r.init_qpos[:6], [0, -0.96, 1.16, 0, -0.3, 0])
  # configs keep the name (a path would differ between machines)
  assert robot_lib.RobotSpec.from_config({"mjcf": "aloha", "ee_sites": "left_cam_focus"}).mjcf \
      == "aloha"
  # both arms' sites sit where gym-aloha's start pose puts the grippers: left at x < 0,
  # right at x > 0, mirrored
  from decoupled_jax.kinematics.robot import fk_cpu_sites, load_robot
  robot = load_robot(robot_lib.packaged_robot_config("aloha"))
  pos, _ = fk_cpu_sites(robot.model, r.init_qpos[None], robot.info)
  assert pos.shape == (1, 2, 3) and pos[0, 0, 0] < -0.1 and pos[0, 1, 0] > 0.1
  np.testing.assert_allclose(pos[0, 0, 0], -pos[0, 1, 0], atol=1e-6)
  # gripper range (open 1, closed 0): the normaliser maps it onto [-1, 1], not a degenerate range
  from decoupled_jax.benchmarks.fk import stage1_normalizer
  norm = stage1_normalizer("none", r.joint_lower, r.joint_upper, ((0,) * 3, (1,) * 3), robot=r)
  x = np.concatenate([r.init_qpos, [0.0, 1.0]])[None].astype(np.float32)
  y = np.asarray(norm.normalize_field("actions", x))
  np.testing.assert_allclose(y[0, 12:], [-1.0, 1.0], atol=1e-6)
  assert np.all(np.abs(y) <= 1.0)


@needs_aloha
def test_packaged_mjcf_is_gym_aloha_s():
  import subprocess
  where = subprocess.run([ALOHA_PY, "-c", "import gym_aloha, os; print(os.path.dirname("
                          "gym_aloha.__file__))"], capture_output=True, text=True, check=True)
  theirs = os.path.join(where.stdout.strip(), "assets")
  ours = os.path.join(REPO, "decoupled_jax", "kinematics", "assets", "aloha")
  xmls = sorted(n for n in os.listdir(ours) if n.endswith(".xml"))
  assert len(xmls) == 6
  for n in xmls:
    assert filecmp.cmp(os.path.join(ours, n), os.path.join(theirs, n), shallow=False), n


def test_action_permutation_inverts_the_key_map():
  from decoupled_jax.benchmarks.aloha import action_permutation
  from decoupled_jax.data.sources import parse_key
  perm = action_permutation(ACTION_KEY)
  assert perm == list(range(6)) + [12] + list(range(6, 12)) + [13]
  env = np.arange(14.0)[None] * 10
  policy = parse_key(ACTION_KEY).apply(env, "test")
  np.testing.assert_array_equal(policy[0], env[0, ROBOT_ORDER])
  np.testing.assert_array_equal(policy[0, perm], env[0])
  with pytest.raises(Exception, match="not a reordering"):
    action_permutation("actions[0:6,0:8]")


def test_aloha_joint_state_takes_the_actions_scale(tmp_path):
  """qpos (gym-aloha's order) is normalised by the robot's joint limits and gripper range, as
  the actions are, not by the demos' min/max (a joint that barely moves in the demos would
  amplify its closed-loop drift; docs/aloha.md "Observation scale"); env_state keeps the
  data's limits."""
  from decoupled_jax.benchmarks import aloha as aloha_bench
  c = config_lib.aloha_config("normal", "dp_mlp")
  c.data.dataset = write_aloha_hdf5(str(tmp_path / "transfer_cube.hdf5"))
  data = aloha_bench.AlohaTask().load(c)
  info = robot_lib.load_robot(c.robot).info
  q = data.norm.stats["qpos"]
  env_lo = np.concatenate([info.joint_lower[:6], [0.0], info.joint_lower[6:], [0.0]])
  env_hi = np.concatenate([info.joint_upper[:6], [1.0], info.joint_upper[6:], [1.0]])
  np.testing.assert_allclose(q.min, env_lo, rtol=1e-6)
  np.testing.assert_allclose(q.max, env_hi, rtol=1e-6)
  # the same joint value normalises identically as an observation and as an action
  x = np.asarray(info.init_qpos.tolist() + [0.3, 0.7], np.float32)[None]
  as_action = np.asarray(data.norm.normalize_field("actions", x))
  perm = data.extra_meta["action_permutation"]
  as_state = np.asarray(data.norm.normalize_field("qpos", x[:, perm]))
  np.testing.assert_allclose(as_state, as_action[:, perm], atol=1e-6)
  with h5py.File(c.data.dataset) as f:
    env = np.concatenate([f[f"data/demo_{e}/obs/env_state"][()] for e in range(4)])
  np.testing.assert_allclose(data.norm.stats["env_state"].min, env.min(0), atol=1e-6)


def test_aloha_stage1_then_decoupled_stage2_on_synthetic_demos(tmp_path):
  """Stage 1 on the packaged MJCF, then benchmark 'aloha' trains decoupled on a dataset in the
  demos' layout (evaluation off: no simulator here); a Panda stage 1 is refused."""
  from decoupled_jax.benchmarks import aloha as aloha_bench
  from decoupled_jax.pipelines import run
  dataset = write_aloha_hdf5(str(tmp_path / "transfer_cube.hdf5"))
  chain = config_lib.from_file(os.path.join(REPO, "configs", "aloha.py"), "debug")
  s1c = chain.stage1
  s1c.train.update(num_steps=8, checkpoint_every=8)
  s1 = run.run(s1c, str(tmp_path / "s1"))
  assert s1["eval"]["baseline_joint_abs_err"] > 0
  c = chain.stage2
  c.data.dataset, c.stage1_checkpoint = dataset, s1["checkpoint_dir"]
  c.train.update(num_steps=6, checkpoint_every=6)
  c.eval.num_episodes = 0
  data = aloha_bench.AlohaTask().load(c)
  acts = data.episodes.fields["actions"]
  with h5py.File(dataset) as f:
    np.testing.assert_allclose(acts[:40], f["data/demo_0/actions"][()][:, ROBOT_ORDER])
  assert data.extra_meta["action_permutation"][6] == 12
  s2 = run.run(c, str(tmp_path / "dec"))
  assert s2["loaded"]["copied"] > 0 and s2["num_trainable"] < s2["num_params"]
  meta = json.load(open(os.path.join(s2["checkpoint_dir"], "..", "summary.json")))
  assert meta["task"] == "transfer_cube"
  # A Panda (ee_pose) stage 1 does not fit ALOHA's 14-D joint_pos actions.
  panda = _tiny(config_lib.pretrain_config("dp_mlp"))
  panda.train.update(num_steps=2, checkpoint_every=2, batch_size=8)
  panda.eval.num_windows = 4
  p1 = run.run(panda, str(tmp_path / "panda"))
  c.stage1_checkpoint = p1["checkpoint_dir"]
  with pytest.raises(CheckpointError, match="ee_pose targets"):
    aloha_bench.AlohaTask().check_stage1(c, data)


@pytest.mark.slow
def test_aloha_image_policy_trains_at_debug_size(tmp_path):
  """obs=image: the `top` camera (dataset key 'top', policy key 'top_image') + qpos, through
  the image encoder at debug size; the served metadata names the camera for the runner."""
  from decoupled_jax.pipelines import run
  dataset = write_aloha_hdf5(str(tmp_path / "transfer_cube.hdf5"), episodes=2, length=24,
                             camera=(48, 64))
  c = config_lib.from_file(os.path.join(REPO, "configs", "aloha.py"), "debug,obs=image").stage2
  c.mode, c.stage1_checkpoint, c.data.dataset = "normal", "", dataset
  c.train.update(num_steps=2, checkpoint_every=2, batch_size=4)
  c.eval.num_episodes = 0
  assert c.data.image_keys == ("top_image",) and c.encoder.crop_size == 43
  s = run.run(c, str(tmp_path / "img"))
  from decoupled_jax.inference import load_policy
  runner, meta = load_policy(s["checkpoint_dir"])
  assert runner.obs_shapes["top_image"] == (48, 64, 3) and runner.action_dim == 14


def test_aloha_config_refusals():
  from decoupled_jax.errors import ConfigError
  c = config_lib.aloha_config("normal")
  c.data.dataset = REPO
  c.data.task = "fold_towel"
  with pytest.raises(ConfigError, match=r"config.data.task: must be one of \('transfer_cube'"):
    config_lib.validate(c)
  c.data.task = "insertion"
  c.data.lowdim_keys = ("robot0_eef_pos",)
  with pytest.raises(ConfigError, match="config.data.lowdim_keys: unknown low-dim key "
                                        "'robot0_eef_pos'"):
    config_lib.validate(c)
  c.data.lowdim_keys = ("qpos",)
  c.robot.action_space = "ee_pose"
  with pytest.raises(ConfigError, match="config.robot: ALOHA trains 14-D joint_pos"):
    config_lib.validate(c)


@pytest.mark.slow
@needs_aloha
def test_aloha_debug_chain_runs_and_resumes(tmp_path):
  """`python experiments/paper.py --config=configs/aloha.py:debug`: scripted demos in the ALOHA
  venv -> stage 1 on the packaged MJCF -> normal and decoupled -> the served closed-loop
  evaluation (with a video); a rerun reuses everything."""
  import subprocess
  import sys
  cmd = [sys.executable, os.path.join(REPO, "experiments", "paper.py"),
         "--config=" + os.path.join(REPO, "configs", "aloha.py") + ":debug",
         f"--workdir={tmp_path}", f"--config.demos.aloha_python={ALOHA_PY}",
         f"--config.stage2.eval.aloha_python={ALOHA_PY}"]
  env = dict(os.environ, MUJOCO_GL="egl")
  first = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
  assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
  results = json.load(open(tmp_path / "results.json"))
  rows = {(r["task"], r["mode"]): r for r in results["rows"]}
  assert set(rows) == {("transfer_cube", m) for m in ("normal", "decoupled")}
  for r in rows.values():
    assert r["episodes"] == 1 and r["success_rate"] in (0.0, 1.0), r
  assert rows[("transfer_cube", "decoupled")]["stage1_eval"]["joint_abs_err"] > 0
  ev = json.load(open(tmp_path / "transfer_cube" / "decoupled" / "eval.json"))
  assert len(ev["episodes"]) == 1 and ev["videos"], ev
  assert "Scripted expert" in (tmp_path / "results.md").read_text()
  again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
  assert again.returncode == 0, again.stderr[-3000:]
  assert again.stderr.count("reusing") >= 3, again.stderr[-3000:]
