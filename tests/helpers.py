"""Helpers shared by the test files (one home each); `from helpers import ...` in a test.

Paths and processes: REPO, run_binary, assert_one_line_error, free_port, the LIBERO venv.
Test data the library itself never writes: synthetic robomimic files (write_robomimic_hdf5,
synthetic_demos), RLDS / LeRobot copies of them (export_robomimic), LIBERO-layout suites
(write_suite), a random closed-loop policy (make_random_policy), serving frames.

(pytest puts this folder on sys.path: tests/ has no __init__.py, `rootdir`-relative imports.)
"""
from __future__ import annotations

import os
import pathlib
import socket
import subprocess
import sys
import tempfile
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
import pytest

# ----------------------------------------------------------------------------- paths
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))   # str
REPO_PATH = pathlib.Path(REPO)
LIBERO_PY = os.environ.get("LIBERO_PYTHON", os.path.join(REPO, ".venv-libero", "bin", "python"))
needs_libero = pytest.mark.skipif(not os.path.exists(LIBERO_PY),
                                  reason=f"no LIBERO venv at {LIBERO_PY} (make libero-env, "
                                         f"or set LIBERO_PYTHON)")
ALOHA_PY = os.environ.get("ALOHA_PYTHON", os.path.join(REPO, ".venv-aloha", "bin", "python"))
needs_aloha = pytest.mark.skipif(not os.path.exists(ALOHA_PY),
                                 reason=f"no ALOHA venv at {ALOHA_PY} (make aloha-env, "
                                        f"or set ALOHA_PYTHON)")
# What our robosuite env records as env_args (sim/robosuite_env.py: env_args()): absolute
# world-frame OSC_POSE targets.
OUR_ENV_ARGS = {"env_name": "Lift", "type": 1, "env_kwargs": {
    "control_freq": 20, "controller_configs": {"type": "BASIC", "body_parts": {"right": {
        "type": "OSC_POSE", "input_type": "absolute", "input_ref_frame": "world"}}}}}


# ----------------------------------------------------------------------------- processes
def run_binary(name, *args, expect_ok=True, timeout=900):
  """`python experiments/<name> args...` from the repository root; asserts exit 0 unless
  `expect_ok=False`."""
  env = dict(os.environ, MUJOCO_GL=os.environ.get("MUJOCO_GL", "egl"))
  proc = subprocess.run([sys.executable, os.path.join(REPO, "experiments", name), *args],
                        capture_output=True, text=True, timeout=timeout, cwd=REPO, env=env)
  if expect_ok:
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
  return proc


def assert_one_line_error(proc):
  """A user error: exit status 2, one 'error:' line on stderr, no traceback."""
  assert proc.returncode == 2, proc.stderr[-3000:]
  errors = [l for l in proc.stderr.splitlines() if l.startswith("error: ")]
  assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
  return errors[0]


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def openpi_client():
  """openpi-client's websocket policy module, or skip (it is installed with --no-deps)."""
  return pytest.importorskip("openpi_client.websocket_client_policy")


# ----------------------------------------------------------------------------- datasets
def write_robomimic_hdf5(path: str, demos: Iterable[Mapping], env_args: Mapping, *,
                         valid_fraction: float = 0.1,
                         masks: Mapping[str, Sequence[str]] | None = None,
                         action_convention: str = "absolute") -> int:
  """Demo dicts (actions/states/rewards/dones/obs[/seed/attrs/extra]) -> a robomimic file with
  data/demo_0..N-1, through the library's own writer (one shard per demo, then
  `merge_shards`, as demonstration generation writes); returns the number of demos."""
  from decoupled_jax.data import robomimic_hdf5 as rh
  parent = os.path.dirname(os.path.abspath(path))
  os.makedirs(parent, exist_ok=True)
  with tempfile.TemporaryDirectory(dir=parent) as tmp:
    shards = []
    for i, demo in enumerate(demos):
      shards.append(os.path.join(tmp, f"demo_{i}.hdf5"))
      rh.write_demo_shard(shards[-1], demo, env_args=env_args,
                          action_convention=action_convention)
    return rh.merge_shards(shards, path, env_args, valid_fraction=valid_fraction, masks=masks,
                           action_convention=action_convention)


def export_robomimic(input_path: str, output: str, *, to: str, **kw) -> str:
  """A robomimic HDF5 file (absolute actions, with observations) as RLDS (`to='rlds'`) or
  LeRobot (`to='lerobot'`, v3.0 unless `lerobot_version='v2.1'`); returns the written
  directory (RLDS: the version dir). `sources.convert` from HDF5."""
  from decoupled_jax.data import sources
  if to not in ("rlds", "lerobot"):
    raise ValueError(f"to must be 'rlds' or 'lerobot', got {to!r}")
  return sources.convert(input_path, output, to=to, input_format="robomimic", **kw)


def synthetic_demos(path, num_demos=3, length=30, seed=0):
  """Smooth random trajectories in the robomimic layout (what a real file holds)."""
  rng = np.random.default_rng(seed)
  demos = []
  for _ in range(num_demos):
    t = np.linspace(0, 1, length)[:, None]
    pos = np.array([-0.1, 0.0, 1.0]) + 0.1 * np.sin(2 * np.pi * t + rng.normal(size=3))
    aa = np.tile([np.pi, 0.0, 0.0], (length, 1)) + 0.05 * rng.normal(size=(length, 3))
    grip = np.where(t[:, 0] > 0.5, 1.0, -1.0)[:, None]
    quat = np.tile([1.0, 0.0, 0.0, 0.0], (length, 1))
    demos.append({
        "actions": np.concatenate([pos, aa, grip], -1),
        "states": rng.normal(size=(length, 5)), "rewards": np.zeros(length),
        "dones": np.zeros(length),
        "obs": {"robot0_eef_pos": pos, "robot0_eef_quat": quat,
                "robot0_gripper_qpos": np.stack([0.04 * (grip[:, 0] < 0)] * 2, -1),
                "robot0_joint_pos": rng.normal(size=(length, 7)),
                "object": rng.normal(size=(length, 10))}})
  write_robomimic_hdf5(path, demos, {"env_name": "Lift", "type": 1, "env_kwargs": {}})
  return path


