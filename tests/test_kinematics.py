"""Panda FK (MJX, plain JAX, C reference, robosuite), the stage-1 generator and demo pairs."""
import importlib.util

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from decoupled_jax.data import rotation
from decoupled_jax.data.robomimic_hdf5 import DatasetError
from decoupled_jax.kinematics import demo_pairs, panda, trajectories

POS_TOL = 1e-5   # m
ROT_TOL = 1e-4   # rad


@pytest.fixture(scope="module")
def model_info():
  return panda.load_panda_kinematics()


@pytest.fixture(scope="module")
def random_q(model_info):
  _, info = model_info
  return np.random.default_rng(0).uniform(info.joint_lower, info.joint_upper, size=(1024, 7))


@pytest.fixture(scope="module")
def sampler():
  return trajectories.make_fk_window_sampler(dict(horizon=16, signal="jp"))


def test_model_is_kinematics_only_with_spec_limits(model_info):
  model, info = model_info
  assert model.nq == 7 and model.nv == 7 and model.ngeom == 0 and model.nmesh == 0
  assert model.opt.disableflags & mujoco_flag("mjDSBL_CONTACT")
  np.testing.assert_allclose(np.stack([info.joint_lower, info.joint_upper]),
                             panda.SPEC_JOINT_LIMITS, atol=1e-9)
  np.testing.assert_allclose(model.body_pos[1], panda.BASE_POS)


def mujoco_flag(name):
  import mujoco
  return int(getattr(mujoco.mjtDisableBit, name))


def test_builtin_chain_equals_robosuite_mjcf():
  if panda.robosuite_assets_dir() is None:
    pytest.skip("robosuite not installed")
  a, _ = panda.load_panda_kinematics(use_robosuite_assets=True)
  b, _ = panda.load_panda_kinematics(use_robosuite_assets=False)
  for k in ("body_pos", "body_quat", "jnt_axis", "jnt_range", "site_pos", "site_quat",
            "body_parentid", "jnt_bodyid"):
    np.testing.assert_allclose(getattr(a, k), getattr(b, k), atol=1e-12, err_msg=k)


def test_tree_fk_matches_mj_kinematics(model_info, random_q):
  model, _ = model_info
  tree = jax.tree.map(jnp.asarray, panda.kinematics_tree(model))

  @jax.jit
  def both(tree, q):
    return panda.fk_tree(tree, q, "hand"), panda.fk_tree(tree, q, "grip_site")

  out = both(tree, jnp.asarray(random_q, jnp.float32))
  for site, (p, q) in zip(("hand", "grip_site"), out):
    p_ref, q_ref = panda.fk_cpu(model, random_q, site)
    assert np.abs(np.asarray(p) - p_ref).max() <= POS_TOL, site
    assert panda.quat_distance(np.asarray(q, np.float64), q_ref).max() <= ROT_TOL, site


def test_hand_to_site_rotation(model_info, random_q):
  model, _ = model_info
  _, q_hand = panda.fk_cpu(model, random_q[:50], "hand")
  _, q_site = panda.fk_cpu(model, random_q[:50], "grip_site")
  h = panda.hand_to_site_rotation()
  np.testing.assert_allclose(h, [[0, 1, 0], [-1, 0, 0], [0, 0, 1]], atol=1e-6)  # R_z(-90 deg)
  np.testing.assert_allclose(rotation.quat_xyzw_to_matrix(q_hand) @ h,
                             rotation.quat_xyzw_to_matrix(q_site), atol=1e-6)


def test_mjx_fk_matches_mj_kinematics(model_info, random_q):
  model, _ = model_info
  p_ref, q_ref = panda.fk_cpu(model, random_q)
  mjx_model = panda.put_mjx_model(model)
  p, q = jax.jit(panda.fk_mjx)(mjx_model, jnp.asarray(random_q, jnp.float32))
  assert p.shape == (1024, 3) and q.shape == (1024, 4)
  assert np.abs(np.asarray(p) - p_ref).max() <= POS_TOL
  assert panda.quat_distance(np.asarray(q, np.float64), q_ref).max() <= ROT_TOL


