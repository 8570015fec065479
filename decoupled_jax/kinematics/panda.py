"""Franka Panda forward kinematics in the MuJoCo world frame of robosuite tasks.

Model
  `load_panda_kinematics()` builds a *kinematics-only* MjModel from the Panda MJCF shipped in
  the robosuite 1.5.2 wheel (`robosuite/models/assets/robots/panda/robot.xml` plus the
  `right_gripper`/`eef` bodies of `grippers/panda_gripper.xml`). Every geom, mesh, material,
  camera, actuator and finger joint is dropped; contacts, gravity and constraints are disabled.
  What is left is the body tree with its `pos`/`quat`, the 7 hinge joints (axes, ranges) and
  the inertials (unused by kinematics, kept so the model compiles as in robosuite). When
  robosuite is not installed, the same tree is built from `_FALLBACK_CHAIN`, a copy of the
  numbers in those two files (a test checks it equals the wheel's MJCF).

Frame (what FK returns)
  * World frame = the MuJoCo world frame of robosuite's table-top tasks (Lift, Stack, ... with
    the default 0.8 m table): the robot base body `robot0_base` sits at
    `BASE_POS = (-0.56, 0, 0.912)` with identity orientation. Measured in robosuite 1.5.2:
    Lift and Stack both put `robot0_base` there (x = -0.16 - table_length/2 from
    `Panda.base_xpos_offset['table']`, z = table top 0.8 + 0.112 from the RethinkMount).
    `tests/test_kinematics.py` re-checks it against a live robosuite env.
  * Position = site `grip_site` = robosuite's `gripper0_right_grip_site`, i.e. exactly
    `robot0_eef_pos`. It lies 0.1065 + 0.097 = 0.2035 m along the flange z axis of link 7.
  * Orientation, two choices (`site=`):
      - `'grip_site'` (default): orientation of the grip site itself = robosuite's
        `robot0_eef_quat_site` = the frame the absolute OSC_POSE controller takes as its
        orientation target. This is the library convention (docs/architecture.md "Frames",
        decoupled_jax/sim/frames.py): stage-1 targets and stage-2 actions share it.
      - `'hand'`: orientation of the body `robot0_right_hand`, which is what robosuite 1.5.2
        reports as `robot0_eef_quat` (it reads the *body* quaternion, robosuite issue #298) and
        what every robomimic/MimicGen HDF5 stores as `obs/robot0_eef_quat`.
    Both have the same position. R_site = R_hand @ HAND_TO_SITE, HAND_TO_SITE = R_z(-90 deg)
    (the `right_gripper` body's quat 0.707,0,0,-0.707; `hand_to_site_rotation()`).
  * Quaternions are **xyzw** (scalar last, as robosuite observations and
    `decoupled_jax.data.rotation`), canonicalised to w >= 0. Compare them sign-invariantly.

Functions
  * `fk_mjx(mjx_model, qpos)`: `mujoco.mjx.kinematics`, vmapped over the batch.
  * `fk_tree(kin, qpos)`: the same chain composed in plain JAX from the model's body tree
    arrays (`body_pos`, `body_quat`, `jnt_axis`, `jnt_pos`, `qpos0`, `site_pos`, `site_quat`),
    taken from either an `mjx.Model` or the small `KinematicsTree` pytree. Much cheaper to
    compile and run on CPU than `mjx.kinematics`; used by the stage-1 generator. Both are the
    Panda's case of the any-robot functions in kinematics/robot.py (`fk_tree_site_list`,
    `fk_mjx_site_list`); `robot.mjcf='panda'` (the default robot) is this model.
  * `fk_cpu(mj_model, qpos)`: a Python loop over `mujoco.mj_kinematics`, the reference.
  Measured with experiments/benchmark_fk.py on 2 shared CPU cores (load ~7), B = 4096:
  tree 3.3e5 poses/s (compile ~3 s), mjx.kinematics 1.0e5 poses/s (compile ~17 s),
  C loop 1.3e5 poses/s.

XLA:CPU: set `XLA_FLAGS=--xla_cpu_use_fusion_emitters=false` before importing jax (MJX is
50-400x slower otherwise), and pass the mjx model as a jit argument, never as a closure constant.
"""
from __future__ import annotations

