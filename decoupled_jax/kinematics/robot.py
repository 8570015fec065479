"""Any robot from its MJCF: the kinematics-only model, forward kinematics, the robot's facts.

A robot is the `config.robot` section of a stage-1 config (config_lib.pretrain_config):

  mjcf          a path to an MJCF file, or a built-in name: 'panda' = the Franka Panda of
                robosuite's table-top tasks in robosuite's world frame (kinematics/panda.py);
                or a packaged MJCF by name (`PACKAGED`): 'aloha' = gym-aloha's bimanual
                ViperX 300s (kinematics/assets/aloha/; `packaged_robot_config('aloha')`
                gives its whole section).
  ee_sites      site name(s), comma-separated: the end-effector frames. A bimanual robot has
                one per arm; their targets are concatenated in this order.
  joints        joint names, comma-separated, in the order of the joint vector; '' = every
                hinge/slide joint on the chains from the base to the sites (free and ball
                joints are held at the MJCF's qpos0), in the MJCF's order.
  base          body name the poses are expressed in; '' = the world frame.
  gripper       .joints: '' = one binary command per site with no joint in the model (the
                Panda's: its kinematics model has no fingers), 'none' = no gripper, else the
                gripper joint names, ',' within an arm and ';' between arms (one group per
                site; they are checked and kept out of the arm joints). .range: the command's
                (open, close) values, (-1, 1) as robosuite's.
  action_space  'ee_pose': absolute [pos(3), rot6d(6), gripper] per site (the library's
                10-D action for one arm); 'joint_pos': absolute [joints, grippers].
  home          the joint values the generator's near-home draws centre on; () = a keyframe
                named 'home' in the MJCF, else its qpos0 (Panda: robosuite's reset pose).
  velocity_limits, acceleration_limits
                per joint (or one value for all), rad or m per s (s^2); () = the robot's
                (Panda: the datasheet's; otherwise 2 rad/s, 10 rad/s^2 for hinges and
                0.5 m/s, 2.5 m/s^2 for slides).
  workspace     where positions are normalised: 'box' = config.data.position_box (and every
                via-point is drawn inside it), 'auto' = the sites' reachable box, measured on a
                fixed sample of generated windows; '' = 'box' for the Panda, 'auto' otherwise.

`load_robot(spec)` parses the MJCF with `mujoco.MjSpec` (meshes are never read), drops every
geom, mesh, material, texture, actuator, sensor, tendon, equality, contact pair, camera and
light, keeps bodies, joints, sites and inertials (with a tiny mass bound so bodies that only
had geoms compile), and compiles. Body kinematics do not depend on what was dropped, so the
poses are those of the full model (tests/test_robots.py checks against `mj_kinematics`).
Every problem with the robot is a `ConfigError` naming the field, raised before anything is
compiled by XLA.

FK (`fk_tree_sites`, `fk_mjx_sites`, `fk_cpu_sites`): joint vectors (..., nj) in the robot's
joint order -> per-site positions (..., S, 3) and rotation matrices (..., S, 3, 3) in the base
frame. The plain-JAX version walks the body tree as `mj_kinematics` does, for any number of
hinge and slide joints per body; the joints that are not the robot's stay at qpos0. Self-
collisions are not checked anywhere.
"""
from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import mujoco
import numpy as np

from decoupled_jax.data import rotation
from decoupled_jax.errors import ConfigError

BUILTIN = ("panda",)
# Robots whose MJCF ships in the package (kinematics/assets/<name>/), by name: `robot.mjcf=name`
# stays the name in configs and records (a path would differ between machines).
PACKAGED = {"aloha": "assets/aloha/bimanual_viperx_transfer_cube.xml"}
# gym-aloha's start pose of each arm (gym_aloha/constants.py START_ARM_POSE, fingers left out).
_ALOHA_ARM_HOME = (0.0, -0.96, 1.16, 0.0, -0.3, 0.0)
ACTION_SPACES = ("ee_pose", "joint_pos")
WORKSPACES = ("", "box", "auto")
POSE_DIM = 9      # pos(3) + rot6d(6) per site

_HINGE, _SLIDE = int(mujoco.mjtJoint.mjJNT_HINGE), int(mujoco.mjtJoint.mjJNT_SLIDE)
_JOINT_TYPE_NAMES = {int(mujoco.mjtJoint.mjJNT_FREE): "free", int(mujoco.mjtJoint.mjJNT_BALL):
                     "ball", _SLIDE: "slide", _HINGE: "hinge"}
# Defaults for robots without their own numbers (per joint type).
DEFAULT_VELOCITY = {"hinge": 2.0, "slide": 0.5}          # rad/s, m/s
DEFAULT_ACCELERATION = {"hinge": 10.0, "slide": 2.5}     # rad/s^2, m/s^2
DEFAULT_STD = {"hinge": 0.6, "slide": 1.0}               # cap of 0.25 x range (rad, m)
# What `load_robot` strips from an MJCF (MjSpec collections).
_STRIP = ("geoms", "meshes", "materials", "textures", "hfields", "skins", "flexes", "actuators",
          "sensors", "tendons", "equalities", "pairs", "excludes", "keys", "cameras", "lights",
          "plugins")


