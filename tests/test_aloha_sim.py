"""ALOHA simulator side (docs/aloha.md): scripted demonstrations our loaders read, resumable and
bitwise reproducible, and the evaluator against a fake policy server that replays an expert
trajectory.

The simulator runs in the ALOHA venv (<repo>/.venv-aloha/bin/python, or $ALOHA_PYTHON) as a
subprocess; these tests are skipped when it is absent (`make aloha-env`). The flag checks
need no simulator (validation happens before gym-aloha is imported).
"""
import filecmp
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from helpers import ALOHA_PY, assert_one_line_error, needs_aloha
from helpers import REPO_PATH as REPO

DEMO_SEED = 0       # transfer_cube: the first 2 attempts succeed


def run_module(module, *args, python=ALOHA_PY, timeout=300):
  env = dict(os.environ, MUJOCO_GL=os.environ.get("MUJOCO_GL", "egl"), PYTHONPATH=str(REPO))
  return subprocess.run([python, "-m", f"decoupled_jax.aloha.{module}", *args],
                        capture_output=True, text=True, timeout=timeout, cwd=str(REPO), env=env)


def run_script(script, timeout=300):
  env = dict(os.environ, MUJOCO_GL=os.environ.get("MUJOCO_GL", "egl"), PYTHONPATH=str(REPO))
  return subprocess.run([ALOHA_PY, "-c", textwrap.dedent(script)], capture_output=True,
                        text=True, timeout=timeout, cwd=str(REPO), env=env)


def ok(proc):
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  return proc


def demos_args(out_dir, seed=DEMO_SEED):
  return ("--task=transfer_cube", "--num_demos=2", f"--seed={seed}", f"--out_dir={out_dir}",
          "--max_attempts_factor=10")


@pytest.fixture(scope="module")
def demos(tmp_path_factory):
  if not os.path.exists(ALOHA_PY):
    pytest.skip(f"no ALOHA venv at {ALOHA_PY}")
  root = str(tmp_path_factory.mktemp("aloha_demos"))
  first = ok(run_module("demos_main", *demos_args(root)))
  return {"root": root, "path": os.path.join(root, "transfer_cube.hdf5"), "first": first}


# --------------------------------------------------------------------- flag validation
@pytest.mark.parametrize("module,args,named", [
    ("demos_main", ("--task=stack_cups",), "stack_cups"),
    ("demos_main", ("--task=insertion", "--camera_size=48by64"), "--camera_size"),
    ("demos_main", ("--task=insertion", "--num_demos=0"), "--num_demos"),
    ("eval_main", ("--task=stack_cups",), "stack_cups"),
    ("eval_main", ("--episodes=0",), "--episodes"),
])
def test_bad_flags_exit_2_with_one_line(tmp_path, module, args, named):
  py = ALOHA_PY if os.path.exists(ALOHA_PY) else sys.executable
  proc = run_module(module, *args, f"--out_dir={tmp_path}", python=py, timeout=120)
  assert named in assert_one_line_error(proc)
  assert not os.listdir(tmp_path)       # nothing written


# --------------------------------------------------------------------- demonstrations
@needs_aloha
def test_demo_layout_and_sidecar(demos):
  import h5py
  with h5py.File(demos["path"], "r") as f:
    data = f["data"]
    a = data.attrs
    assert a["task"] == "transfer_cube" and int(a["fps"]) == 50 and int(a["seed"]) == DEMO_SEED
    assert a["expert"] and int(a["episode_len"]) == 400 and a["action_convention"] == "joint_pos"
    assert sorted(data.keys()) == ["demo_0", "demo_1"]
    for name in ("demo_0", "demo_1"):
      d = data[name]
      t = int(d.attrs["num_samples"])
      assert t == 400 and 0 < int(d.attrs["success_step"]) <= t
      act = d["actions"][()]
      assert act.shape == (t, 14) and act.dtype == np.float32
      assert d["obs/qpos"].shape == (t, 14) and d["obs/qvel"].shape == (t, 14)
      assert d["obs/env_state"].shape == (t, 7) and "top" not in d["obs"]
      np.testing.assert_allclose(d["obs/env_state"][0], d.attrs["object_pose"], atol=1e-6)
      # the grippers open (1) and close (0) on normalised commands; the cube moves
      assert act[:, 13].max() > 0.9 and act[:, 13].min() < 0.1
      box = d["obs/env_state"][()]
      assert np.linalg.norm(box[-1, :3] - box[0, :3]) > 0.05
      assert d["rewards"][()].max() == 4
  side = json.load(open(demos["path"] + ".json"))
  assert side["num_demos"] == 2 and side["complete"]
  assert side["attempts"] == side["successes"] == 2     # the expert does not miss here
  assert side["success_rate"] == pytest.approx(side["successes"] / side["attempts"])
  assert "expert success" in demos["first"].stdout