import dataclasses
import functools
import importlib.util
import pathlib
import xml.etree.ElementTree as ET
import jax
import jax.numpy as jnp
import mujoco
import numpy as np

from decoupled_jax.data import rotation
from decoupled_jax.kinematics import robot as robot_lib

# robosuite 1.5.2, Lift/Stack with the default table (table_full_size 0.8 x 0.8 x 0.05,
# table_offset z 0.8): `env.sim.model.body_pos[robot0_base]` = (-0.56, 0, 0.912), quat (1,0,0,0)
# (measured 2026-11-25; re-verified by tests/test_kinematics.py when robosuite is installed).
BASE_POS = (-0.56, 0.0, 0.912)
BASE_QUAT_WXYZ = (1.0, 0.0, 0.0, 0.0)

# robosuite `Panda.init_qpos` (the reset pose before noise).
INIT_QPOS = np.array([0.0, np.pi / 16.0, 0.0, -np.pi / 2.0 - np.pi / 3.0, 0.0, np.pi - 0.2,
                      np.pi / 4.0])

# Franka Panda datasheet limits (rad/s, rad/s^2), used by the trajectory generator.
VELOCITY_LIMITS = np.array([2.175, 2.175, 2.175, 2.175, 2.61, 2.61, 2.61])
ACCELERATION_LIMITS = np.array([15.0, 7.5, 10.0, 12.5, 15.0, 20.0, 20.0])
# The generator's near-home spread per joint (rad; kinematics/trajectories.py).
WORKSPACE_STD = (0.5, 0.4, 0.5, 0.4, 0.6, 0.4, 0.8)

# Spec §1.2 `FRANKA_JOINT_POSITION_LIMITS`; equal to the MJCF ranges (checked in tests).
SPEC_JOINT_LIMITS = np.array([
    [-2.8973, -1.7628, -2.8973, -3.0718, -2.8973, -0.0175, -2.8973],
    [2.8973, 1.7628, 2.8973, -0.0698, 2.8973, 3.7525, 2.8973],
])

JOINT_NAMES = tuple(f"joint{i}" for i in range(1, 8))
SITE_NAMES = ("hand", "grip_site")  # site ids 0 and 1 in the built model

# Copy of the kinematic numbers of robosuite 1.5.2's robots/panda/robot.xml (body name, pos,
# quat wxyz, joint (axis, range) or None) and grippers/panda_gripper.xml (right_gripper, eef).
# Used only when robosuite is not installed; tests check it equals the wheel's MJCF.
_FALLBACK_CHAIN = (
    ("link0", (0, 0, 0), (1, 0, 0, 0), None),
    ("link1", (0, 0, 0.333), (1, 0, 0, 0), ((0, 0, 1), (-2.8973, 2.8973))),
    ("link2", (0, 0, 0), (0.707107, -0.707107, 0, 0), ((0, 0, 1), (-1.7628, 1.7628))),
    ("link3", (0, -0.316, 0), (0.707107, 0.707107, 0, 0), ((0, 0, 1), (-2.8973, 2.8973))),
    ("link4", (0.0825, 0, 0), (0.707107, 0.707107, 0, 0), ((0, 0, 1), (-3.0718, -0.0698))),
    ("link5", (-0.0825, 0.384, 0), (0.707107, -0.707107, 0, 0), ((0, 0, 1), (-2.8973, 2.8973))),
    ("link6", (0, 0, 0), (0.707107, 0.707107, 0, 0), ((0, 0, 1), (-0.0175, 3.7525))),
    ("link7", (0.088, 0, 0), (0.707107, 0.707107, 0, 0), ((0, 0, 1), (-2.8973, 2.8973))),
    ("right_hand", (0, 0, 0.1065), (0.924, 0, 0, -0.383), None),
)
_FALLBACK_GRIPPER = (("right_gripper", (0, 0, 0), (0.707107, 0, 0, -0.707107)),
                     ("eef", (0, 0, 0.097), (1, 0, 0, 0)))