def write_suite(root: str, suite: str = "libero_spatial", tasks=(0, 1), demos: int = 3,
                length: int = 30, images: bool = False, seed: int = 0, image_size: int = 32,
                instructions=None) -> str:
  """Tiny LIBERO-layout demo files (random but well-formed) for tests that need no simulator.
  `instructions`: task id -> instruction (default 'instruction of task <id>')."""
  import json

  import h5py
  rng = np.random.default_rng(seed)
  d = os.path.join(root, suite)
  os.makedirs(d, exist_ok=True)
  for t in tasks:
    with h5py.File(os.path.join(d, f"task{t}_demo.hdf5"), "w") as f:
      g = f.create_group("data")
      instr = (instructions or {}).get(t, f"instruction of task {t}")
      g.attrs["problem_info"] = json.dumps({"language_instruction": instr})
      g.attrs["task_id"] = t
      g.attrs["suite"] = suite
      for i in range(demos):
        dg = g.create_group(f"demo_{i}")
        a = rng.uniform(-1, 1, (length, 7))
        a[:, 3:6] *= 0.2
        a[:, 6] = np.sign(a[:, 6])
        dg.create_dataset("actions", data=a)
        o = dg.create_group("obs")
        o.create_dataset("ee_pos", data=rng.normal(0, 0.1, (length, 3)) + [0, 0, 1])
        o.create_dataset("ee_ori", data=rng.normal(0, 0.1, (length, 3)) + [3.1, 0, 0])
        o.create_dataset("gripper_states", data=rng.uniform(-0.04, 0.04, (length, 2)))
        o.create_dataset("joint_states", data=rng.normal(0, 0.3, (length, 7)))
        o.create_dataset("object_poses", data=rng.normal(0, 0.1, (length, 14)))
        if images:
          for k in ("agentview_rgb", "eye_in_hand_rgb"):
            o.create_dataset(k, data=rng.integers(0, 255, (length, image_size, image_size, 3),
                                                   dtype=np.uint8))
        dg.attrs["num_samples"] = length
  return root


# ----------------------------------------------------------------------------- policies
def make_random_policy(horizon: int = 8, seed: int = 0) -> Callable[..., np.ndarray]:
  """A policy jittering around the current pose (for smoke tests of the evaluation loop).

  Row i's noise is drawn from np.random.default_rng((seed, seeds[i], steps[i])), so it is a
  function of (episode seed, step) only (sim/evaluator.py's contract). Called without `seeds` /
  `steps` (a plain policy), it falls back to one generator seeded with `seed`, advanced per call.
  """
  from decoupled_jax.sim import frames
  fallback = np.random.default_rng(seed)

  def policy(obs: Mapping[str, np.ndarray], seeds: np.ndarray | None = None,
             steps: np.ndarray | None = None) -> np.ndarray:
    pos = obs["robot0_eef_pos"][:, -1].astype(np.float64)
    aa = frames.eef_quat_to_action_axis_angle(obs["robot0_eef_quat"][:, -1].astype(np.float64))
    n = pos.shape[0]
    a = np.concatenate([pos, aa, np.zeros((n, 1))], axis=-1)[:, None].repeat(horizon, 1)
    if (seeds is None) != (steps is None):
      raise ValueError("pass both `seeds` and `steps`, or neither")
    if seeds is None:
      rngs = [fallback] * n
    else:
      seeds, steps = np.asarray(seeds, np.int64), np.asarray(steps, np.int64)
      if seeds.shape != (n,) or steps.shape != (n,):
        raise ValueError(f"seeds/steps must have shape ({n},), got {seeds.shape}, {steps.shape}")
      rngs = [np.random.default_rng((int(seed), int(sd), int(st))) for sd, st in zip(seeds, steps)]
    for i, rng in enumerate(rngs):
      a[i, :, :3] += rng.normal(0, 0.02, (horizon, 3))
      a[i, :, 6] = rng.choice([-1.0, 1.0], horizon)
    return a
  return policy


# ----------------------------------------------------------------------------- serving
def frames(runner, n, seed=0):
  """n single observation frames {key: (*shape)} of a runner's keys (plausible ranges,
  float32)."""
  rng = np.random.default_rng(seed)
  return [{k: rng.uniform(-0.5, 0.5, runner.obs_shapes[k]).astype(np.float32)
           for k in runner.obs_keys} for _ in range(n)]


def stack(*fs):
  """(1, len(fs), *shape) per key: the batch the in-process runner takes."""
  return {k: np.stack([f[k] for f in fs])[None] for k in fs[0]}


def train_debug_policy(directory) -> str:
  """A real stage-2 checkpoint (experiments/train.py mode=normal,debug: debug-size DP-MLP,
  DDIM-4) trained on `synthetic_demos` in `directory`; returns its checkpoints/ folder."""
  data = synthetic_demos(os.path.join(directory, "demos.hdf5"))
  workdir = os.path.join(directory, "run")
  config = "--config=" + os.path.join(REPO, "configs/train.py") + ":mode=normal,debug"
  run_binary("train.py", config, f"--config.data.dataset={data}", "--config.eval.num_episodes=0",
             f"--workdir={workdir}")
  return os.path.join(workdir, "checkpoints")
