"""robosuite adapter, scripted experts, robomimic HDF5 IO and the closed-loop evaluator.

Generates 2 low-dim demos per task (+ 2 Lift demos with images) once per session, reads them
back, corrupts copies to check the reader's errors, and runs the evaluator inline.
"""
import json
import os
import shutil

import numpy as np
import pytest

pytestmark = pytest.mark.sim
pytest.importorskip("robosuite")
h5py = pytest.importorskip("h5py")

from decoupled_jax.data import robomimic_hdf5 as rh  # noqa: E402
from decoupled_jax.sim import evaluator, frames  # noqa: E402
from decoupled_jax.sim import demos as generate_demos  # noqa: E402
from decoupled_jax.sim import robosuite_env as rse  # noqa: E402
from helpers import make_random_policy  # noqa: E402

TASKS = ["Lift", "Stack", "NutAssemblySquare", "PickPlaceCan"]
LOW_DIM = list(rse.LOW_DIM_KEYS)


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp("demos")
  summaries = {}
  for task in TASKS:
    summaries[task] = generate_demos.generate_task(task, str(root / "lowdim"), num_demos=2,
                                                   num_workers=1, progress=False)
  summaries["LiftImages"] = generate_demos.generate_task(
      "lift", str(root / "images"), num_demos=2, num_workers=1, images=True, progress=False)
  return root, summaries


@pytest.mark.parametrize("task", TASKS)
def test_generated_layout_and_reader(demo_dir, task):
  root, summaries = demo_dir
  s = summaries[task]
  assert s["written"] == 2 and s["expert_success_rate"] > 0
  path = str(root / "lowdim" / f"{task}.hdf5")
  assert not os.path.exists(path + ".tmp")
  with h5py.File(path, "r") as f:
    env_args = json.loads(f["data"].attrs["env_args"])
    assert env_args["env_name"] == task and env_args["type"] == 1
    kw = env_args["env_kwargs"]
    arm = kw["controller_configs"]["body_parts"]["right"]
    assert arm["type"] == "OSC_POSE" and arm["input_type"] == "absolute"
    assert arm["input_ref_frame"] == "world" and kw["control_freq"] == 20
    names = sorted(f["data"].keys(), key=rh.demo_sort_key)
    assert names == ["demo_0", "demo_1"]
    total = 0
    for n in names:
      g = f["data"][n]
      t = int(g.attrs["num_samples"])
      total += t
      assert g["actions"].shape == (t, 7)
      assert g["states"].shape[0] == t and g["states"].ndim == 2
      assert g["rewards"].shape == (t,) and g["dones"].shape == (t,)
      assert g["dones"][-1] == 1
      for k, d in {"robot0_eef_pos": 3, "robot0_eef_quat": 4, "robot0_gripper_qpos": 2,
                   "robot0_joint_pos": 7}.items():
        assert g["obs"][k].shape == (t, d), k
      assert g["obs"]["object"].shape[0] == t
      assert np.all(np.abs(g["actions"][:, 6]) == 1.0)
    assert int(f["data"].attrs["total"]) == total
    train = [x.decode() for x in f["mask/train"][()]]
    valid = [x.decode() for x in f["mask/valid"][()]]
    assert sorted(train + valid) == names and f["mask/train"].dtype.kind == "S"

  ep = rh.load_robomimic_hdf5(path, LOW_DIM)
  assert ep.num_episodes == 2 and ep.num_frames == total
  assert set(ep.fields) == set(LOW_DIM) | {"actions"}
  assert ep.fields["actions"].shape == (total, 7) and ep.fields["actions"].dtype == np.float32
  assert ep.attrs["env_args"]["env_name"] == task
  assert rh.load_robomimic_hdf5(path, LOW_DIM, filter_key="valid").num_episodes == 1
  # Actions are absolute site poses: the first action stays close to the observed pose.
  q = ep.fields["robot0_eef_quat"][0].astype(np.float64)
  a0 = ep.fields["actions"][0].astype(np.float64)
  assert np.linalg.norm(a0[:3] - ep.fields["robot0_eef_pos"][0]) < 0.05
  r_obs = frames.hand_quat_to_site_matrix(q)
  from scipy.spatial.transform import Rotation
  r_act = Rotation.from_rotvec(a0[3:6]).as_matrix()
  assert Rotation.from_matrix(r_obs.T @ r_act).magnitude() < 0.2


def test_images_and_resume(demo_dir):
  root, summaries = demo_dir
  path = str(root / "images" / "Lift.hdf5")
  keys = LOW_DIM + list(rse.IMAGE_KEYS)
  ep = rh.load_robomimic_hdf5(path, keys)
  for k in rse.IMAGE_KEYS:
    assert ep.fields[k].dtype == np.uint8 and ep.fields[k].shape[1:] == (84, 84, 3)
    assert ep.fields[k].std() > 1.0  # not blank
  assert set(rh.load_robomimic_hdf5(path, keys, load_images=False).fields) == set(LOW_DIM) | {"actions"}
  # Rerunning continues from the shards: nothing new for 2 demos, one new attempt for 3.
  s = generate_demos.generate_task("lift", str(root / "images"), num_demos=2, images=True,
                                   progress=False)
  assert s["this_run"]["attempts"] == 0 and s["written"] == 2
  s = generate_demos.generate_task("lift", str(root / "lowdim"), num_demos=3, progress=False)
  assert s["this_run"]["attempts"] == 1 and s["written"] == 3
  assert rh.load_robomimic_hdf5(str(root / "lowdim" / "Lift.hdf5"), LOW_DIM).num_episodes == 3


def _corrupt(src, dst, fn):
  shutil.copy(src, dst)
  with h5py.File(dst, "r+") as f:
    fn(f)
  return str(dst)