@dataclasses.dataclass(frozen=True)
class PandaInfo:
  """Static facts about the built model (numpy / python values, safe to close over)."""
  source: str                 # where the MJCF numbers came from
  xml: str                    # the kinematics-only MJCF that was compiled
  joint_names: tuple[str, ...]
  qpos_adr: np.ndarray        # (7,) qpos addresses of the arm joints (0..6)
  joint_lower: np.ndarray     # (7,) the model's own ranges
  joint_upper: np.ndarray     # (7,)
  velocity_limits: np.ndarray
  acceleration_limits: np.ndarray
  init_qpos: np.ndarray
  base_pos: np.ndarray
  site_ids: dict              # {'hand': 0, 'grip_site': 1}
  body_chain: tuple[int, ...]  # body ids from the base to the site bodies, parent before child


# ----------------------------------------------------------------------------------------------
# Building the model


def robosuite_assets_dir() -> pathlib.Path | None:
  """robosuite's `models/assets` folder, found without importing robosuite (slow, noisy)."""
  spec = importlib.util.find_spec("robosuite")
  if spec is None or not spec.submodule_search_locations:
    return None
  d = pathlib.Path(list(spec.submodule_search_locations)[0]) / "models" / "assets"
  return d if (d / "robots" / "panda" / "robot.xml").exists() else None


def _floats(s, default):
  return tuple(float(v) for v in s.split()) if s is not None else default


def _chain_from_mjcf(assets: pathlib.Path):
  """Reads (name, pos, quat, joint) of the serial chain base->right_hand and the gripper bodies."""
  root = ET.parse(assets / "robots" / "panda" / "robot.xml").getroot()
  base = root.find("./worldbody/body[@name='base']")
  if base is None:
    raise ValueError(f"{assets}/robots/panda/robot.xml: no body 'base'")
  chain, body = [], base
  while True:
    children = body.findall("body")
    if not children:
      break
    if len(children) != 1:
      raise ValueError(f"robot.xml: body '{body.get('name')}' is not a serial chain")
    body = children[0]
    joints = body.findall("joint")
    joint = None
    if joints:
      j = joints[0]
      if j.get("type", "hinge") != "hinge" or _floats(j.get("pos"), (0, 0, 0)) != (0, 0, 0):
        raise ValueError(f"robot.xml: unexpected joint {j.get('name')}")
      joint = (_floats(j.get("axis"), (0, 0, 1)), _floats(j.get("range"), None))
    chain.append((body.get("name"), _floats(body.get("pos"), (0, 0, 0)),
                  _floats(body.get("quat"), (1, 0, 0, 0)), joint))
  groot = ET.parse(assets / "grippers" / "panda_gripper.xml").getroot()
  rg = groot.find("./worldbody/body[@name='right_gripper']")
  eef = rg.find("body[@name='eef']")
  if eef.find("site[@name='grip_site']") is None:
    raise ValueError("panda_gripper.xml: body 'eef' has no site 'grip_site'")
  gripper = tuple((b.get("name"), _floats(b.get("pos"), (0, 0, 0)),
                   _floats(b.get("quat"), (1, 0, 0, 0))) for b in (rg, eef))
  return tuple(chain), gripper


def _quat_wxyz_to_mat(q):
  q = np.asarray(q, np.float64)
  xyzw = np.concatenate([q[1:], q[:1]])
  return rotation.quat_xyzw_to_matrix(xyzw)