@needs_aloha
def test_our_loader_reads_the_demos(demos):
  from decoupled_jax.data import sources
  data = sources.load_episodes(demos["path"], ["qpos", "env_state"], format="robomimic",
                               joint_actions=14)
  assert data.num_episodes == 2 and data.num_frames == 800
  assert data.fields["actions"].shape == (800, 14)
  assert data.fields["qpos"].shape == (800, 14) and data.fields["env_state"].shape == (800, 7)


@needs_aloha
def test_rerun_is_skipped_and_same_seed_same_bytes(demos, tmp_path):
  before = (os.path.getmtime(demos["path"]), os.path.getmtime(demos["path"] + ".json"))
  proc = ok(run_module("demos_main", *demos_args(demos["root"])))
  assert "skipped" in proc.stdout, proc.stdout
  assert (os.path.getmtime(demos["path"]), os.path.getmtime(demos["path"] + ".json")) == before
  ok(run_module("demos_main", *demos_args(str(tmp_path))))
  assert filecmp.cmp(demos["path"], str(tmp_path / "transfer_cube.hdf5"), shallow=False)
  assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


@needs_aloha
@pytest.mark.parametrize("task", ["transfer_cube", "insertion"])
def test_expert_succeeds_on_every_seed(task):
  """The scripted expert (docs/aloha.md: 50/50 per task on pose seeds 1000..1049): its mocap
  rollout and the joint replay reach the max reward on pose seeds 0..2, deterministically;
  the mocap task carries the MuJoCo 2 weld emulation and the joint task does not."""
  proc = ok(run_script(f"""
      import numpy as np
      from decoupled_jax.aloha import env, experts
      ee, joint = env.AlohaTask({task!r}, "ee"), env.AlohaTask({task!r}, "joint")
      for name in env.WELDED_BODIES:
        b = ee.physics.model.name2id(name, "body")
        w_ee, w_joint = ee.physics.model.body_invweight0[b], joint.physics.model.body_invweight0[b]
        assert w_ee[1] == w_ee[0] and w_joint[1] > 100 * w_joint[0], (w_ee, w_joint)
      for seed in range(3):
        pose = env.sample_object_pose({task!r}, seed)
        traj = experts.joint_trajectory(ee, pose)
        won, step, _ = experts.replay(joint, pose, traj["actions"])
        again = experts.replay(joint, pose, traj["actions"])
        print("SEED", seed, int(traj["ee_success"]), int(won), step, again[1])
  """))
  rows = [line.split()[1:] for line in proc.stdout.splitlines() if line.startswith("SEED")]
  assert len(rows) == 3, proc.stdout
  for seed, ee_ok, won, step, step_again in rows:
    assert ee_ok == "1" and won == "1", f"{task} seed {seed}: mocap {ee_ok}, replay {won}"
    assert 0 < int(step) <= 400 and step == step_again        # deterministic


# --------------------------------------------------------------------- evaluation
class ReplayRunner:
  """A duck-typed policy runner (serving/server.py) that replays a recorded joint trajectory
  by the request's step, in a permuted order (the metadata's action_permutation undoes it)."""

  def __init__(self, actions, perm, n_obs=2, n_act=10):
    self.actions, self.perm = np.asarray(actions, np.float32), np.asarray(perm)
    self.obs_keys = ("qpos", "env_state")
    self.obs_shapes = {"qpos": (14,), "env_state": (7,)}
    self.obs_dtypes = {"qpos": "float32", "env_state": "float32"}
    self.n_obs, self.n_act, self.batch = n_obs, n_act, 1
    self.metadata = {"action_permutation": self.perm.tolist(), "policy": "replay"}
    self.seen = []

  def check(self, obs):
    for k, v in obs.items():
      assert v.shape[-len(self.obs_shapes[k]):] == self.obs_shapes[k]

  def __call__(self, obs, seeds=None, steps=None):
    out = []
    for i, step in enumerate(steps if steps is not None else [0] * len(obs["qpos"])):
      self.seen.append((int(seeds[i]) if seeds is not None else None, int(step)))
      idx = np.minimum(np.arange(step, step + self.n_act), len(self.actions) - 1)
      chunk = self.actions[idx]
      permuted = np.empty_like(chunk)
      permuted[:, self.perm] = chunk          # env action = policy action[perm]
      out.append(permuted)
    return np.stack(out)