def _fail(field: str, msg: str):
  raise ConfigError(f"config.robot.{field}: {msg}")


def _names(value, field: str) -> tuple[str, ...]:
  if value is None:
    return ()
  if isinstance(value, str):
    items = value.split(",")
  else:
    items = list(value)
  out = tuple(str(v).strip() for v in items)
  out = tuple(v for v in out if v)
  if len(set(out)) != len(out):
    _fail(field, f"names repeat: {value!r}")
  return out


def _floats(value, field: str) -> tuple[float, ...]:
  if value is None or (isinstance(value, str) and not value.strip()):
    return ()
  if isinstance(value, str):
    value = value.replace("(", " ").replace(")", " ").replace(",", " ").split()
  try:
    out = tuple(float(v) for v in np.asarray(value, np.float64).reshape(-1))
  except (TypeError, ValueError):
    _fail(field, f"must be numbers, got {value!r}")
  if not all(np.isfinite(out)):
    _fail(field, f"must be finite, got {value!r}")
  return out


# ----------------------------------------------------------------------------------------------
# The spec (what the config asks for)


@dataclasses.dataclass(frozen=True)
class RobotSpec:
  mjcf: str = "panda"
  ee_sites: tuple[str, ...] = ("grip_site",)
  joints: tuple[str, ...] = ()
  base: str = ""
  # None: no gripper; one tuple of joint names per site ('()' = a command without a joint).
  gripper_joints: tuple[tuple[str, ...], ...] | None = ((),)
  gripper_range: tuple[float, float] = (-1.0, 1.0)
  action_space: str = "ee_pose"
  home: tuple[float, ...] = ()
  velocity_limits: tuple[float, ...] = ()
  acceleration_limits: tuple[float, ...] = ()
  workspace: str = ""

  @property
  def builtin(self) -> bool:
    return self.mjcf in BUILTIN

  @classmethod
  def from_config(cls, c=None) -> "RobotSpec":
    """From `config.robot` (ConfigDict or dict); None = the built-in Panda."""
    if c is None:
      return cls()
    if isinstance(c, cls):
      return c
    d = dict(c.to_dict() if hasattr(c, "to_dict") else c)
    known = {"mjcf", "ee_sites", "joints", "base", "gripper", "action_space", "home",
             "velocity_limits", "acceleration_limits", "workspace"}
    unknown = sorted(set(d) - known)
    if unknown:
      _fail(unknown[0], f"unknown key (known: {sorted(known)})")
    mjcf = str(d.get("mjcf", "panda")).strip()
    if not mjcf:
      _fail("mjcf", f"is empty; give an MJCF path or a built-in robot "
            f"{BUILTIN + tuple(PACKAGED)}")
    sites = _names(d.get("ee_sites", "grip_site"), "ee_sites")
    if not sites:
      _fail("ee_sites", "is empty; name the end-effector site(s) of the MJCF")
    g = d.get("gripper", {}) or {}
    g = dict(g.to_dict() if hasattr(g, "to_dict") else g)
    unknown = sorted(set(g) - {"joints", "range"})
    if unknown:
      _fail(f"gripper.{unknown[0]}", "unknown key (known: ['joints', 'range'])")
    gj = g.get("joints", "")
    gj = gj if isinstance(gj, str) else ";".join(",".join(_names(x, "gripper.joints"))
                                                for x in gj)
    if gj.strip().lower() == "none":
      gripper = None
    elif not gj.strip():
      gripper = tuple(() for _ in sites)
    else:
      gripper = tuple(_names(group, "gripper.joints") for group in gj.split(";"))
      if len(gripper) != len(sites):
        _fail("gripper.joints", f"{len(gripper)} group(s) of joints (';'-separated) for "
              f"{len(sites)} site(s) {sites}: give one group per site, '' or 'none'")
    grange = _floats(g.get("range", (-1.0, 1.0)), "gripper.range")
    if len(grange) != 2 or grange[0] == grange[1]:
      _fail("gripper.range", f"must be (open, close) with two different values, got {grange}")
    action_space = str(d.get("action_space", "ee_pose"))
    if action_space not in ACTION_SPACES:
      _fail("action_space", f"must be one of {ACTION_SPACES}, got {action_space!r}")
    workspace = str(d.get("workspace", ""))
    if workspace not in WORKSPACES:
      _fail("workspace", f"must be one of {WORKSPACES}, got {workspace!r}")
    if mjcf not in BUILTIN and mjcf not in PACKAGED:
      mjcf = os.path.abspath(os.path.expanduser(mjcf))
    return cls(mjcf=mjcf, ee_sites=sites, joints=_names(d.get("joints", ""), "joints"),
               base=str(d.get("base", "") or "").strip(), gripper_joints=gripper,
               gripper_range=(grange[0], grange[1]), action_space=action_space,
               home=_floats(d.get("home", ()), "home"),
               velocity_limits=_floats(d.get("velocity_limits", ()), "velocity_limits"),
               acceleration_limits=_floats(d.get("acceleration_limits", ()),
                                           "acceleration_limits"),
               workspace=workspace)


