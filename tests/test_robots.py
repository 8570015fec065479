"""Stage 1 for any robot given its MJCF (issue 21): the loader, FK (plain JAX over the body tree
and MJX) against `mujoco.mj_kinematics` on robots with hinge and slide joints, trajectories
inside the limits, the Panda's windows unchanged, one-line config errors, and debug runs of
experiments/pretrain.py on a robot the library has never seen (tests/data/robots/README.md)."""
import importlib.util
import json
import os
import pathlib
import sys

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
import pytest

from decoupled_jax import config_lib
from decoupled_jax.errors import ConfigError
from decoupled_jax.kinematics import robot as robot_lib
from decoupled_jax.kinematics import trajectories
from helpers import REPO_PATH as REPO
from helpers import run_binary

ROBOTS = REPO / "tests" / "data" / "robots"
UR5E = str(ROBOTS / "ur5e" / "robot.xml")
GANTRY = str(ROBOTS / "gantry.xml")
GOLDEN = ROBOTS / "panda_windows_golden.npz"
POS_TOL, MAT_TOL = 2e-6, 2e-6     # float32 FK vs float64 mj_kinematics

ROBOT_CASES = {
    "ur5e": dict(mjcf=UR5E, ee_sites="ee_site"),
    # the packaged bimanual ALOHA (gym-aloha's MJCF; robot.PACKAGED)
    "aloha": robot_lib.packaged_robot_config("aloha"),
    # two arms, slides (two in one body, one with `ref`), off-centre hinges, finger joints
    "gantry_bimanual": dict(mjcf=GANTRY, ee_sites="left_ee,right_ee",
                            gripper=dict(joints="left_finger_joint;right_finger_joint",
                                         range=(0.0, 0.04))),
    # poses in a moving body's frame, joints in a chosen order, no gripper
    "gantry_torso_frame": dict(mjcf=GANTRY, ee_sites="right_ee", base="torso",
                               joints="right_telescope,right_wrist,right_shoulder,right_elbow",
                               gripper=dict(joints="none")),
}


def _robot(name):
  return robot_lib.load_robot(ROBOT_CASES[name])


def _random_q(info, n=256, seed=0):
  return np.random.default_rng(seed).uniform(info.joint_lower, info.joint_upper,
                                             size=(n, info.num_joints))


def _full_model_fk(model, info, q):
  """mj_kinematics of a model with everything (geoms, meshes, actuators, ...) in the base frame."""
  d = mujoco.MjData(model)
  sites = [mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, s) for s in info.sites]
  base = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, info.base) if info.base else 0
  adr = [model.jnt_qposadr[mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, j)]
         for j in info.joint_names]
  pos = np.empty((len(q), len(sites), 3))
  mat = np.empty((len(q), len(sites), 3, 3))
  for i, qi in enumerate(q):
    d.qpos[:] = model.qpos0
    d.qpos[adr] = qi
    mujoco.mj_kinematics(model, d)
    bp, bm = d.xpos[base], d.xmat[base].reshape(3, 3)
    for s, sid in enumerate(sites):
      pos[i, s] = bm.T @ (d.site_xpos[sid] - bp)
      mat[i, s] = bm.T @ d.site_xmat[sid].reshape(3, 3)
  return pos, mat


# ---------------------------------------------------------------------------------------------
# Loading and FK


def test_loader_resolves_joints_sites_and_defaults():
  ur = _robot("ur5e").info
  assert ur.joint_types == ("hinge",) * 6 and ur.num_sites == 1 and ur.workspace == "auto"
  np.testing.assert_allclose(ur.init_qpos, [-0.470, -1.735, 2.480, -2.275, -1.590, -1.991])
  assert ur.target_dim == 10 and ur.cond_dim("jp") == 7 and ur.cond_dim("eepose") == 10
  g = _robot("gantry_bimanual")
  info = g.info
  # every hinge/slide joint on the chains to both sites, in model order; fingers and the free
  # object are not arm joints
  assert info.joint_names == ("rail_x", "rail_y", "torso_yaw", "left_shoulder", "left_elbow",
                              "left_telescope", "left_wrist", "right_shoulder", "right_elbow",
                              "right_telescope", "right_wrist")
  assert info.joint_types.count("slide") == 4
  assert info.num_grippers == 2 and info.pose_dim == 20 and info.joint_dim == 13
  assert g.model.ngeom == 0 and g.model.nmesh == 0 and g.model.nu == 0   # stripped
  np.testing.assert_allclose(info.joint_lower[2], -np.radians(120))        # degrees compiled
  assert info.init_qpos[3] == pytest.approx(0.35)                            # keyframe 'home'
  t = _robot("gantry_torso_frame").info
  assert t.joint_names == ("right_telescope", "right_wrist", "right_shoulder", "right_elbow")
  assert t.num_grippers == 0 and t.pose_dim == 9 and t.joint_dim == 4
  # the built-in Panda is the library's model, unchanged
  p = robot_lib.load_robot(None).info
  assert p.joint_names == tuple(f"joint{i}" for i in range(1, 8)) and p.workspace == "box"
  assert p.layout.identity_qpos and p.target_dim == 10 and p.cond_dim("jp") == 8