def _build_xml(chain, gripper) -> str:
  fmt = lambda v: " ".join(repr(float(x)) for x in v)
  # Site 'hand': the grip site's position expressed in right_hand, with right_hand's orientation.
  (_, gpos, gquat), (_, epos, equat) = gripper
  eef_in_hand = np.asarray(gpos) + _quat_wxyz_to_mat(gquat) @ np.asarray(epos)
  lines = []
  for i, (name, pos, quat, joint) in enumerate(chain):
    lines.append(f'<body name="{name}" pos="{fmt(pos)}" quat="{fmt(quat)}">')
    lines.append('<inertial pos="0 0 0" mass="1" diaginertia="0.01 0.01 0.01"/>')
    if joint is not None:
      axis, rng = joint
      lines.append(f'<joint name="joint{i}" type="hinge" axis="{fmt(axis)}" limited="true" '
                   f'range="{fmt(rng)}"/>')
  lines.append(f'<site name="hand" pos="{fmt(eef_in_hand)}"/>')
  lines.append(f'<body name="{gripper[0][0]}" pos="{fmt(gpos)}" quat="{fmt(gquat)}">'
               '<inertial pos="0 0 0" mass="0.1" diaginertia="0.001 0.001 0.001"/>')
  lines.append(f'<body name="{gripper[1][0]}" pos="{fmt(epos)}" quat="{fmt(equat)}">'
               '<inertial pos="0 0 0" mass="0.1" diaginertia="0.001 0.001 0.001"/>'
               '<site name="grip_site"/></body></body>')
  lines.extend("</body>" for _ in chain)
  return (
      '<mujoco model="panda_kinematics">\n'
      '<compiler angle="radian" autolimits="true"/>\n'
      '<option gravity="0 0 0"><flag contact="disable" constraint="disable" gravity="disable"/>'
      '</option>\n'
      f'<worldbody><body name="base" pos="{fmt(BASE_POS)}" quat="{fmt(BASE_QUAT_WXYZ)}">\n'
      '<inertial pos="0 0 0" mass="1" diaginertia="0.01 0.01 0.01"/>\n'
      + "\n".join(lines) + "\n</body></worldbody>\n</mujoco>\n")


def load_panda_kinematics(use_robosuite_assets: bool | None = None
                          ) -> tuple[mujoco.MjModel, PandaInfo]:
  """Kinematics-only Panda MjModel (7 hinge joints, sites 'hand' and 'grip_site') + facts.

  use_robosuite_assets: True -> require the robosuite wheel's MJCF; False -> use the built-in
  copy; None (default) -> the wheel's MJCF when robosuite is installed, else the copy.
  """
  assets = robosuite_assets_dir() if use_robosuite_assets in (None, True) else None
  if use_robosuite_assets and assets is None:
    raise FileNotFoundError("robosuite is not installed: its Panda MJCF is not available")
  if assets is not None:
    chain, gripper = _chain_from_mjcf(assets)
    source = str(assets / "robots" / "panda" / "robot.xml")
  else:
    chain, gripper, source = _FALLBACK_CHAIN, _FALLBACK_GRIPPER, "built-in copy of robosuite 1.5.2"
  xml = _build_xml(chain, gripper)
  model = mujoco.MjModel.from_xml_string(xml)
  assert model.nq == 7 and model.njnt == 7 and model.nsite == 2, (model.nq, model.nsite)
  site_ids = {n: mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, n) for n in SITE_NAMES}
  assert site_ids == {"hand": 0, "grip_site": 1}, site_ids
  qpos_adr = np.array([model.jnt_qposadr[mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, n)]
                       for n in JOINT_NAMES])
  # The bodies form one chain (plus the two gripper bodies): parent id < child id everywhere.
  assert all(model.body_parentid[b] < b for b in range(1, model.nbody))
  info = PandaInfo(
      source=source, xml=xml, joint_names=JOINT_NAMES, qpos_adr=qpos_adr,
      joint_lower=model.jnt_range[:, 0].copy(), joint_upper=model.jnt_range[:, 1].copy(),
      velocity_limits=VELOCITY_LIMITS.copy(), acceleration_limits=ACCELERATION_LIMITS.copy(),
      init_qpos=INIT_QPOS.copy(), base_pos=np.asarray(BASE_POS), site_ids=site_ids,
      body_chain=tuple(range(1, model.nbody)))
  return model, info


def hand_to_site_rotation() -> np.ndarray:
  """R_hand^T R_site (3x3): maps `robot0_eef_quat` (hand) to the grip-site/action orientation."""
  assets = robosuite_assets_dir()
  gripper = _chain_from_mjcf(assets)[1] if assets is not None else _FALLBACK_GRIPPER
  return _quat_wxyz_to_mat(gripper[0][2]) @ _quat_wxyz_to_mat(gripper[1][2])