def packaged_mjcf(name: str) -> str:
  """The path of a packaged robot's MJCF (`PACKAGED`)."""
  return os.path.join(os.path.dirname(os.path.abspath(__file__)), PACKAGED[name])


def packaged_robot_config(name: str) -> dict:
  """The `config.robot` section of a packaged robot, ready to use.

  'aloha': the bimanual ALOHA of gym-aloha (two ViperX 300s), world frame, one end-effector
  site per arm (the point between the fingers that the wrist camera looks at), the 12 arm
  joints left arm first, one gripper per arm in gym-aloha's normalised command (1 = open,
  0 = closed; its two finger joints stay at qpos0 in FK) and `joint_pos` targets
  [12 arm joints, left gripper, right gripper]; home = gym-aloha's start pose. gym-aloha's
  action order is [left 6, left gripper, right 6, right gripper]: datasets select it with
  the key map `action[0:6,7:13,6,13]` (benchmarks/aloha.py)."""
  if name != "aloha":
    raise ConfigError(f"config.robot.mjcf={name!r}: packaged robots are {sorted(PACKAGED)}")
  fingers = ";".join(f"vx300s_{arm}/left_finger,vx300s_{arm}/right_finger"
                     for arm in ("left", "right"))
  return {"mjcf": "aloha", "ee_sites": "left_cam_focus,right_cam_focus", "joints": "",
          "base": "", "gripper": {"joints": fingers, "range": (1.0, 0.0)},
          "action_space": "joint_pos", "home": _ALOHA_ARM_HOME * 2, "velocity_limits": (),
          "acceleration_limits": (), "workspace": "auto"}


def default_robot_config() -> dict:
  """The `config.robot` section with its defaults (the built-in Panda, today's frame)."""
  return {"mjcf": "panda", "ee_sites": "grip_site", "joints": "", "base": "",
          "gripper": {"joints": "", "range": (-1.0, 1.0)}, "action_space": "ee_pose",
          "home": (), "velocity_limits": (), "acceleration_limits": (), "workspace": ""}


# ----------------------------------------------------------------------------------------------
# The resolved robot


@dataclasses.dataclass(frozen=True)
class TreeLayout:
  """Static structure of the body tree that FK walks (hashable: a jit static)."""
  parent: tuple[int, ...]                                   # body -> parent body
  # body -> its joints in model order: (joint id, 'hinge'|'slide'|..., qpos address, index of
  # the joint in the robot's joint vector or -1 = held at qpos0)
  body_joints: tuple[tuple[tuple[int, str, int, int], ...], ...]
  site_ids: tuple[int, ...]                                 # model ids of the ee sites
  site_body: tuple[int, ...]
  base_body: int                                            # 0 = world
  nq: int
  identity_qpos: bool    # the robot's joints are the model's whole qpos, in order