def test_mesh_files_are_never_read(tmp_path):
  """An MJCF whose meshes are absent loads: geoms and meshes are stripped before compiling."""
  xml = pathlib.Path(GANTRY).read_text().replace(
      '<worldbody>', '<asset><mesh name="m" file="meshes/absent.stl"/></asset>\n<worldbody>', 1
  ).replace('<geom type="box" size="0.08 0.08 0.03"/>', '<geom type="mesh" mesh="m"/>')
  path = tmp_path / "with_mesh.xml"
  path.write_text(xml)
  with pytest.raises(ValueError):
    mujoco.MjModel.from_xml_path(str(path))      # MuJoCo itself needs the mesh
  info = robot_lib.load_robot(dict(mjcf=str(path), ee_sites="left_ee")).info
  assert info.num_joints == 7


@pytest.mark.parametrize("name", list(ROBOT_CASES))
def test_fk_tree_matches_mj_kinematics(name):
  r = _robot(name)
  info = r.info
  q = _random_q(info)
  p_ref, m_ref = robot_lib.fk_cpu_sites(r.model, q, info)
  tree = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), robot_lib.kinematics_tree(r.model))
  p, m = jax.jit(lambda t, x: robot_lib.fk_tree_sites(t, x, info.layout))(
      tree, jnp.asarray(q, jnp.float32))
  assert p.shape == (len(q), info.num_sites, 3)
  assert np.abs(np.asarray(p) - p_ref).max() <= POS_TOL
  assert np.abs(np.asarray(m) - m_ref).max() <= MAT_TOL
  # the stripped model's kinematics are the full MJCF's (geoms, actuators, keyframes, lights)
  if name not in ("ur5e", "aloha"):
    p_full, m_full = _full_model_fk(mujoco.MjModel.from_xml_path(GANTRY), info, q[:32])
    np.testing.assert_allclose(p_ref[:32], p_full, atol=1e-12)
    np.testing.assert_allclose(m_ref[:32], m_full, atol=1e-12)
  # float64 tree FK matches to rounding
  with jax.enable_x64(True):
    tree64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), robot_lib.kinematics_tree(r.model))
    p64, m64 = robot_lib.fk_tree_sites(tree64, jnp.asarray(q[:16], jnp.float64), info.layout)
    assert np.abs(np.asarray(p64) - p_ref[:16]).max() <= 1e-12
    assert np.abs(np.asarray(m64) - m_ref[:16]).max() <= 1e-12


def test_ur5e_copy_has_the_wheels_kinematics():
  spec = importlib.util.find_spec("robosuite")
  if spec is None:
    pytest.skip("robosuite not installed")
  wheel = (pathlib.Path(list(spec.submodule_search_locations)[0]) / "models" / "assets" /
           "robots" / "ur5e" / "robot.xml")
  full = mujoco.MjModel.from_xml_path(str(wheel))          # with its meshes
  r = _robot("ur5e")
  q = _random_q(r.info, 32, seed=3)
  ours = mujoco.MjData(r.model)
  theirs = mujoco.MjData(full)
  hand = mujoco.mj_name2id(full, mujoco.mjtObj.mjOBJ_BODY, "right_hand")
  p_ref, m_ref = robot_lib.fk_cpu_sites(r.model, q, r.info)
  for i, qi in enumerate(q):
    ours.qpos[:] = qi
    theirs.qpos[:] = qi
    mujoco.mj_kinematics(r.model, ours)
    mujoco.mj_kinematics(full, theirs)
    np.testing.assert_allclose(ours.xpos[1:], theirs.xpos[1:], atol=1e-12)
    # ee_site sits at the origin of robosuite's gripper mount `right_hand`
    np.testing.assert_allclose(p_ref[i, 0], theirs.xpos[hand], atol=1e-12)
    np.testing.assert_allclose(m_ref[i, 0], theirs.xmat[hand].reshape(3, 3), atol=1e-12)