@needs_aloha
def test_evaluator_replaying_the_expert_succeeds_and_resumes(tmp_path):
  """The expert's joint trajectory for evaluation episode 0's pose, served by a fake policy in
  a permuted order: the evaluator un-permutes it and the episode succeeds; a rerun reuses the
  recorded episode."""
  from decoupled_jax.serving.server import PolicyServer
  traj = tmp_path / "traj.npy"
  proc = ok(run_script(f"""
      import numpy as np
      from decoupled_jax.aloha import env, experts, runner
      ee, joint = env.AlohaTask("transfer_cube", "ee"), env.AlohaTask("transfer_cube", "joint")
      for seed in range(20):       # the first eval seed whose episode 0 the expert solves
        pose = env.sample_object_pose("transfer_cube",
                                      runner.episode_pose_seed(seed, "transfer_cube", 0))
        acts = experts.joint_trajectory(ee, pose)["actions"]
        if experts.replay(joint, pose, acts)[0]:
          np.save({str(traj)!r}, acts)
          print("SEED", seed)
          break
  """))
  seed = int(proc.stdout.split("SEED")[1].split()[0])
  perm = np.random.default_rng(0).permutation(14)
  fake = ReplayRunner(np.load(traj), perm)
  srv = PolicyServer(fake, port=0).start()
  out = tmp_path / "eval"
  args = (f"--address=127.0.0.1:{srv.port}", "--task=transfer_cube", "--episodes=1",
          f"--seed={seed}", f"--out_dir={out}", "--reconnect_timeout_s=30")
  try:
    ok(run_module("eval_main", *args))
    rows = (out / "transfer_cube" / "episodes.jsonl").read_text().splitlines()
    assert len(rows) == 1
    r = json.loads(rows[0])
    assert r["success"] and "error" not in r and r["steps"] < 400, r
    # steps come every n_action_steps with the episode's seed
    steps = [s for _, s in fake.seen[1:]]
    assert steps[:3] == [0, 10, 20] and {s for s, _ in fake.seen[1:]} == {r["seed"]}
    summary = json.loads((out / "transfer_cube" / "summary.json").read_text())
    assert summary["successes"] == 1 and summary["outcomes"] == [True]
    assert summary["action_permutation"] == perm.tolist() and len(summary["ci95"]) == 2
    n_calls = len(fake.seen)
    ok(run_module("eval_main", *args))                  # resumed: nothing to run
    assert len(fake.seen) == n_calls
    assert len((out / "transfer_cube" / "episodes.jsonl").read_text().splitlines()) == 1
  finally:
    srv.stop()


@needs_aloha
def test_evaluator_counts_error_frames_and_renders_the_camera(tmp_path):
  """A policy taking the top camera (at its metadata's size) whose every request fails: the
  episodes fail with the server's reason, the run goes on, a video is written."""
  from decoupled_jax.serving.server import PolicyServer

  class Broken(ReplayRunner):
    def __init__(self):
      super().__init__(np.zeros((1, 14)), np.arange(14), n_obs=1, n_act=4)
      self.obs_keys = ("qpos", "top")
      self.obs_shapes = {"qpos": (14,), "top": (24, 32, 3)}
      self.obs_dtypes = {"qpos": "float32", "top": "uint8"}

    def __call__(self, obs, seeds=None, steps=None):
      if steps is not None and int(steps[0]) > 0:
        raise RuntimeError("simulated policy failure")
      assert obs["top"].shape[-3:] == (24, 32, 3)
      return super().__call__({"qpos": obs["qpos"]}, seeds, steps)

  srv = PolicyServer(Broken(), port=0).start()
  out = tmp_path / "eval"
  try:
    ok(run_module("eval_main", f"--address=127.0.0.1:{srv.port}", "--task=transfer_cube",
                  "--episodes=2", "--max_steps=12", "--num_videos=1", f"--out_dir={out}"))
  finally:
    srv.stop()
  rows = [json.loads(x) for x in
          (out / "transfer_cube" / "episodes.jsonl").read_text().splitlines()]
  assert [r["episode"] for r in rows] == [0, 1] and not any(r["success"] for r in rows)
  assert all("simulated policy failure" in r["error"] and r["steps"] == 4 for r in rows), rows
  assert (out / "transfer_cube" / rows[0]["video"]).stat().st_size > 0
  assert "video" not in rows[1]