@dataclasses.dataclass(frozen=True, eq=False)   # compared and hashed by identity
class RobotInfo:
  """Facts about a resolved robot (numpy / python values, safe to close over)."""
  name: str                   # 'panda' or the MJCF path
  source: str                 # where the numbers came from
  xml: str                    # the kinematics-only MJCF that was compiled
  sites: tuple[str, ...]
  base: str
  joint_names: tuple[str, ...]
  joint_types: tuple[str, ...]   # 'hinge' | 'slide'
  qpos_adr: np.ndarray
  joint_lower: np.ndarray
  joint_upper: np.ndarray
  velocity_limits: np.ndarray
  acceleration_limits: np.ndarray
  init_qpos: np.ndarray       # home
  workspace_std: np.ndarray   # near-home draws' per-joint std
  gripper_joints: tuple[tuple[str, ...], ...] | None
  gripper_range: tuple[float, float]
  action_space: str
  workspace: str              # resolved: 'box' | 'auto'
  layout: TreeLayout
  kinematics_sha256: str      # `kinematics_fingerprint` of the model and the chain

  @property
  def num_joints(self) -> int:
    return len(self.joint_names)

  @property
  def num_sites(self) -> int:
    return len(self.sites)

  @property
  def num_grippers(self) -> int:
    return 0 if self.gripper_joints is None else len(self.gripper_joints)

  @property
  def default_gripper_range(self) -> bool:
    return tuple(self.gripper_range) == (-1.0, 1.0)

  @property
  def pose_dim(self) -> int:
    """[pos, rot6d(, gripper)] per site."""
    return self.num_sites * POSE_DIM + self.num_grippers

  @property
  def joint_dim(self) -> int:
    return self.num_joints + self.num_grippers

  @property
  def target_dim(self) -> int:
    return self.pose_dim if self.action_space == "ee_pose" else self.joint_dim

  def cond_dim(self, signal: str) -> int:
    if signal == "jv":   # [joints, joint steps, grippers]
      return self.joint_dim + self.num_joints
    return self.pose_dim if signal == "eepose" else self.joint_dim

  # Index sets of the pose vector ([pos(3), rot6d(6), g] per site; g only with grippers).
  def _block(self) -> int:
    return POSE_DIM + (1 if self.num_grippers else 0)

  def pose_position_dims(self) -> list[list[int]]:
    return [[s * self._block() + i for i in range(3)] for s in range(self.num_sites)]

  def pose_rot6d_dims(self) -> list[list[int]]:
    return [[s * self._block() + 3 + i for i in range(6)] for s in range(self.num_sites)]

  def pose_gripper_dims(self) -> list[int]:
    return [s * self._block() + POSE_DIM for s in range(self.num_grippers)]

  def joint_gripper_dims(self) -> list[int]:
    return list(range(self.num_joints, self.joint_dim))

  def describe(self) -> dict:
    """What a stage-1 checkpoint's meta records about the robot (JSON)."""
    arr = lambda a: [float(v) for v in np.asarray(a).reshape(-1)]
    return {"name": self.name, "source": self.source, "ee_sites": list(self.sites),
            "base": self.base, "joints": list(self.joint_names),
            "joint_types": list(self.joint_types), "joint_lower": arr(self.joint_lower),
            "joint_upper": arr(self.joint_upper),
            "gripper_joints": (None if self.gripper_joints is None
                               else [list(g) for g in self.gripper_joints]),
            "gripper_range": list(self.gripper_range), "action_space": self.action_space,
            "workspace": self.workspace, "target_dim": self.target_dim,
            "target_layout": self.target_layout(),
            "kinematics_sha256": self.kinematics_sha256}

  def target_layout(self) -> list[str]:
    """A name per target dimension, e.g. ['grip_site/pos_x', ..., 'grip_site/gripper']."""
    if self.action_space == "joint_pos":
      return list(self.joint_names) + [f"{s}/gripper" for s in self.sites[:self.num_grippers]]
    out = []
    for s, site in enumerate(self.sites):
      out += [f"{site}/pos_{a}" for a in "xyz"] + [f"{site}/rot6d_{i}" for i in range(6)]
      if self.num_grippers:
        out.append(f"{site}/gripper")
    return out


def kinematics_fingerprint(model: mujoco.MjModel, layout: TreeLayout, names, types) -> str:
  """sha256 (16 hex) of what FK depends on: the chain, the joints and the model's numbers
  (rounded to 1e-9, so the same robot gives the same value on any machine)."""
  import hashlib
  h = hashlib.sha256()
  h.update(repr((layout, tuple(names), tuple(types))).encode())
  for k in ("body_pos", "body_quat", "jnt_axis", "jnt_pos", "qpos0", "site_pos", "site_quat",
            "jnt_range"):
    h.update(np.round(np.asarray(getattr(model, k), np.float64), 9).tobytes())
  return h.hexdigest()[:16]


@dataclasses.dataclass(frozen=True)
class Robot:
  model: mujoco.MjModel
  info: RobotInfo


# ----------------------------------------------------------------------------------------------
# Loading


def kinematics_model_from_mjcf(path: str) -> tuple[mujoco.MjModel, str, dict]:
  """Kinematics-only MjModel of an MJCF file, its XML, and its keyframes' qpos by name."""
  if not os.path.isfile(path):
    _fail("mjcf", f"{path} does not exist (give an MJCF file or a built-in robot: "
          f"{', '.join(BUILTIN + tuple(PACKAGED))})")
  try:
    spec = mujoco.MjSpec.from_file(path)
  except Exception as e:  # noqa: BLE001  (mujoco raises ValueError with a multi-line text)
    _fail("mjcf", f"cannot parse {path}: {_one_line(e)}")
  keys = {}
  for k in getattr(spec, "keys", []):
    q = np.asarray(k.qpos, np.float64).reshape(-1)
    if k.name and q.size:
      keys[k.name] = q
  for coll in _STRIP:
    for e in list(getattr(spec, coll, []) or []):
      spec.delete(e)
  spec.compiler.fusestatic = False          # keep every named body (a base may be static)
  spec.compiler.boundmass = max(spec.compiler.boundmass, 1e-6)
  spec.compiler.boundinertia = max(spec.compiler.boundinertia, 1e-9)
  spec.option.disableflags |= int(mujoco.mjtDisableBit.mjDSBL_CONTACT) | int(
      mujoco.mjtDisableBit.mjDSBL_CONSTRAINT) | int(mujoco.mjtDisableBit.mjDSBL_GRAVITY)
  try:
    model = spec.compile()
  except Exception as e:  # noqa: BLE001
    _fail("mjcf", f"cannot compile the kinematics of {path}: {_one_line(e)}")
  try:
    xml = spec.to_xml()
  except Exception:  # noqa: BLE001
    xml = ""
  return model, xml, keys


def _one_line(e) -> str:
  return " ".join(str(e).split())


def _name(m, obj, i) -> str:
  return mujoco.mj_id2name(m, obj, i) or f"#{i}"