def test_reader_errors(demo_dir, tmp_path):
  root, _ = demo_dir
  src = str(root / "lowdim" / "Stack.hdf5")

  p = _corrupt(src, tmp_path / "missing.hdf5", lambda f: f.__delitem__("data/demo_1/obs/object"))
  with pytest.raises(rh.DatasetError, match=r"missing\.hdf5.*demo_1.*'object'"):
    rh.load_robomimic_hdf5(p, LOW_DIM)

  def nan_action(f):
    a = f["data/demo_0/actions"][()]
    a[3, 2] = np.nan
    f["data/demo_0/actions"][...] = a
  p = _corrupt(src, tmp_path / "nan.hdf5", nan_action)
  with pytest.raises(rh.DatasetError, match=r"nan\.hdf5.*demo_0/actions.*NaN"):
    rh.load_robomimic_hdf5(p, LOW_DIM)

  def short(f):
    v = f["data/demo_1/obs/robot0_eef_pos"][()]
    del f["data/demo_1/obs/robot0_eef_pos"]
    f["data/demo_1/obs/robot0_eef_pos"] = v[:-3]
  p = _corrupt(src, tmp_path / "short.hdf5", short)
  with pytest.raises(rh.DatasetError, match=r"short\.hdf5.*demo_1/obs/robot0_eef_pos.*mismatched"):
    rh.load_robomimic_hdf5(p, LOW_DIM)

  def bad_image(f):
    t = f["data/demo_0/actions"].shape[0]
    f["data/demo_0/obs/agentview_image"] = np.zeros((t, 84, 84), np.uint8)
  p = _corrupt(src, tmp_path / "img.hdf5", bad_image)
  with pytest.raises(rh.DatasetError, match=r"img\.hdf5.*demo_0/obs/agentview_image.*image shape"):
    rh.load_robomimic_hdf5(p, LOW_DIM + ["agentview_image"])

  empty = tmp_path / "empty.hdf5"
  empty.write_bytes(b"")
  with pytest.raises(rh.DatasetError, match=r"empty\.hdf5.*empty"):
    rh.load_robomimic_hdf5(str(empty), LOW_DIM)
  nodemo = tmp_path / "nodemo.hdf5"
  with h5py.File(nodemo, "w") as f:
    f.create_group("data")
  with pytest.raises(rh.DatasetError, match=r"nodemo\.hdf5.*no demos"):
    rh.load_robomimic_hdf5(str(nodemo), LOW_DIM)
  with pytest.raises(rh.DatasetError, match="filter key"):
    rh.load_robomimic_hdf5(src, LOW_DIM, filter_key="nope")


def test_frames_hold_still():
  env = rse.make_env("lift", offscreen=False)
  try:
    np.testing.assert_allclose(frames.measure_hand_to_site(env), frames.HAND_TO_SITE, atol=1e-6)
    drift = frames.verify_hold_still(env, steps=20)
    assert drift["pos_drift_m"] < 1e-4 and drift["rot_drift_rad"] < 1e-3
    q = np.array([[0.1, 0.7, -0.2, 0.6]])
    q /= np.linalg.norm(q)
    back = frames.action_axis_angle_to_eef_quat(frames.eef_quat_to_action_axis_angle(q))
    assert min(np.abs(back - q).max(), np.abs(back + q).max()) < 1e-9
  finally:
    env.close()


def test_evaluator_inline_random_policy(tmp_path):
  calls = []
  base = make_random_policy(horizon=8)

  def policy(obs):
    calls.append({k: v.copy() for k, v in obs.items()})
    return base(obs)

  out = evaluator.evaluate_policy(policy, "lift", num_episodes=2, seeds=[5, 6], n_obs_steps=2,
                                  n_action_steps=8, max_steps=12, num_workers=0,
                                  use_images=False, video_dir=str(tmp_path / "videos"),
                                  num_videos=1, video_size=64,
                                  json_path=str(tmp_path / "eval.json"))
  assert out["num_episodes"] == 2 and len(out["episodes"]) == 2
  assert [e["seed"] for e in out["episodes"]] == [5, 6]
  assert all(e["length"] <= 12 for e in out["episodes"])
  lo, hi = out["ci95"]
  assert 0.0 <= lo <= out["success_rate"] <= hi <= 1.0
  assert out["policy_latency_ms"] > 0 and out["env_steps_per_s"] > 0
  assert out["env_steps"] == sum(e["length"] for e in out["episodes"])
  first = calls[0]
  assert first["robot0_eef_pos"].shape == (1, 2, 3) and first["object"].dtype == np.float32
  np.testing.assert_array_equal(first["robot0_eef_pos"][:, 0], first["robot0_eef_pos"][:, 1])
  assert not np.array_equal(calls[1]["robot0_eef_pos"][:, 0], calls[1]["robot0_eef_pos"][:, 1])
  assert len(out["videos"]) == 1 and os.path.getsize(out["videos"][0]) > 0
  assert json.load(open(tmp_path / "eval.json"))["num_episodes"] == 2


def test_wilson_interval():
  assert evaluator.wilson_interval(0, 10) == pytest.approx((0.0, 0.27754), abs=1e-4)
  assert evaluator.wilson_interval(5, 10) == pytest.approx((0.23659, 0.76341), abs=1e-4)
  assert evaluator.wilson_interval(10, 10) == pytest.approx((0.72246, 1.0), abs=1e-4)
  assert evaluator.wilson_interval(45, 50) == pytest.approx((0.78640, 0.95652), abs=1e-4)
  assert evaluator.wilson_interval(0, 0) == (0.0, 1.0)