@pytest.mark.parametrize("name", ["ur5e", "gantry_bimanual"])
def test_mjx_fk_matches_mj_kinematics(name):
  r = _robot(name)
  info = r.info
  q = _random_q(info, 128, seed=1)
  p_ref, m_ref = robot_lib.fk_cpu_sites(r.model, q, info)
  mjx_model = robot_lib.put_mjx_model(r.model)
  p, m = jax.jit(lambda mm, x: robot_lib.fk_mjx_sites(mm, x, info.layout, info.qpos_adr))(
      mjx_model, jnp.asarray(q, jnp.float32))
  assert np.abs(np.asarray(p) - p_ref).max() <= POS_TOL
  assert np.abs(np.asarray(m) - m_ref).max() <= MAT_TOL


# ---------------------------------------------------------------------------------------------
# Trajectories


def test_trajectories_stay_within_limits_and_targets_are_fk():
  r = _robot("gantry_bimanual")
  info = r.info
  s = trajectories.make_fk_window_sampler(dict(horizon=16, signal="jp", workspace_box=()), r)
  cond, target, q, grip, poses = map(np.asarray, s(jax.random.PRNGKey(0), 128, True, True))
  b, h = q.shape[:2]
  assert q.shape == (b, h, 11) and grip.shape == (b, h, 2)
  assert target.shape == (b, h, 20) and cond.shape == (b, h, 13)
  assert np.all(q >= info.joint_lower) and np.all(q <= info.joint_upper)
  vel = np.abs(np.diff(q, axis=1)) * s.config.fps
  assert np.all(vel <= info.velocity_limits + 1e-4)
  assert np.abs(np.diff(q, axis=1)).max() > 0.01                      # it moves
  # slides move (metres) and the near-home component is centred on the keyframe
  slides = [i for i, t in enumerate(info.joint_types) if t == "slide"]
  assert np.ptp(q[..., slides]) > 0.05
  # gripper commands: the configured (open, close) values, independent per arm
  np.testing.assert_array_equal(np.unique(grip), np.float32([0.0, 0.04]))
  assert not np.array_equal(grip[..., 0], grip[..., 1])
  # target = [pos, rot6d, gripper] per site = FK (mj_kinematics) of the joints
  p_ref, m_ref = robot_lib.fk_cpu_sites(r.model, q.reshape(-1, 11), info)
  for site in range(2):
    blk = target[..., site * 10:(site + 1) * 10].reshape(-1, 10)
    np.testing.assert_allclose(blk[:, :3], p_ref[:, site], atol=POS_TOL)
    np.testing.assert_allclose(blk[:, 3:9], m_ref[:, site, :2, :].reshape(-1, 6), atol=MAT_TOL)
    np.testing.assert_array_equal(blk[:, 9], grip[..., site].reshape(-1))
  np.testing.assert_array_equal(poses, target)
  np.testing.assert_array_equal(cond, np.concatenate([q, grip], -1))
  # the other signals and the joint-position action space
  for signal, dc in (("eepose", 20), ("none", 13)):
    c2, t2 = s.__class__(trajectories.FKWindowConfig(horizon=16, signal=signal,
                                                     workspace_box=()), info, s.params,
                         s.mj_model)(jax.random.PRNGKey(0), 128)
    np.testing.assert_array_equal(np.asarray(t2), target)        # same rng -> same windows
    assert c2.shape == (b, h, dc)
    if signal == "eepose":
      np.testing.assert_array_equal(np.asarray(c2), target)
    else:
      assert not np.asarray(c2).any()
  jp = robot_lib.load_robot(dict(ROBOT_CASES["gantry_bimanual"], action_space="joint_pos"))
  sj = trajectories.make_fk_window_sampler(dict(horizon=16, signal="eepose", workspace_box=()),
                                           jp)
  cj, tj, qj, gj = map(np.asarray, sj(jax.random.PRNGKey(0), 128, True))
  np.testing.assert_array_equal(tj, np.concatenate([qj, gj], -1))  # target: joints + grippers
  np.testing.assert_array_equal(cj, target)                        # condition: the poses
  assert sj.target_dim == 13 and sj.cond_dim == 20