def _all_names(m, obj, n) -> str:
  names = [mujoco.mj_id2name(m, obj, i) for i in range(n)]
  names = [x for x in names if x]
  shown = ", ".join(names[:40]) + (", ..." if len(names) > 40 else "")
  return shown or "none"


def _ancestors(m, body: int) -> list[int]:
  """body, its parent, ..., up to (excluding) the world body 0."""
  out = []
  while body != 0:
    out.append(body)
    body = int(m.body_parentid[body])
  return out


def tree_layout(m: mujoco.MjModel, joint_ids, site_ids, base_body: int = 0) -> TreeLayout:
  """The FK structure of model `m` for the robot joints `joint_ids` (in joint-vector order),
  the sites `site_ids` and the base body (0 = world)."""
  joint_ids = [int(j) for j in joint_ids]
  index_of = {j: i for i, j in enumerate(joint_ids)}
  body_joints = []
  for b in range(m.nbody):
    adr, num = int(m.body_jntadr[b]), int(m.body_jntnum[b])
    body_joints.append(tuple((j, _JOINT_TYPE_NAMES[int(m.jnt_type[j])], int(m.jnt_qposadr[j]),
                              index_of.get(j, -1)) for j in range(adr, adr + num)))
  qpos_adr = [int(m.jnt_qposadr[j]) for j in joint_ids]
  return TreeLayout(
      parent=tuple(int(p) for p in m.body_parentid), body_joints=tuple(body_joints),
      site_ids=tuple(int(s) for s in site_ids),
      site_body=tuple(int(m.site_bodyid[s]) for s in site_ids), base_body=int(base_body),
      nq=int(m.nq), identity_qpos=bool(qpos_adr == list(range(m.nq))))


@functools.lru_cache(maxsize=16)
def _load_cached(spec: RobotSpec, mtime: float) -> Robot:
  del mtime
  return _load(spec)


def load_robot(spec) -> Robot:
  """The kinematics-only model and facts of `spec` (RobotSpec, `config.robot` or None)."""
  spec = RobotSpec.from_config(spec)
  path = packaged_mjcf(spec.mjcf) if spec.mjcf in PACKAGED else spec.mjcf
  mtime = 0.0 if spec.builtin else (os.path.getmtime(path) if os.path.isfile(path) else -1.0)
  return _load_cached(spec, mtime)