# ----------------------------------------------------------------------------------------------
# FK: MJX


def put_mjx_model(model: mujoco.MjModel):
  from mujoco import mjx
  return mjx.put_model(model)


def fk_mjx(mjx_model, qpos: jax.Array, site: str = "grip_site") -> tuple[jax.Array, jax.Array]:
  """`mjx.kinematics` on a batch of joint configurations.

  mjx_model: `mjx.put_model(load_panda_kinematics()[0])`; pass it as a jit argument.
  qpos: (B, 7). Returns pos (B, 3) and quat_xyzw (B, 4), world frame (see module docstring).
  """
  pos, mat = fk_mjx_matrix(mjx_model, qpos, site)
  return pos, rotation.matrix_to_quat_xyzw(mat)


def fk_mjx_matrix(mjx_model, qpos, site: str = "grip_site"):
  pos, mat = robot_lib.fk_mjx_site_list(mjx_model, qpos, site_layout(site), np.arange(7))
  return pos[0], mat[0]


# ----------------------------------------------------------------------------------------------
# FK: plain JAX over the body tree


KinematicsTree = robot_lib.KinematicsTree      # the arrays FK reads (moved to robot.py)
kinematics_tree = robot_lib.kinematics_tree


@functools.lru_cache(maxsize=None)
def site_layout(site: str = "grip_site") -> robot_lib.TreeLayout:
  """The Panda model's FK structure for one of its sites (7 robot joints, world frame)."""
  if site not in SITE_NAMES:
    raise ValueError(f"site must be one of {SITE_NAMES}, got {site!r}")
  m, _ = load_panda_kinematics(use_robosuite_assets=False)
  return robot_lib.tree_layout(m, range(7), [SITE_NAMES.index(site)])


def fk_tree_matrix(tree: KinematicsTree, qpos, site: str = "grip_site",
                   layout: robot_lib.TreeLayout | None = None):
  """Plain-JAX FK following `mj_kinematics` (mjx `kinematics`) over the body tree
  (`robot.fk_tree_site_list`, any robot).

  tree: `kinematics_tree(mj_model or mjx_model)`; qpos: (..., 7).
  Returns pos (..., 3) and the site rotation matrix (..., 3, 3), world frame.
  """
  pos, mat = robot_lib.fk_tree_site_list(tree, qpos, layout or site_layout(site))
  return pos[0], mat[0]


def fk_tree(tree: KinematicsTree, qpos, site: str = "grip_site"):
  """Plain-JAX FK: pos (..., 3), quat_xyzw (..., 4) (w >= 0). See `fk_tree_matrix`."""
  pos, mat = fk_tree_matrix(tree, qpos, site)
  return pos, rotation.matrix_to_quat_xyzw(mat)


# ----------------------------------------------------------------------------------------------
# FK: C reference


def fk_cpu(mj_model: mujoco.MjModel, qpos, site: str = "grip_site",
           data: mujoco.MjData | None = None):
  """Reference FK: a Python loop over `mujoco.mj_kinematics`. qpos (B, 7) -> pos, quat_xyzw."""
  qpos = np.atleast_2d(np.asarray(qpos, np.float64))
  sid = SITE_NAMES.index(site)
  d = data if data is not None else mujoco.MjData(mj_model)
  pos = np.empty((len(qpos), 3))
  mat = np.empty((len(qpos), 3, 3))
  for i, q in enumerate(qpos):
    d.qpos[:] = q
    mujoco.mj_kinematics(mj_model, d)
    pos[i] = d.site_xpos[sid]
    mat[i] = d.site_xmat[sid].reshape(3, 3)
  return pos, rotation.matrix_to_quat_xyzw(mat)


def quat_distance(q1, q2):
  """Sign-invariant angle (rad) between xyzw quaternions."""
  xp = np if isinstance(q1, np.ndarray) else jnp
  d = xp.abs(xp.sum(q1 * q2, axis=-1)) / (xp.linalg.norm(q1, axis=-1) * xp.linalg.norm(q2, axis=-1))
  return 2 * xp.arccos(xp.clip(d, 0.0, 1.0))