@pytest.mark.sim
def test_fk_matches_robosuite_lift(model_info):
  if importlib.util.find_spec("robosuite") is None:
    pytest.skip("robosuite not installed")
  try:
    import robosuite
  except Exception as e:  # noqa: BLE001  (robosuite import fails on unsupported mujoco)
    pytest.skip(f"robosuite not importable: {e}")
  import mujoco
  model, info = model_info
  env = robosuite.make("Lift", robots="Panda", has_renderer=False, has_offscreen_renderer=False,
                       use_camera_obs=False)
  try:
    env.reset()
    m = env.sim.model._model
    base = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, "robot0_base")
    np.testing.assert_allclose(m.body_pos[base], panda.BASE_POS, atol=1e-9)
    np.testing.assert_allclose(m.body_quat[base], panda.BASE_QUAT_WXYZ, atol=1e-9)
    robot = env.robots[0]
    np.testing.assert_allclose(robot.init_qpos, panda.INIT_QPOS, atol=1e-12)
    qidx = robot._ref_joint_pos_indexes
    rng = np.random.default_rng(1)
    qs = np.concatenate([panda.INIT_QPOS[None],
                         rng.uniform(info.joint_lower, info.joint_upper, size=(24, 7))])
    site = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_SITE, "gripper0_right_grip_site")
    got_pos, got_quat, got_site_quat, got_site_mat = [], [], [], []
    for q in qs:
      env.sim.data.qpos[qidx] = q
      env.sim.forward()
      obs = env._get_observations(force_update=True)
      np.testing.assert_allclose(obs["robot0_joint_pos"], q, atol=1e-12)
      got_pos.append(obs["robot0_eef_pos"])
      got_quat.append(obs["robot0_eef_quat"])
      got_site_quat.append(obs["robot0_eef_quat_site"])
      got_site_mat.append(env.sim.data.site_xmat[site].reshape(3, 3).copy())
  finally:
    env.close()
  p, q = panda.fk_cpu(model, qs, "hand")
  assert np.abs(p - np.array(got_pos)).max() <= POS_TOL
  assert panda.quat_distance(q, np.array(got_quat)).max() <= ROT_TOL
  p_site, qs_site = panda.fk_cpu(model, qs, "grip_site")
  np.testing.assert_allclose(p_site, p, atol=1e-12)   # both sites sit at robot0_eef_pos
  ref = rotation.matrix_to_quat_xyzw(np.array(got_site_mat))
  assert panda.quat_distance(qs_site, ref).max() <= ROT_TOL
  # robosuite's `robot0_eef_quat_site` goes through a float32 mat2quat: ~5e-4 rad of noise.
  assert panda.quat_distance(qs_site, np.array(got_site_quat, np.float64)).max() <= 2e-3


def _check_windows(cond, target, qpos, gripper, info, cfg, model):
  b, h = qpos.shape[:2]
  assert target.shape == (b, h, 10)
  assert cond.shape == (b, h, cfg.cond_dim)
  # joint limits and velocity limits (finite differences of min-jerk stay under the peak)
  assert np.all(qpos >= info.joint_lower) and np.all(qpos <= info.joint_upper)
  vel = np.abs(np.diff(qpos, axis=1)) * cfg.fps
  assert np.all(vel <= info.velocity_limits + 1e-4)
  assert set(np.unique(gripper)) <= {-1.0, 1.0}
  np.testing.assert_array_equal(target[..., 9], gripper)
  # rot6d rows orthonormal
  r1, r2 = target[..., 3:6], target[..., 6:9]
  np.testing.assert_allclose(np.linalg.norm(r1, axis=-1), 1, atol=1e-5)
  np.testing.assert_allclose(np.linalg.norm(r2, axis=-1), 1, atol=1e-5)
  np.testing.assert_allclose(np.sum(r1 * r2, axis=-1), 0, atol=1e-5)
  # target = FK of the joints (C reference), in the library's rot6d convention
  p_ref, q_ref = panda.fk_cpu(model, qpos.reshape(-1, 7), cfg.site)
  np.testing.assert_allclose(target[..., :3].reshape(-1, 3), p_ref, atol=POS_TOL)
  np.testing.assert_allclose(target[..., 3:9].reshape(-1, 6), rotation.quat_xyzw_to_rot6d(q_ref),
                             atol=1e-5)