def _load(spec: RobotSpec) -> Robot:
  from decoupled_jax.kinematics import panda
  where = spec.mjcf
  if spec.mjcf == "panda":
    model, pinfo = panda.load_panda_kinematics()
    xml, keys, source, where = pinfo.xml, {}, pinfo.source, "the built-in Panda"
    defaults = dict(home=pinfo.init_qpos, velocity=pinfo.velocity_limits,
                    acceleration=pinfo.acceleration_limits,
                    std=np.asarray(panda.WORKSPACE_STD, np.float64), workspace="box")
  elif spec.mjcf in PACKAGED:
    model, xml, keys = kinematics_model_from_mjcf(packaged_mjcf(spec.mjcf))
    source, defaults = f"packaged:{spec.mjcf} ({PACKAGED[spec.mjcf]})", {"workspace": "auto"}
    where = f"the packaged robot {spec.mjcf!r}"
  else:
    model, xml, keys = kinematics_model_from_mjcf(spec.mjcf)
    source, defaults = spec.mjcf, {"workspace": "auto"}
  m = model

  # Sites and base.
  site_ids = []
  for s in spec.ee_sites:
    sid = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_SITE, s)
    if sid < 0:
      _fail("ee_sites", f"no site {s!r} in {where} (its sites: "
            f"{_all_names(m, mujoco.mjtObj.mjOBJ_SITE, m.nsite)})")
    site_ids.append(sid)
  base_body = 0
  if spec.base and spec.base != "world":
    base_body = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, spec.base)
    if base_body < 0:
      _fail("base", f"no body {spec.base!r} in {where} (its bodies: "
            f"{_all_names(m, mujoco.mjtObj.mjOBJ_BODY, m.nbody)})")
  base_anc = set(_ancestors(m, base_body))
  site_chains = []   # per site: the bodies that move it relative to the base
  for s, sid in zip(spec.ee_sites, site_ids):
    site_chains.append([b for b in _ancestors(m, int(m.site_bodyid[sid])) if b not in base_anc])

  def joint_id(name, field):
    j = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, name)
    if j < 0:
      _fail(field, f"no joint {name!r} in {where} (its joints: "
            f"{_all_names(m, mujoco.mjtObj.mjOBJ_JOINT, m.njnt)})")
    return j

  # Gripper joints: exist, hinge/slide, not arm joints.
  gripper_ids = set()
  for group in spec.gripper_joints or ():
    for name in group:
      gripper_ids.add(joint_id(name, "gripper.joints"))

  # Arm joints.
  chain_bodies = set(b for chain in site_chains for b in chain)
  if spec.joints:
    jids = []
    for name in spec.joints:
      j = joint_id(name, "joints")
      if j in gripper_ids:
        _fail("joints", f"joint {name!r} is also a gripper joint (config.robot.gripper.joints)")
      if int(m.jnt_bodyid[j]) not in chain_bodies:
        _fail("joints", f"joint {name!r} is not on the chain from "
              f"{spec.base or 'the world'} to the site(s) {', '.join(spec.ee_sites)}: it does "
              f"not move them")
      jids.append(j)
  else:
    jids = [j for j in range(m.njnt) if int(m.jnt_bodyid[j]) in chain_bodies
            and int(m.jnt_type[j]) in (_HINGE, _SLIDE) and j not in gripper_ids]
  for s, chain in zip(spec.ee_sites, site_chains):
    if not any(int(m.jnt_bodyid[j]) in chain for j in jids):
      _fail("ee_sites" if not spec.joints else "joints",
            f"no {'selected ' if spec.joints else ''}hinge or slide joint on the chain from "
            f"{spec.base or 'the world'} to site {s!r} in {where}: the chain does not reach "
            f"the site")
  for j in jids:
    field = "joints"
    jname = _name(m, mujoco.mjtObj.mjOBJ_JOINT, j)
    t = int(m.jnt_type[j])
    if t not in (_HINGE, _SLIDE):
      _fail(field, f"joint {jname!r} is a {_JOINT_TYPE_NAMES.get(t, t)} joint; only hinge and "
            f"slide joints can be sampled (leave it out of config.robot.joints)")
    lo, hi = (float(v) for v in m.jnt_range[j])
    if not m.jnt_limited[j] or not hi > lo:
      _fail(field, f"joint {jname!r} of {where} has no limits: give it range=\"lo hi\" in the "
            f"MJCF (the generator samples inside the joint limits)")
  for j in gripper_ids:
    if int(m.jnt_type[j]) not in (_HINGE, _SLIDE):
      _fail("gripper.joints", f"joint {_name(m, mujoco.mjtObj.mjOBJ_JOINT, j)!r} is not a "
            f"hinge or slide joint")

  names = tuple(_name(m, mujoco.mjtObj.mjOBJ_JOINT, j) for j in jids)
  types = tuple(_JOINT_TYPE_NAMES[int(m.jnt_type[j])] for j in jids)
  qpos_adr = np.array([int(m.jnt_qposadr[j]) for j in jids], np.int64)
  lower = np.array([m.jnt_range[j, 0] for j in jids], np.float64)
  upper = np.array([m.jnt_range[j, 1] for j in jids], np.float64)
  nj = len(jids)

  def per_joint(values, field, default_by_type):
    if values:
      v = np.asarray(values, np.float64)
      if v.size == 1:
        v = np.full(nj, float(v[0]))
      if v.size != nj:
        _fail(field, f"{v.size} values for the robot's {nj} joints {names}")
      if np.any(v <= 0):
        _fail(field, f"must be > 0, got {tuple(v)}")
      return v
    if default_by_type is None:
      return None
    return np.array([default_by_type[t] for t in types], np.float64)

  velocity = per_joint(spec.velocity_limits, "velocity_limits", None)
  if velocity is None:
    velocity = defaults.get("velocity")
    velocity = (np.asarray(velocity, np.float64) if velocity is not None else
                np.array([DEFAULT_VELOCITY[t] for t in types]))
  acceleration = per_joint(spec.acceleration_limits, "acceleration_limits", None)
  if acceleration is None:
    acceleration = defaults.get("acceleration")
    acceleration = (np.asarray(acceleration, np.float64) if acceleration is not None else
                    np.array([DEFAULT_ACCELERATION[t] for t in types]))
  if spec.home:
    home = np.asarray(spec.home, np.float64)
    if home.size != nj:
      _fail("home", f"{home.size} values for the robot's {nj} joints {names}")
    bad = np.flatnonzero((home < lower) | (home > upper))
    if bad.size:
      i = int(bad[0])
      _fail("home", f"joint {names[i]!r} = {home[i]:g} is outside its range "
            f"[{lower[i]:g}, {upper[i]:g}]")
  elif "home" in defaults:
    home = np.asarray(defaults["home"], np.float64)
  elif "home" in keys and keys["home"].size == m.nq:
    home = keys["home"][qpos_adr]
  else:
    home = np.asarray(m.qpos0, np.float64)[qpos_adr]
  if "std" in defaults:
    std = defaults["std"]
  else:
    std = np.array([min(0.25 * (hi - lo), DEFAULT_STD[t])
                    for t, lo, hi in zip(types, lower, upper)])

  layout = tree_layout(m, jids, site_ids, base_body)
  info = RobotInfo(
      name=spec.mjcf, source=source, xml=xml, sites=spec.ee_sites,
      base=spec.base if spec.base != "world" else "", joint_names=names, joint_types=types,
      qpos_adr=qpos_adr, joint_lower=lower, joint_upper=upper,
      velocity_limits=np.asarray(velocity, np.float64),
      acceleration_limits=np.asarray(acceleration, np.float64),
      init_qpos=np.asarray(home, np.float64), workspace_std=np.asarray(std, np.float64),
      gripper_joints=spec.gripper_joints, gripper_range=tuple(spec.gripper_range),
      action_space=spec.action_space, workspace=spec.workspace or defaults["workspace"],
      layout=layout, kinematics_sha256=kinematics_fingerprint(m, layout, names, types))
  return Robot(model, info)