def test_box_constraint_and_base_frame():
  """Via-points keep every site in the workspace box of the base frame; 'auto' boxes hold the
  generated positions."""
  r = _robot("gantry_torso_frame")
  box = ((0.2, -0.5, -0.7), (0.6, 0.0, -0.3))
  s = trajectories.make_fk_window_sampler(dict(horizon=16, workspace_box=box), r)
  poses = np.asarray(s(jax.random.PRNGKey(1), 256, return_poses=True)[2])
  pos = poses[..., :3].reshape(-1, 3)
  inside = np.all((pos >= box[0]) & (pos <= box[1]), axis=-1).mean()
  free = trajectories.make_fk_window_sampler(dict(horizon=16, workspace_box=()), r)
  free_poses = np.asarray(free(jax.random.PRNGKey(1), 256, return_poses=True)[2])
  pf = free_poses[..., :3].reshape(-1, 3)
  inside_free = np.all((pf >= box[0]) & (pf <= box[1]), axis=-1).mean()
  assert inside > 0.7 and inside > inside_free + 0.2, (inside, inside_free)
  auto = trajectories.reachable_box(free_poses, r.info)
  assert auto.shape == (1, 2, 3) and np.all(pf >= auto[0, 0]) and np.all(pf <= auto[0, 1])


# ---------------------------------------------------------------------------------------------
# The Panda: the same bits as before the change


def _golden():
  """The recorded arrays, and whether they must match bit for bit: under the jax, backend and
  CPU model that recorded them (elsewhere XLA may round differently: 1e-6)."""
  sys.path.insert(0, str(ROBOTS))
  try:
    from record_panda_golden import cpu_model
  finally:
    sys.path.remove(str(ROBOTS))
  g = dict(np.load(GOLDEN))
  here = (jax.__version__, jax.default_backend(), cpu_model())
  exact = tuple(str(g.pop(k)) for k in ("jax", "backend", "cpu")) == here
  return g, exact


def _same(a, b, exact, what):
  a = np.asarray(a)
  if exact:
    np.testing.assert_array_equal(a, b, err_msg=what)
  else:   # another jax / XLA may round differently
    np.testing.assert_allclose(a, b, atol=1e-6, err_msg=what)


def _check_case(g, exact, name, overrides, batch, robot=None):
  s = trajectories.make_fk_window_sampler(overrides, robot)
  out = s(jax.random.PRNGKey(7), batch, return_joints=True)
  for k, v in zip(("cond", "target", "qpos", "gripper"), out):
    _same(v, g[f"{name}/{k}"], exact, f"{name}/{k}")


def test_panda_windows_unchanged():
  """robot.mjcf='panda' (the default) gives today's windows bit for bit: the sampler for three
  configurations (the default robot spelt out and implied) and the stage's normalised batch."""
  g, exact = _golden()
  default_robot = config_lib.pretrain_config().robot
  _check_case(g, exact, "jp16", dict(horizon=16, signal="jp"), 16, default_robot)
  _check_case(g, exact, "eepose10_hand", dict(horizon=10, signal="eepose", site="hand"), 8)
  _check_case(g, exact, "none10_nobox", dict(horizon=10, signal="none", workspace_box=()), 8,
              dict(mjcf="panda", ee_sites="grip_site"))
  from decoupled_jax.pipelines import pretrain
  c = config_lib.from_file(str(REPO / "configs" / "pretrain.py"), "debug")
  stage = pretrain.make_stage(c)
  batch = jax.jit(stage.device_batch_fn)(jax.random.PRNGKey(3))
  _same(batch["obs"]["cond"], g["stage/cond"], exact, "stage/cond")
  _same(batch["actions"], g["stage/actions"], exact, "stage/actions")
  assert json.dumps(stage.meta["normalizer"], sort_keys=True) == str(g["stage/normalizer"])
  assert stage.action_shape == (16, 10) and stage.meta["robot"]["name"] == "panda"
  assert stage.meta["robot"]["target_layout"][-1] == "grip_site/gripper"


@pytest.mark.slow
def test_panda_windows_unchanged_mjx():
  g, exact = _golden()
  _check_case(g, exact, "jp16_mjx",
              dict(horizon=16, signal="jp", fk_backend="mjx", via_candidates=4), 4)


# ---------------------------------------------------------------------------------------------
# Config errors: one line, naming the field, at validation (before anything is compiled)


def _config(**robot):
  c = config_lib.pretrain_config()
  c.robot.update(robot)
  return c