def test_generator_jp(sampler, model_info):
  model, info = model_info
  cond, target, qpos, gripper = map(np.asarray, sampler(jax.random.PRNGKey(0), 256, True))
  _check_windows(cond, target, qpos, gripper, info, sampler.config, model)
  np.testing.assert_array_equal(cond[..., :7], qpos)
  np.testing.assert_array_equal(cond[..., 7], gripper)
  # both gripper states occur, switches happen, motion is not degenerate
  assert 0.3 < (gripper > 0).mean() < 0.7 and np.any(np.diff(gripper, axis=1) != 0)
  assert np.abs(np.diff(qpos, axis=1)).max() > 0.01
  # deterministic in the rng; different keys differ (same shapes: no recompilation)
  t2 = np.asarray(sampler(jax.random.PRNGKey(0), 256, True)[1])
  np.testing.assert_array_equal(t2, target)
  assert not np.allclose(np.asarray(sampler(jax.random.PRNGKey(1), 256, True)[1]), target)
  # `sampler(...)` is itself `jax.jit(sample_pure)` with the model arrays as arguments, i.e.
  # the generator runs inside a jitted function with no host round-trip.


def test_generator_keeps_end_effector_in_workspace_box(sampler):
  """Via-points are chosen inside the position-normalisation box, so most frames (all but the
  excursions between via-points) normalise into [-1, 1]; without the box far fewer do."""
  lo, hi = (np.asarray(b) for b in sampler.config.workspace_box)
  pos = np.asarray(sampler(jax.random.PRNGKey(5), 256)[1])[..., :3].reshape(-1, 3)
  inside = np.all((pos >= lo) & (pos <= hi), axis=-1).mean()
  free = trajectories.make_fk_window_sampler(dict(horizon=16, workspace_box=()))
  pos_free = np.asarray(free(jax.random.PRNGKey(5), 256)[1])[..., :3].reshape(-1, 3)
  inside_free = np.all((pos_free >= lo) & (pos_free <= hi), axis=-1).mean()
  assert inside > 0.8 and inside_free < 0.7, (inside, inside_free)


def test_generator_eepose_h10(model_info):
  model, info = model_info
  s = trajectories.make_fk_window_sampler(dict(horizon=10, signal="eepose"))
  cond, target, qpos, gripper = map(np.asarray, s(jax.random.PRNGKey(2), 64, True))
  _check_windows(cond, target, qpos, gripper, info, s.config, model)
  np.testing.assert_array_equal(cond, target)


def test_generator_none_signal_shapes():
  s = trajectories.make_fk_window_sampler(dict(horizon=10, signal="none"))
  cond, target = jax.eval_shape(lambda r: s.sample_pure(r, s.params, 8), jax.random.PRNGKey(0))
  assert cond.shape == (8, 10, 8) and target.shape == (8, 10, 10)
  # only the condition is computed (the rest is dead code for XLA): cheap to compile
  cond = jax.jit(lambda r, p: s.sample_pure(r, p, 8)[0])(jax.random.PRNGKey(0), s.params)
  assert cond.shape == (8, 10, 8) and not np.asarray(cond).any()