def check_config(config) -> RobotInfo:
  """Validates `config.robot` (loads the MJCF; nothing is compiled by XLA). ConfigError."""
  robot = load_robot(config.get("robot") if hasattr(config, "get") else None)
  info = robot.info
  d = config.data
  if d.source != "generated" and (info.name != "panda" or info.action_space != "ee_pose"
                                  or info.sites != ("grip_site",) or info.base):
    raise ConfigError(
        f"config.robot: data.source={d.source!r} reads robosuite Panda demonstrations (grip-"
        f"site poses in the world frame); use data.source='generated' for robot "
        f"{info.name!r} (sites {', '.join(info.sites)}, action_space {info.action_space!r})")
  std = tuple(d.fk.get("workspace_std", ()) or ())
  if std and len(std) not in (1, info.num_joints):
    raise ConfigError(f"config.data.fk.workspace_std: {len(std)} values for the robot's "
                      f"{info.num_joints} joints; give one per joint, one for all, or () for "
                      f"the robot's default")
  margin = float(d.fk.get("limit_margin", 0.0))
  narrow = np.flatnonzero(info.joint_upper - info.joint_lower <= 2 * margin)
  if narrow.size:
    j = int(narrow[0])
    raise ConfigError(f"config.data.fk.limit_margin: {margin:g} from each limit leaves nothing "
                      f"of joint {info.joint_names[j]!r}'s range [{info.joint_lower[j]:g}, "
                      f"{info.joint_upper[j]:g}]")
  return info


# ----------------------------------------------------------------------------------------------
# FK: plain JAX over the body tree


class KinematicsTree(NamedTuple):
  """The arrays of the MjModel that kinematics reads (a pytree; numpy or jax leaves)."""
  body_pos: Any    # (nbody, 3)
  body_quat: Any   # (nbody, 4) wxyz
  jnt_axis: Any    # (njnt, 3)
  jnt_pos: Any     # (njnt, 3)
  qpos0: Any       # (nq,)
  site_pos: Any    # (nsite, 3)
  site_quat: Any   # (nsite, 4) wxyz


def kinematics_tree(model) -> KinematicsTree:
  """Extracts the FK arrays from an `mujoco.MjModel` or an `mjx.Model` (keeps jax leaves)."""
  return KinematicsTree(model.body_pos, model.body_quat, model.jnt_axis, model.jnt_pos,
                        model.qpos0, model.site_pos, model.site_quat)


def _quat_mat(q):  # wxyz (..., 4) -> (..., 3, 3)
  return rotation.quat_xyzw_to_matrix(jnp.concatenate([q[..., 1:], q[..., :1]], axis=-1))


def _axis_angle_mat(axis, angle):  # axis (3,), angle (...,) -> (..., 3, 3), Rodrigues
  x, y, z = axis[0], axis[1], axis[2]
  c, s = jnp.cos(angle), jnp.sin(angle)
  C = 1 - c
  rows = [[c + x * x * C, x * y * C - z * s, x * z * C + y * s],
          [y * x * C + z * s, c + y * y * C, y * z * C - x * s],
          [z * x * C - y * s, z * y * C + x * s, c + z * z * C]]
  return jnp.stack([jnp.stack(r, axis=-1) for r in rows], axis=-2)


def _body_frame(tree, q, layout: TreeLayout, body: int, f, batch, dtype):
  """World pose (pos (..., 3), mat (..., 3, 3)) of `body`, walking the tree as mj_kinematics
  does: child = parent * (body_pos, body_quat), then each joint of the body in order."""
  body_pos, body_quat = f(tree.body_pos), f(tree.body_quat)
  path, b = [], body
  while b != 0:
    path.append(b)
    b = layout.parent[b]
  pos = jnp.zeros(batch + (3,), dtype)
  mat = jnp.broadcast_to(jnp.eye(3, dtype=dtype), batch + (3, 3))
  for b in reversed(path):
    # Child frame from the parent: xpos = p + R @ body_pos, xmat = R @ body_rot.
    pos = pos + jnp.einsum("...ij,j->...i", mat, body_pos[b])
    mat = jnp.einsum("...ij,jk->...ik", mat, _quat_mat(body_quat[b]))
    for j, kind, adr, k in layout.body_joints[b]:
      if k < 0:        # not a robot joint: held at qpos0, an identity transform
        continue
      axis = f(tree.jnt_axis[j])
      if kind == "slide":
        # xpos += (R @ axis) (q - qpos0); the anchor does not move the frame
        pos = pos + jnp.einsum("...ij,j->...i", mat, axis) * (q[..., k] - f(tree.qpos0[adr]))[
            ..., None]
        continue
      anchor = pos + jnp.einsum("...ij,j->...i", mat, f(tree.jnt_pos[j]))
      mat = jnp.einsum("...ij,...jk->...ik", mat,
                       _axis_angle_mat(axis, q[..., k] - f(tree.qpos0[adr])))
      pos = anchor - jnp.einsum("...ij,j->...i", mat, f(tree.jnt_pos[j]))
  return pos, mat