def _bad_mjcf(tmp_path, old, new):
  path = tmp_path / "bad.xml"
  text = pathlib.Path(GANTRY).read_text()
  assert old in text
  path.write_text(text.replace(old, new))
  return str(path)


@pytest.mark.parametrize("case,match", [
    ("missing_site", r"config\.robot\.ee_sites: no site 'nose' in .*gantry\.xml \(its sites: "
                     r"camera_site, left_ee, right_ee\)"),
    ("missing_joint", r"config\.robot\.joints: no joint 'elbow' in .*\(its joints: rail_x"),
    ("no_limits", r"config\.robot\.joints: joint 'left_shoulder' of .*bad\.xml has no limits"),
    ("off_chain", r"config\.robot\.joints: joint 'right_elbow' is not on the chain from the "
                  r"world to the site\(s\) left_ee"),
    ("chain_short", r"config\.robot\.joints: no selected hinge or slide joint on the chain "
                    r"from the world to site 'right_ee'.*does not reach the site"),
    ("static_site", r"config\.robot\.ee_sites: no hinge or slide joint on the chain from torso "
                    r"to site 'camera_site'"),
    ("free_joint", r"config\.robot\.joints: joint 'object_free' is not on the chain"),
    ("missing_file", r"config\.robot\.mjcf: .*absent\.xml does not exist"),
    ("bad_xml", r"config\.robot\.mjcf: cannot parse .*bad\.xml: XML parse error"),
    ("missing_base", r"config\.robot\.base: no body 'pelvis'"),
    ("gripper_groups", r"config\.robot\.gripper\.joints: 1 group\(s\) of joints"),
    ("action_space", r"config\.robot\.action_space: must be one of"),
    ("home", r"config\.robot\.home: 3 values for the robot's 7 joints"),
    ("demos", r"config\.robot: data\.source='demos' reads robosuite Panda demonstrations"),
    ("std", r"config\.data\.fk\.workspace_std: 3 values for the robot's 6 joints"),
    ("margin", r"config\.data\.fk\.limit_margin: 0\.07 from each limit leaves nothing of "
               r"joint 'left_telescope'"),
])
def test_config_errors_are_one_line(tmp_path, case, match):
  left = dict(mjcf=GANTRY, ee_sites="left_ee")
  c = {
      "missing_site": lambda: _config(mjcf=GANTRY, ee_sites="left_ee,nose"),
      "missing_joint": lambda: _config(**left, joints="rail_x,elbow"),
      "no_limits": lambda: _config(mjcf=_bad_mjcf(
          tmp_path, '<joint name="left_shoulder" axis="0 1 0" pos="0 0 0.03" range="-60 80"/>',
          '<joint name="left_shoulder" axis="0 1 0" pos="0 0 0.03" limited="false"/>'),
          ee_sites="left_ee"),
      "off_chain": lambda: _config(**left, joints="left_elbow,right_elbow"),
      "chain_short": lambda: _config(mjcf=GANTRY, ee_sites="left_ee,right_ee",
                                     joints="left_shoulder,left_elbow"),
      "static_site": lambda: _config(mjcf=GANTRY, ee_sites="camera_site", base="torso"),
      "free_joint": lambda: _config(**left, joints="object_free"),
      "missing_file": lambda: _config(mjcf=str(tmp_path / "absent.xml"), ee_sites="ee"),
      "bad_xml": lambda: _config(mjcf=_bad_mjcf(tmp_path, "<worldbody>", "<worldbody><oops>"),
                                 ee_sites="left_ee"),
      "missing_base": lambda: _config(**left, base="pelvis"),
      "gripper_groups": lambda: _config(mjcf=GANTRY, ee_sites="left_ee,right_ee",
                                        gripper=dict(joints="left_finger_joint")),
      "action_space": lambda: _config(**left, action_space="torques"),
      "home": lambda: _config(**left, home=(0.0, 0.1, 0.2)),
  }
  if case == "demos":
    cfg = _config(mjcf=UR5E, ee_sites="ee_site")
    cfg.data.source, cfg.data.dataset = "demos", str(GOLDEN)
  elif case == "std":
    cfg = _config(mjcf=UR5E, ee_sites="ee_site")
    cfg.data.fk.workspace_std = (0.1, 0.2, 0.3)
  elif case == "margin":
    cfg = _config(**left)
    cfg.data.fk.limit_margin = 0.07
  else:
    cfg = c[case]()
  with pytest.raises(ConfigError, match=match) as e:
    config_lib.validate(cfg, num_devices=1)
  assert "\n" not in str(e.value)