def test_generator_delta_target_is_the_motion_to_the_next_frame(model_info):
  """target='delta': frame t's target is the motion from frame t to t+1 as a delta
  controller's action (per-step displacement / delta_pos_scale and the base-frame rotation
  R_{t+1} R_t^T with its rotation vector / delta_rot_scale, each clipped to [-1, 1]; the
  gripper command of frame t), checked against the FK of the window's own joints (C
  reference) and inverted by delta_to_physical where nothing was clipped."""
  model, info = model_info
  s = trajectories.make_fk_window_sampler(dict(horizon=16, target="delta",
                                               speed_range=(0.1, 0.5), via_candidates=4))
  cfg = s.config
  cond, target, qpos, gripper, poses = map(np.asarray, s(jax.random.PRNGKey(3), 128, True, True))
  assert cond.shape == (128, 16, 8) and target.shape == (128, 16, 10) and qpos.shape == (128, 16, 7)
  np.testing.assert_array_equal(cond[..., :7], qpos)        # the condition: the first H frames
  np.testing.assert_array_equal(target[..., 9], gripper)
  assert np.abs(target[..., :3]).max() <= 1.0
  p_ref, q_ref = panda.fk_cpu(model, qpos.reshape(-1, 7), cfg.site)
  p_ref, m_ref = p_ref.reshape(128, 16, 3), rotation.quat_xyzw_to_matrix(q_ref).reshape(128, 16, 3, 3)
  np.testing.assert_allclose(poses[..., :3], p_ref, atol=POS_TOL)
  dpos = (p_ref[:, 1:] - p_ref[:, :-1]) / cfg.delta_pos_scale
  w = rotation.matrix_to_axis_angle(m_ref[:, 1:] @ np.swapaxes(m_ref[:, :-1], -1, -2))
  w = w / cfg.delta_rot_scale
  free = (np.abs(dpos) < 0.98).all(-1) & (np.abs(w) < 0.98).all(-1)
  assert free.mean() > 0.7, free.mean()          # the slow segments are mostly unclipped
  np.testing.assert_allclose(target[:, :-1, :3][free], dpos[free], atol=2e-3)
  np.testing.assert_allclose(rotation.rot6d_to_axis_angle(target[:, :-1, 3:9].astype(np.float64))[free],
                             w[free], atol=2e-3)
  clipped = np.abs(dpos) >= 1.0
  np.testing.assert_array_equal(target[:, :-1, :3][clipped], np.sign(dpos[clipped]))
  phys = trajectories.delta_to_physical(target, cfg, s.info)
  np.testing.assert_allclose(phys[:, :-1, :3][free], (p_ref[:, 1:] - p_ref[:, :-1])[free], atol=3e-5)
  with pytest.raises(ValueError, match="delta_pos_scale"):
    trajectories.FKWindowConfig(target="delta", delta_pos_scale=0.0)


def test_jv_signal_is_the_joints_and_the_step_to_the_next_frame(model_info):
  """signal 'jv': [joints, q_{t+1} - q_t, gripper] per frame (the last frame's step reaches
  the generated frame H+1), normalised by the generator's fastest step into [-1, 1]; the
  delta target of the same window is the FK motion of those steps."""
  from decoupled_jax import config_lib
  from decoupled_jax.benchmarks import fk
  model, info = model_info
  s = trajectories.make_fk_window_sampler(dict(horizon=8, signal="jv", target="delta",
                                               via_candidates=2))
  assert s.cond_dim == 15 == s.config.cond_dim
  cond, target, qpos, gripper = map(np.asarray, s(jax.random.PRNGKey(4), 64, True))
  assert cond.shape == (64, 8, 15)
  np.testing.assert_array_equal(cond[..., :7], qpos)
  np.testing.assert_array_equal(cond[..., 14], gripper)
  np.testing.assert_allclose(cond[:, :-1, 7:14], np.diff(qpos, axis=1), atol=1e-6)
  q_next = qpos[:, -1] + cond[:, -1, 7:14]                  # the generated frame H+1
  p_last, _ = panda.fk_cpu(model, qpos[:, -1], s.config.site)
  p_next, _ = panda.fk_cpu(model, q_next, s.config.site)
  dpos = (p_next - p_last) / s.config.delta_pos_scale
  free = (np.abs(dpos) < 0.98).all(-1)
  np.testing.assert_allclose(target[:, -1, :3][free], dpos[free], atol=2e-3)
  c = config_lib.pretrain_config("dp_mlp", signal="jv")
  c.data.fk.update(target="delta", via_candidates=2)
  c.data.horizon, c.eval.num_windows = 8, 16
  data = fk.load(c)
  n = np.asarray(data.normalise(cond, target)["obs"]["cond"])
  assert np.abs(n[..., 7:14]).max() <= 1.0 and np.abs(n[..., 7:14]).max() > 0.05
  c.data.source, c.data.dataset = "demos", __file__
  with pytest.raises(config_lib.ConfigError, match="data.signal"):
    config_lib.validate(c)


def test_a_delta_target_needs_generated_pose_data():
  """One line naming data.fk.target, before anything is built, for a delta target on
  demonstration pairs or a joint-space robot."""
  from decoupled_jax import config_lib
  c = config_lib.pretrain_config("dp_mlp")
  c.data.fk.target = "delta"
  config_lib.validate(c)
  c.robot.action_space = "joint_pos"
  with pytest.raises(config_lib.ConfigError, match="data.fk.target"):
    config_lib.validate(c)
  c.robot.action_space = "ee_pose"
  c.data.source, c.data.dataset = "demos", __file__   # (a file that exists)
  with pytest.raises(config_lib.ConfigError, match="data.fk.target"):
    config_lib.validate(c)