def fk_tree_site_list(tree: KinematicsTree, q, layout: TreeLayout):
  """Plain-JAX FK: lists (one entry per ee site) of pos (..., 3) and rotation (..., 3, 3) in
  the base frame. q: (..., nj) in the robot's joint order; tree: `kinematics_tree(model)`."""
  q = jnp.asarray(q)
  dtype = q.dtype if jnp.issubdtype(q.dtype, jnp.floating) else jnp.float32
  q = q.astype(dtype)
  f = lambda a: jnp.asarray(a, dtype)
  batch = q.shape[:-1]
  if layout.base_body:
    bpos, bmat = _body_frame(tree, q, layout, layout.base_body, f, batch, dtype)
    bmat_t = jnp.swapaxes(bmat, -1, -2)
  out_pos, out_mat = [], []
  for sid, body in zip(layout.site_ids, layout.site_body):
    pos, mat = _body_frame(tree, q, layout, body, f, batch, dtype)
    spos = pos + jnp.einsum("...ij,j->...i", mat, f(tree.site_pos[sid]))
    smat = jnp.einsum("...ij,jk->...ik", mat, _quat_mat(f(tree.site_quat[sid])))
    if layout.base_body:
      spos = jnp.einsum("...ij,...j->...i", bmat_t, spos - bpos)
      smat = jnp.einsum("...ij,...jk->...ik", bmat_t, smat)
    out_pos.append(spos)
    out_mat.append(smat)
  return out_pos, out_mat


def fk_tree_sites(tree: KinematicsTree, q, layout: TreeLayout):
  """Plain-JAX FK: pos (..., S, 3), rotation matrices (..., S, 3, 3), base frame."""
  p, m = fk_tree_site_list(tree, q, layout)
  return jnp.stack(p, axis=-2), jnp.stack(m, axis=-3)


# ----------------------------------------------------------------------------------------------
# FK: MJX and the C reference


def put_mjx_model(model: mujoco.MjModel):
  from mujoco import mjx
  return mjx.put_model(model)


def full_qpos(q, qpos0, layout: TreeLayout, qpos_adr):
  """The model's qpos (..., nq) with the robot's joints set and every other joint at qpos0."""
  if layout.identity_qpos:
    return q
  base = jnp.broadcast_to(jnp.asarray(qpos0, q.dtype), q.shape[:-1] + (layout.nq,))
  return base.at[..., np.asarray(qpos_adr)].set(q)


def fk_mjx_site_list(mjx_model, q, layout: TreeLayout, qpos_adr):
  """`mujoco.mjx.kinematics`, vmapped over a (B, nj) batch; lists per site like
  `fk_tree_site_list`. Pass the mjx model as a jit argument."""
  from mujoco import mjx
  data0 = mjx.make_data(mjx_model)

  def one(qi):
    d = mjx.kinematics(mjx_model, data0.replace(
        qpos=full_qpos(qi.astype(data0.qpos.dtype), mjx_model.qpos0, layout, qpos_adr)))
    ps = [d.site_xpos[s] for s in layout.site_ids]
    ms = [d.site_xmat[s].reshape(3, 3) for s in layout.site_ids]
    if layout.base_body:
      bp, bm = d.xpos[layout.base_body], d.xmat[layout.base_body].reshape(3, 3)
      ps = [bm.T @ (p - bp) for p in ps]
      ms = [bm.T @ mm for mm in ms]
    return ps, ms

  return jax.vmap(one)(q)


def fk_mjx_sites(mjx_model, q, layout: TreeLayout, qpos_adr):
  p, m = fk_mjx_site_list(mjx_model, q, layout, qpos_adr)
  return jnp.stack(p, axis=-2), jnp.stack(m, axis=-3)


def fk_cpu_sites(mj_model: mujoco.MjModel, q, info: RobotInfo):
  """Reference FK: a loop over `mujoco.mj_kinematics`. q (B, nj) -> pos (B, S, 3),
  mat (B, S, 3, 3), base frame."""
  q = np.atleast_2d(np.asarray(q, np.float64))
  lay = info.layout
  d = mujoco.MjData(mj_model)
  pos = np.empty((len(q), len(lay.site_ids), 3))
  mat = np.empty((len(q), len(lay.site_ids), 3, 3))
  for i, qi in enumerate(q):
    d.qpos[:] = mj_model.qpos0
    d.qpos[info.qpos_adr] = qi
    mujoco.mj_kinematics(mj_model, d)
    bp, bm = d.xpos[lay.base_body], d.xmat[lay.base_body].reshape(3, 3)
    for s, sid in enumerate(lay.site_ids):
      pos[i, s] = bm.T @ (d.site_xpos[sid] - bp)
      mat[i, s] = bm.T @ d.site_xmat[sid].reshape(3, 3)
  return pos, mat