def test_valid_robot_configs_pass_validation():
  for case in ROBOT_CASES.values():
    config_lib.validate(_config(**case), num_devices=1)
  config_lib.validate(config_lib.pretrain_config(), num_devices=1)   # the Panda


# ---------------------------------------------------------------------------------------------
# Debug runs


def _pretrain_cli(workdir, *args, timeout=180):
  return run_binary("pretrain.py", "--config=configs/pretrain.py:debug", f"--workdir={workdir}",
                    *args, expect_ok=False, timeout=timeout)


def _losses(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line)["loss"] for line in f if '"loss"' in line]


def test_cli_pretrain_on_an_mjcf_by_path_and_site(tmp_path):
  """A robot the library has never seen, from the command line: the loss falls, the checkpoint
  records the robot; a bad site is one `error:` line before anything is built."""
  from decoupled_jax.training import checkpoint as ckpt_lib
  work = tmp_path / "ur5e"
  r = _pretrain_cli(work, f"--config.robot.mjcf={UR5E}", "--config.robot.ee_sites=ee_site",
                    "--config.train.num_steps=150", "--config.train.batch_size=64",
                    "--config.train.log_every=1", "--config.train.checkpoint_every=150")
  assert r.returncode == 0, r.stderr[-3000:]
  assert "stage 1 done: 150 steps" in r.stdout
  loss = _losses(work)
  assert len(loss) == 150
  assert np.mean(loss[-10:]) < 0.85 * np.mean(loss[:10]), (loss[:10], loss[-10:])
  meta = ckpt_lib.load_meta(str(work / "checkpoints"))
  rb = meta["robot"]
  assert rb["name"] == UR5E and rb["ee_sites"] == ["ee_site"] and rb["action_space"] == "ee_pose"
  assert rb["joints"][0] == "shoulder_pan_joint" and len(rb["kinematics_sha256"]) == 16
  assert rb["workspace"] == "auto" and np.asarray(rb["position_box"]).shape == (1, 2, 3)
  assert meta["action_dim"] == 10 and meta["cond_dim"] == 7
  assert meta["config"]["robot"]["mjcf"] == UR5E
  summary = json.loads((work / "summary.json").read_text())
  assert {"pos_err_mm", "rot_err_deg", "baseline_pos_err_mm"} <= set(summary["eval"])

  bad = tmp_path / "bad"
  r = _pretrain_cli(bad, f"--config.robot.mjcf={UR5E}", "--config.robot.ee_sites=tool0")
  assert r.returncode == 2
  last = r.stderr.strip().splitlines()[-1]
  assert last.startswith("error: config.robot.ee_sites: no site 'tool0' in ") and \
      "(its sites: right_center, ee_site)" in last, r.stderr[-2000:]
  assert not bad.exists()     # refused at validation, before the workdir or any compile


def test_joint_pos_debug_run(tmp_path):
  """action_space='joint_pos' on the two-armed slide-joint robot, end-effector poses as the
  condition: the loss falls; evaluation reports the FK error of the sampled joints."""
  from decoupled_jax.pipelines import run
  c = config_lib.from_file(str(REPO / "configs" / "pretrain.py"), "debug,signal=eepose")
  c.robot.update(mjcf=GANTRY, ee_sites="left_ee,right_ee", action_space="joint_pos",
                 gripper=dict(joints="left_finger_joint;right_finger_joint", range=(-1.0, 1.0)))
  c.train.update(num_steps=120, batch_size=64, log_every=1, checkpoint_every=120)
  s = run.run(c, str(tmp_path / "jp"))
  loss = _losses(tmp_path / "jp")
  assert np.mean(loss[-10:]) < 0.85 * np.mean(loss[:10]), (loss[:10], loss[-10:])
  ev = s["eval"]
  assert {"pos_err_mm", "rot_err_deg", "joint_abs_err", "gripper_acc",
          "baseline_joint_abs_err"} <= set(ev)
  from decoupled_jax.training import checkpoint as ckpt_lib
  meta = ckpt_lib.load_meta(str(tmp_path / "jp" / "checkpoints"))
  assert meta["action_dim"] == 13 and meta["cond_dim"] == 20
  assert meta["robot"]["action_space"] == "joint_pos"
  assert meta["robot"]["target_layout"][:2] == ["rail_x", "rail_y"]
  assert meta["robot"]["target_layout"][-1] == "right_ee/gripper"