def test_config_validation():
  with pytest.raises(ValueError, match="signal"):
    trajectories.FKWindowConfig(signal="joints")
  with pytest.raises(ValueError, match="target"):
    trajectories.FKWindowConfig(target="velocity")
  with pytest.raises(ValueError, match="unknown"):
    trajectories.FKWindowConfig.from_any({"horizn": 16})


# ---------------------------------------------------------------------------------------------
# Demo pairs


def _write_demo_file(path, lengths, drop=None):
  import h5py
  rng = np.random.default_rng(0)
  raw = {}
  with h5py.File(path, "w") as f:
    for i, n in enumerate(lengths):
      g = f.create_group(f"data/demo_{i}")
      jp = rng.normal(size=(n, 7))
      pos = rng.normal(size=(n, 3))
      quat = rng.normal(size=(n, 4))
      quat /= np.linalg.norm(quat, axis=-1, keepdims=True)
      act = np.concatenate([rng.normal(size=(n, 6)), rng.choice([-1.0, 1.0], size=(n, 1))], 1)
      items = {"obs/robot0_joint_pos": jp, "obs/robot0_eef_pos": pos, "obs/robot0_eef_quat": quat,
               "actions": act}
      for k, v in items.items():
        if drop == (i, k):
          continue
        g.create_dataset(k, data=v)
      raw[i] = items
  return raw


def test_demo_pairs_and_windows(tmp_path):
  path = tmp_path / "demos.hdf5"
  # demo_10 sorts after demo_2 (numeric order)
  lengths = [5, 3, 4] + [2] * 8
  raw = _write_demo_file(path, lengths)
  data = demo_pairs.load_demo_pairs(path, signal="jp")
  assert data.attrs["demos"][:3] == ("demo_0", "demo_1", "demo_2")
  assert data.attrs["demos"][-1] == "demo_10"
  assert data.fields["cond"].shape == (sum(lengths), 8)
  assert data.fields["target"].shape == (sum(lengths), 10)
  ep1 = data.episode(1)
  r = raw[1]
  np.testing.assert_allclose(ep1["cond"][:, :7], r["obs/robot0_joint_pos"], atol=1e-6)
  np.testing.assert_allclose(ep1["cond"][:, 7], r["actions"][:, -1])
  np.testing.assert_allclose(ep1["target"][:, :3], r["obs/robot0_eef_pos"], atol=1e-6)
  r_hand = rotation.quat_xyzw_to_matrix(r["obs/robot0_eef_quat"])
  np.testing.assert_allclose(ep1["target"][:, 3:9],
                             rotation.matrix_to_rot6d(r_hand @ panda.hand_to_site_rotation()),
                             atol=1e-6)
  hand = demo_pairs.load_demo_pairs(path, frame="hand")
  np.testing.assert_allclose(hand.episode(1)["target"][:, 3:9],
                             rotation.quat_xyzw_to_rot6d(r["obs/robot0_eef_quat"]), atol=1e-6)
  np.testing.assert_allclose(ep1["target"][:, 9], r["actions"][:, -1])

  # windows: same frames for cond and target, clamped at episode edges
  idx = demo_pairs.window_indices(data.episode_ends, 4)
  np.testing.assert_array_equal(idx[0], [0, 0, 0, 0])
  np.testing.assert_array_equal(idx[6], [5, 5, 5, 6])     # demo_1 starts at 5
  np.testing.assert_array_equal(idx[4], [1, 2, 3, 4])
  cond, target = demo_pairs.gather_windows(data, 4)
  np.testing.assert_array_equal(cond[6], data.fields["cond"][[5, 5, 5, 6]])
  np.testing.assert_array_equal(target[6], data.fields["target"][[5, 5, 5, 6]])
  c, t = demo_pairs.gather_windows(data, 4, np.random.default_rng(0).integers(0, len(idx), 16))
  assert c.shape == (16, 4, 8) and t.shape == (16, 4, 10)
  # every sampled window equals the window ending at its last frame (so it lies in one episode)
  ends = [np.flatnonzero((data.fields["target"] == row).all(-1))[0] for row in t[:, -1]]
  np.testing.assert_array_equal(t, demo_pairs.gather_windows(data, 4, ends)[1])
  np.testing.assert_array_equal(c, demo_pairs.gather_windows(data, 4, ends)[0])
  # demos / max_demos / filter keys select episodes
  sub = demo_pairs.load_demo_pairs(path, demos=["demo_10", "demo_1"])
  assert sub.attrs["demos"] == ("demo_10", "demo_1")
  np.testing.assert_array_equal(sub.episode(1)["cond"], ep1["cond"])
  assert demo_pairs.load_demo_pairs(path, max_demos=2).num_episodes == 2

  eep = demo_pairs.load_demo_pairs(path, signal="eepose")
  np.testing.assert_array_equal(eep.fields["cond"], eep.fields["target"])
  none = demo_pairs.load_demo_pairs(path, signal="none")
  assert none.fields["cond"].shape == (sum(lengths), 8) and not none.fields["cond"].any()


def test_demo_pairs_missing_key_names_file_demo_key(tmp_path):
  path = tmp_path / "bad.hdf5"
  _write_demo_file(path, [3, 3], drop=(1, "obs/robot0_eef_quat"))
  with pytest.raises(DatasetError, match=r"bad\.hdf5: data/demo_1/obs: missing key "
                                         r"'robot0_eef_quat'"):
    demo_pairs.load_demo_pairs(path)
  path2 = tmp_path / "bad2.hdf5"
  _write_demo_file(path2, [3], drop=(0, "actions"))
  with pytest.raises(DatasetError, match=r"bad2\.hdf5: data/demo_0: missing key 'actions'"):
    demo_pairs.load_demo_pairs(path2)
  good = tmp_path / "good.hdf5"
  _write_demo_file(good, [3, 3])
  with pytest.raises(DatasetError, match=r"good\.hdf5: data/demo_7: demo not found"):
    demo_pairs.load_demo_pairs(good, demos=["demo_7"])


@pytest.mark.parametrize("signal", ["jp", "eepose", "none"])
def test_stage1_paper_normalization_uses_data_limits_on_every_dim(sampler, signal):
  """data.normalization='paper' (the reference's, docs/method.md §1.1): condition and all 10
  target dims span exactly [-1, 1] on the sample they were fitted on; 'ours' keeps rot6d and
  the gripper raw and normalises joints by the Panda's limits, not the data's."""
  from decoupled_jax.benchmarks.fk import COND_KEY, stage1_normalizer
  cond, target = map(np.asarray, sampler(jax.random.PRNGKey(7), 512))
  if signal == "eepose":
    cond = target
  elif signal == "none":
    cond = np.zeros_like(cond)
  info, box = sampler.info, sampler.config.workspace_box
  paper = stage1_normalizer(signal, info.joint_lower, info.joint_upper, box, scheme="paper",
                            sample=(cond, target))
  fields = ["actions"] + ([COND_KEY] if signal != "none" else [])
  assert sorted(paper.fields) == sorted(fields)
  out = paper.normalize({COND_KEY: cond, "actions": target}, fields=fields)
  for f in fields:
    x = np.asarray(out[f]).reshape(-1, out[f].shape[-1])
    np.testing.assert_allclose(x.min(0), -1, atol=1e-5, err_msg=f)
    np.testing.assert_allclose(x.max(0), 1, atol=1e-5, err_msg=f)
  ours = stage1_normalizer(signal, info.joint_lower, info.joint_upper, box)
  o = ours.normalize({COND_KEY: cond, "actions": target},
                     fields=[f for f in ours.fields if f in (COND_KEY, "actions")])
  np.testing.assert_array_equal(np.asarray(o["actions"])[..., 3:], target[..., 3:])
  if signal == "jp":   # the Panda's limits, not the data's
    lo, hi = np.asarray(info.joint_lower), np.asarray(info.joint_upper)
    np.testing.assert_allclose(np.asarray(o[COND_KEY])[..., :7],
                               2 * (cond[..., :7] - lo) / (hi - lo) - 1, atol=1e-5)
  with pytest.raises(ValueError, match="config.data.normalization"):
    stage1_normalizer(signal, info.joint_lower, info.joint_upper, box, scheme="minmax")
