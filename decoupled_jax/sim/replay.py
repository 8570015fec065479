"""Replaying recorded simulator states: delta -> absolute action relabelling, observations
regenerated from states, and the open-loop check of converted actions.

Why. Published robomimic / MimicGen / robosuite-collected demonstrations carry DELTA OSC_POSE
commands; the policy (and our env, `sim/robosuite_env.py`) uses ABSOLUTE world-frame targets of
the grip site (README "Frames"). robosuite's collection script stores only `states` +
`actions` (+ the scene XML per demo), without observations.

Delta -> absolute (what a delta OSC controller does, robosuite 1.4 `controllers/osc.py` and
1.5 `controllers/parts/arm/osc.py: set_goal/compute_goal_*`, goal update mode 'achieved'):
at step t, with the simulator reset to `states[t]` (the state the action was applied in; the
collection wrapper records the state before each action), the grip-site pose (p, R), and the
scaled delta d = clip(a, in_min, in_max) * scale + offset (`scale_delta`):

    goal_p = p + R_o d[:3]
    goal_R = R_o Rot(d[3:6]) R_o^T R

where R_o is the identity for world-frame deltas (robosuite <= 1.4, or `input_ref_frame=
'world'`) and the controller origin's rotation (site `robot0_right_center`) for 1.5's default
`input_ref_frame='base'`. The absolute action is [goal_p, rotvec(goal_R), gripper], the
gripper command kept as recorded. `tests/test_datasets.py` checks this against robosuite 1.5's
own controller goal (`set_goal`) in both frames. `absolute_to_delta` is the inverse (for tests
and for handing data to delta-controller code; deltas beyond the input range are clipped and
counted).

Scenes. States are only meaningful in the scene they were recorded in. Objects whose size is
randomised at model load (Lift's cube) differ per demo; when a demo has a `model_file`, the
sizes of the task objects' primitive geoms are copied from it into our env's own model
(`transplant_object_geometry`) and the env is reloaded from that XML. Our own model is kept
otherwise, which is what lets robosuite 1.4 recordings (same 32-D Panda Lift state layout,
platform notes) replay in robosuite 1.5, whose body/site names differ.

Observations from states follow robomimic's `dataset_states_to_obs`: reset the simulator to each
state, forward, read the observables; rewards are r(s') (the next state's; the last step's by
playing the final action), dones mark the last step.
"""
from __future__ import annotations

import dataclasses
import hashlib
import xml.etree.ElementTree as ET
from typing import Mapping

import numpy as np
from scipy.spatial.transform import Rotation

from decoupled_jax.data.robomimic_hdf5 import ControllerInfo, DatasetError

SUPPORTED_TYPES = ("OSC_POSE",)
_PRIMITIVES = ("box", "sphere", "capsule", "cylinder", "ellipsoid")
_DEFAULT_IN = (1.0, -1.0)
_DEFAULT_OUT = ((0.05, 0.05, 0.05, 0.5, 0.5, 0.5), (-0.05, -0.05, -0.05, -0.5, -0.5, -0.5))


# ----------------------------------------------------------------------------- scaling
def _six(v, default) -> np.ndarray:
  v = default if v is None else v
  a = np.asarray(v, np.float64).reshape(-1)
  return np.broadcast_to(a, (6,)).copy() if a.size in (1, 6) else None


@dataclasses.dataclass(frozen=True)
class DeltaScaling:
  """robosuite's `Controller.scale_action` for the 6 pose dims."""
  input_max: np.ndarray
  input_min: np.ndarray
  output_max: np.ndarray
  output_min: np.ndarray

  @classmethod
  def from_config(cls, cfg: Mapping, where: str = "<controller>") -> "DeltaScaling":
    vals = {}
    for k, d in (("input_max", _DEFAULT_IN[0]), ("input_min", _DEFAULT_IN[1]),
                 ("output_max", _DEFAULT_OUT[0]), ("output_min", _DEFAULT_OUT[1])):
      a = _six(cfg.get(k), d)
      if a is None:
        raise DatasetError(f"{where}: controller {k}={cfg.get(k)!r} is not 1 or 6 numbers")
      vals[k] = a
    return cls(**vals)

  @property
  def scale(self) -> np.ndarray:
    return np.abs(self.output_max - self.output_min) / np.abs(self.input_max - self.input_min)

  def apply(self, a: np.ndarray) -> np.ndarray:
    a = np.clip(np.asarray(a, np.float64), self.input_min, self.input_max)
    return ((a - (self.input_max + self.input_min) / 2) * self.scale
            + (self.output_max + self.output_min) / 2)

  def invert(self, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scaled delta -> raw action in the input range, and a mask of clipped entries."""
    a = (np.asarray(d, np.float64) - (self.output_max + self.output_min) / 2) / self.scale + (
        self.input_max + self.input_min) / 2
    clipped = (a > self.input_max + 1e-9) | (a < self.input_min - 1e-9)
    return np.clip(a, self.input_min, self.input_max), clipped

  def to_config(self) -> dict:
    return {k: getattr(self, k).tolist() for k in ("input_max", "input_min", "output_max",
                                                    "output_min")}


def check_convertible(info: ControllerInfo, where: str) -> DeltaScaling:
  """The controller must be a fixed-impedance OSC_POSE without interpolation."""
  cfg = info.config
  if info.type not in SUPPORTED_TYPES:
    raise DatasetError(f"{where}: controller type {info.type!r} ({info.key}); only "
                       f"{SUPPORTED_TYPES} actions can be converted")
  mode = cfg.get("impedance_mode", "fixed")
  if mode != "fixed":
    raise DatasetError(f"{where}: controller impedance_mode={mode!r}: variable-impedance "
                       f"actions are not supported")
  for k in ("interpolation", "interpolator_pos", "interpolator_ori"):
    if cfg.get(k) not in (None, "null", False):
      raise DatasetError(f"{where}: controller {k}={cfg.get(k)!r}: interpolated OSC goals are "
                         f"not supported")
  if info.ref_frame not in ("world", "base"):
    raise DatasetError(f"{where}: controller input_ref_frame={info.ref_frame!r} unknown")
  return DeltaScaling.from_config(cfg, where)


# ----------------------------------------------------------------------------- conversions
def delta_to_absolute(delta: np.ndarray, site_pos: np.ndarray, site_rot: np.ndarray,
                      scaling: DeltaScaling, origin_rot: np.ndarray | None = None) -> np.ndarray:
  """(T, 7) delta actions + the site pose at each action's state -> (T, 7) absolute actions.

  site_pos (T, 3), site_rot (T, 3, 3) world frame; origin_rot (T, 3, 3) for base-frame deltas
  (None: world-frame deltas)."""
  delta = np.asarray(delta, np.float64)
  d = scaling.apply(delta[:, :6])
  t = len(delta)
  ro = np.broadcast_to(np.eye(3), (t, 3, 3)) if origin_rot is None else np.asarray(origin_rot)
  goal_p = site_pos + np.einsum("tij,tj->ti", ro, d[:, :3])
  r_err = Rotation.from_rotvec(d[:, 3:6]).as_matrix()
  goal_r = ro @ r_err @ np.transpose(ro, (0, 2, 1)) @ site_rot
  aa = Rotation.from_matrix(goal_r).as_rotvec()
  return np.concatenate([goal_p, aa, delta[:, 6:7]], axis=-1)


def absolute_to_delta(absolute: np.ndarray, site_pos: np.ndarray, site_rot: np.ndarray,
                      scaling: DeltaScaling, origin_rot: np.ndarray | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
  """Inverse of `delta_to_absolute`; returns (delta (T, 7), clipped (T, 6) bool)."""
  absolute = np.asarray(absolute, np.float64)
  t = len(absolute)
  ro = np.broadcast_to(np.eye(3), (t, 3, 3)) if origin_rot is None else np.asarray(origin_rot)
  rot = np.transpose(ro, (0, 2, 1))
  dp = np.einsum("tij,tj->ti", rot, absolute[:, :3] - site_pos)
  goal_r = Rotation.from_rotvec(absolute[:, 3:6]).as_matrix()
  r_err = rot @ goal_r @ np.transpose(site_rot, (0, 2, 1)) @ ro
  da = Rotation.from_matrix(r_err).as_rotvec()
  raw, clipped = scaling.invert(np.concatenate([dp, da], axis=-1))
  return np.concatenate([raw, absolute[:, 6:7]], axis=-1), clipped


# ----------------------------------------------------------------------------- scenes
def transplant_object_geometry(target_xml: str, recorded_xml: str,
                               object_prefixes) -> tuple[str, list[str]]:
  """Copy the `size` of the task objects' primitive geoms (names starting with one of
  `object_prefixes`) from the recorded scene into `target_xml`. Returns (xml, changed names).
  Raises ET.ParseError on malformed XML."""
  rec = ET.fromstring(recorded_xml)
  sizes = {g.get("name"): g.get("size") for g in rec.iter("geom")
           if g.get("name") and g.get("size") is not None}
  root = ET.fromstring(target_xml)
  prefixes = tuple(object_prefixes)
  changed = []
  for g in root.iter("geom"):
    name = g.get("name") or ""
    if not prefixes or not name.startswith(prefixes):
      continue
    if g.get("type", "sphere") not in _PRIMITIVES or name not in sizes:
      continue
    new = sizes[name]
    if new != g.get("size"):
      g.set("size", new)
      changed.append(name)
  return (ET.tostring(root, encoding="unicode") if changed else target_xml), changed


def site_pose(raw) -> tuple[np.ndarray, np.ndarray]:
  """World position and rotation matrix of the grip site of a raw robosuite env's robot 0."""
  robot = raw.robots[0]
  sid = robot.eef_site_id["right"]
  d = raw.sim.data
  return np.array(d.site_xpos[sid]), np.array(d.site_xmat[sid]).reshape(3, 3)


def origin_rot(raw) -> np.ndarray:
  """The arm controller's origin frame rotation (robosuite 1.5 `get_controller_base_pose`)."""
  robot = raw.robots[0]
  m, d = raw.sim.model, raw.sim.data
  name = f"{robot.robot_model.naming_prefix}right_center"
  try:
    return np.array(d.site_xmat[m.site_name2id(name)]).reshape(3, 3)
  except Exception:  # noqa: BLE001  (no such site: use the robot's root body)
    return np.array(d.body_xmat[m.body_name2id(robot.robot_model.root_body)]).reshape(3, 3)


def refresh_controllers(raw) -> None:
  """Make the robots' controllers read the simulator state now. After `reset` robosuite's
  controllers hold cached readings (`new_update=False`) until their first `run_controller`, so
  without this the first step after setting a state would compute its goal and torques from the
  reset pose."""
  for robot in raw.robots:
    cc = getattr(robot, "composite_controller", None)
    if cc is not None and hasattr(cc, "update_state"):
      cc.update_state()
    for c in getattr(robot, "part_controllers", {}).values():
      c.update(force=True)


def adopt_initial_joints(raw) -> None:
  """Make the current arm configuration the controllers' episode-initial joints. robosuite
  rebuilds the controllers at every reset with `initial_joint` = that reset's (noisy) arm
  configuration, toward which OSC's nullspace torque pulls; a recorded episode had its own first
  state's. Call after setting an episode's first state, before stepping (without it, replaying
  a generated Lift demo drifted up to 0.015 rad in the joints; with it, the grip site follows
  the recording to ~1e-6 mm)."""
  for robot in raw.robots:
    for arm in getattr(robot, "arms", ["right"]):
      c = robot.part_controllers.get(arm)
      if c is not None and hasattr(c, "update_initial_joints"):
        c.update_initial_joints(np.array(raw.sim.data.qpos[c.qpos_index]))


class SceneReplayer:
  """One of our robosuite envs driven by recorded states (see the module docstring).

  `load_scene` reloads the model (robosuite `reset_from_xml_string`), which recreates the
  offscreen GL context: keep no other rendering env alive in the same process meanwhile (its
  renders came out as another camera's view when we tried)."""

  def __init__(self, task: str, *, images: bool = False, image_size: int = 84, env=None):
    from decoupled_jax.sim.robosuite_env import make_env
    self.task = task
    self.images = bool(images)
    self.env = env if env is not None else make_env(task, use_images=images,
                                                    image_size=image_size, offscreen=False)
    self.env.reset(0)
    self.raw = self.env.env
    self._base_xml = self.raw.sim.model.get_xml()
    self._loaded = hashlib.sha1(self._base_xml.encode()).hexdigest()
    self._base_hash = self._loaded
    self.object_prefixes = tuple(
        getattr(o, "naming_prefix", f"{o.name}_") for o in
        getattr(self.raw.model, "mujoco_objects", []) or [])

  # -- scene
  @property
  def state_size(self) -> int:
    return int(self.raw.sim.get_state().flatten().shape[0])

  def _shadows_off(self):
    self.raw.sim.model.light_castshadow[:] = 0

  def load_scene(self, model_xml: str | None, where: str, seed: int | None = None) -> list[str]:
    """Use the recorded scene's object sizes; without a model_file but with the reset `seed` of
    one of our generated demos, rebuild our model from that seed (`RobosuiteEnv.reset(seed)`
    builds the model from it); with neither, our own model. Returns the changed geoms."""
    if not model_xml and seed is not None:
      self.env.reset(int(seed))
      self._loaded = None
      self._shadows_off()
      return []
    changed = []
    xml = self._base_xml
    if model_xml:
      try:
        xml, changed = transplant_object_geometry(self._base_xml, model_xml, self.object_prefixes)
      except ET.ParseError as e:
        raise DatasetError(f"{where}: attr model_file does not load (XML: {e})") from e
    key = hashlib.sha1(xml.encode()).hexdigest()
    if key != self._loaded:
      try:
        self.raw.reset_from_xml_string(xml)
      except Exception as e:  # noqa: BLE001  (mujoco raises ValueError / XML errors)
        raise DatasetError(f"{where}: attr model_file does not load "
                           f"({type(e).__name__}: {str(e).splitlines()[0]})") from e
      self._loaded = key
      self._shadows_off()
    return changed

  def set_state(self, state: np.ndarray, where: str = "") -> None:
    state = np.asarray(state, np.float64).reshape(-1)
    if state.shape[0] != self.state_size:
      m = self.raw.sim.model
      raise DatasetError(f"{where}: {state.shape[0]}-D states, but {self.task} here has "
                         f"{self.state_size}-D states (time + qpos {m.nq} + qvel {m.nv}"
                         + (f" + act {m.na}" if m.na else "") + ")")
    self.raw.sim.set_state_from_flattened(state)
    self.raw.sim.forward()
    refresh_controllers(self.raw)

  # -- readouts at the current state
  def site_pose(self) -> tuple[np.ndarray, np.ndarray]:
    return site_pose(self.raw)

  def origin_rot(self) -> np.ndarray:
    return origin_rot(self.raw)

  def observation(self) -> dict[str, np.ndarray]:
    """Policy observations (robomimic keys, as `RobosuiteEnv` reports them) at this state."""
    from decoupled_jax.sim.robosuite_env import CAMERA_NAMES
    raw = self.raw._get_observations(force_update=True)   # what RobosuiteEnv.reset uses too
    out = {"robot0_eef_pos": np.asarray(raw["robot0_eef_pos"], np.float64),
           "robot0_eef_quat": np.asarray(raw["robot0_eef_quat"], np.float64),
           "robot0_gripper_qpos": np.asarray(raw["robot0_gripper_qpos"], np.float64),
           "robot0_joint_pos": np.asarray(raw["robot0_joint_pos"], np.float64),
           "object": np.asarray(raw["object-state"], np.float64)}
    if self.images:
      for c in CAMERA_NAMES:
        out[f"{c}_image"] = np.ascontiguousarray(raw[f"{c}_image"], dtype=np.uint8)
    return out

  def success(self) -> bool:
    return bool(self.raw._check_success())

  def reward(self) -> float:
    return float(self.raw.reward(None))

  def close(self):
    self.env.close()


# ----------------------------------------------------------------------------- per demo
def scan_states(replayer: SceneReplayer, states: np.ndarray, where: str, *,
                observations: bool = False, origin: bool = False) -> dict:
  """Site poses (+ origin rotations, observations, success) at every recorded state."""
  t = len(states)
  pos, rot = np.zeros((t, 3)), np.zeros((t, 3, 3))
  ori = np.zeros((t, 3, 3)) if origin else None
  succ = np.zeros(t, bool)
  obs: dict[str, list] = {}
  for i in range(t):
    replayer.set_state(states[i], where)
    pos[i], rot[i] = replayer.site_pose()
    if origin:
      ori[i] = replayer.origin_rot()
    succ[i] = replayer.success()
    if observations:
      for k, v in replayer.observation().items():
        obs.setdefault(k, []).append(v)
  out = {"site_pos": pos, "site_rot": rot, "origin_rot": ori, "success": succ}
  if observations:
    out["obs"] = {k: np.stack(v) for k, v in obs.items()}
  return out


def rewards_after(replayer: SceneReplayer, states: np.ndarray, last_action: np.ndarray,
                  where: str) -> tuple[np.ndarray, np.ndarray]:
  """robomimic's r(s'): reward and success at states[1:], then after playing `last_action`
  (absolute, our controller) from states[-1]."""
  t = len(states)
  r, s = np.zeros(t), np.zeros(t, bool)
  for i in range(1, t):
    replayer.set_state(states[i], where)
    r[i - 1], s[i - 1] = replayer.reward(), replayer.success()
  r[-1], s[-1] = step_from(replayer, states[-1], last_action, where)
  return r, s


def step_from(replayer: SceneReplayer, state: np.ndarray, action: np.ndarray,
              where: str = "") -> tuple[float, bool]:
  """(reward, success) after one absolute `action` (our controller) from `state`."""
  replayer.set_state(state, where)
  replayer.env.step(np.asarray(action, np.float64))
  return replayer.reward(), replayer.success()


def open_loop_check(env, abs_actions: np.ndarray, states: np.ndarray, site_pos: np.ndarray,
                    site_rot: np.ndarray, where: str = "", model_xml: str | None = None,
                    replayer: SceneReplayer | None = None, seed: int | None = None) -> dict:
  """Play `abs_actions` open loop with our absolute controller from states[0]; compare the
  grip site with the recorded trajectory (site_pos/site_rot at states[1:]).

  `env` is a `RobosuiteEnv` (`make_env(task)`); `replayer` (optional) wraps it to load the
  recorded scene first. Returns position errors (mm), orientation errors (deg), success."""
  rp = replayer if replayer is not None else SceneReplayer(env.spec.task, env=env)
  rp.load_scene(model_xml, where, seed)
  env.reset()          # no seed: keeps the scene just loaded, resets controllers and gripper
  rp.set_state(states[0], where)
  adopt_initial_joints(rp.raw)
  t = len(abs_actions)
  success, first, replayed = False, None, []
  for i in range(t):
    _, _, _, info = env.step(np.asarray(abs_actions[i], np.float64))
    if info.get("success") and first is None:
      first = i
    success = success or bool(info.get("success"))
    if i + 1 < t:
      replayed.append(env.get_state())
  # Compare the grip site at the replayed and the recorded states, both by forward kinematics
  # at the state (step observations can lag the state by one physics substep).
  perr, rerr = [], []
  for i, s in enumerate(replayed):
    rp.set_state(s, where)
    p, r = rp.site_pose()
    perr.append(np.linalg.norm(p - site_pos[i + 1]))
    rerr.append(Rotation.from_matrix(site_rot[i + 1].T @ r).magnitude())
  perr = np.asarray(perr) * 1000.0 if perr else np.zeros(1)
  rerr = np.degrees(np.asarray(rerr)) if rerr else np.zeros(1)
  return {"pos_err_mean_mm": float(perr.mean()), "pos_err_max_mm": float(perr.max()),
          "rot_err_mean_deg": float(rerr.mean()), "rot_err_max_deg": float(rerr.max()),
          "success": bool(success), "first_success_step": first, "steps": int(t)}


# ----------------------------------------------------------------------------- whole files
def _robots(env_args: Mapping) -> list[str]:
  kw = env_args.get("env_kwargs", env_args) or {}
  r = kw.get("robots", ["Panda"])
  return [r] if isinstance(r, str) else list(r)


def delta_env_args(task: str, scaling: DeltaScaling | None = None) -> dict:
  """env_args of our task with a robosuite 1.5 delta OSC_POSE arm (world-frame deltas)."""
  from decoupled_jax.sim.robosuite_env import make_env
  env = make_env(task, offscreen=False)
  try:
    args = env.env_args()
  finally:
    env.close()
  arm = args["env_kwargs"]["controller_configs"]["body_parts"]["right"]
  arm["input_type"] = "delta"
  arm["input_ref_frame"] = "world"
  arm.update((scaling or DeltaScaling.from_config({})).to_config())
  return args


def _file_digest(path: str) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()


def convert_file(input_path: str, output_path: str, *, to: str = "absolute",
                 images: bool = False, image_size: int = 84, num_demos: int | None = None,
                 check: bool = True, progress: bool = True, overwrite: bool = False,
                 assume_actions: str | None = None) -> dict:
  """Convert a robomimic / robosuite-collection HDF5 file by replaying its states.

  `assume_actions` ('absolute' | 'delta'): the convention of a file that records none ('delta'
  = robosuite's default OSC_POSE delta controller: world frame, 0.05 m / 0.5 rad per unit);
  a file that records one is never overridden.

  to='absolute': delta OSC actions are relabelled as absolute grip-site targets (originals
  kept as `actions_delta`); absolute files keep their actions. Observations are copied when
  the demo has them (and no images are asked for that it lacks), else regenerated from the
  states (low-dim; + 84x84 agentview / eye-in-hand with `images`). to='delta': the inverse
  relabelling of an absolute file (originals kept as `actions_absolute`), for tests and for
  delta-controller code.

  Output: robomimic layout with our env_args (absolute world-frame OSC_POSE for 'absolute'),
  the source's demo names and masks, provenance in `data.attrs['conversion']` (JSON). One shard
  per demo in `<output>.shards/` (atomic, reused when rerun with the same input and settings),
  merged atomically at the end; an existing output is only replaced with `overwrite` (or
  returned as is when it came from the same input and settings). With `check`, each
  converted demo's absolute actions are replayed open loop from its first state with our
  absolute controller (`open_loop_check`): errors and success are stored as demo attributes
  and in the summary (`<output>.json`).
  """
  import datetime
  import json
  import os
  import shutil

  import h5py

  from decoupled_jax import util
  from decoupled_jax.data import robomimic_hdf5 as rh
  from decoupled_jax.sim.robosuite_env import canonical_task, make_env

  if to not in ("absolute", "delta"):
    raise ValueError(f"to must be 'absolute' or 'delta', got {to!r}")
  input_path, output_path = str(input_path), str(output_path)
  if os.path.abspath(input_path) == os.path.abspath(output_path):
    raise ValueError(f"{output_path}: output must differ from the input")
  with rh._open(input_path) as f:
    names = rh.demo_names(f, input_path, None)
    env_args = rh.file_env_args(f, input_path)
    stamped = rh.file_action_convention(f)
    masks = {k: [n.decode() if isinstance(n, bytes) else str(n) for n in f["mask"][k][()]]
             for k in (f["mask"].keys() if "mask" in f else [])}
  where = f"{input_path}: data attrs"
  if assume_actions not in (None, "absolute", "delta"):
    raise ValueError(f"assume_actions must be 'absolute' or 'delta', got {assume_actions!r}")
  assumed = False
  try:
    info = rh.controller_info(env_args, where)
    conv = info.convention
  except rh.ConventionUnknown:
    if stamped is None and assume_actions is None:
      raise
    info, conv, assumed = None, stamped or assume_actions, stamped is None
  if assume_actions is not None and not assumed and conv != assume_actions:
    raise DatasetError(f"{where}: the file says its actions are {conv}; --assume_actions="
                       f"{assume_actions} is only for files that do not say")
  env_name = str(env_args.get("env_name", ""))
  try:
    task = canonical_task(env_name)
  except KeyError:
    raise DatasetError(f"{where}: env_args.env_name={env_name!r} is not a task this library can "
                       f"simulate (Lift, Stack, NutAssemblySquare, PickPlaceCan)") from None
  robots = _robots(env_args)
  if [r.lower() for r in robots] != ["panda"]:
    raise DatasetError(f"{where}: env_args robots={robots}; only a single Panda is supported")
  kw = env_args.get("env_kwargs", env_args) or {}
  if int(kw.get("control_freq", 20)) != 20:
    raise DatasetError(f"{where}: env_args control_freq={kw.get('control_freq')}; our env runs "
                       f"at 20 Hz")
  scaling, origin = None, False
  if conv == "delta":
    if to == "delta":
      raise DatasetError(f"{where}: actions are already delta "
                         f"({info.key if info is not None else 'action_convention'})")
    scaling = check_convertible(info, where) if info is not None else DeltaScaling.from_config({})
    origin = info is not None and info.ref_frame == "base"
  elif to == "delta":
    if info is not None:
      check_convertible(info, where)
      if info.ref_frame != "world":
        raise DatasetError(f"{where}: absolute actions in the '{info.ref_frame}' frame are not "
                           f"supported ({info.key})")
    scaling = DeltaScaling.from_config({})
  elif info is not None and info.ref_frame != "world":
    raise DatasetError(f"{where}: absolute actions in the '{info.ref_frame}' frame are not "
                       f"supported ({info.key})")
  if num_demos is not None:
    names = names[:int(num_demos)]

  shard_dir = output_path + ".shards"
  src_stat = os.stat(input_path)
  settings = {"input": os.path.abspath(input_path), "size": src_stat.st_size,
              "mtime": int(src_stat.st_mtime), "to": to, "images": bool(images),
              "image_size": int(image_size), "check": bool(check), "demos": list(names)}
  if assumed:
    settings["assume_actions"] = assume_actions
  if os.path.exists(output_path):
    done = (json.load(open(output_path + ".json")) if os.path.exists(output_path + ".json")
            else {})
    if done.get("settings") == settings:
      return done   # already converted with these settings
    if not overwrite:
      raise FileExistsError(f"{output_path}: exists (not this conversion's output); pass "
                            f"overwrite=True (--overwrite) to replace it")
  spath = os.path.join(shard_dir, "settings.json")
  if os.path.exists(shard_dir):
    old = json.load(open(spath)) if os.path.exists(spath) else None
    if old != settings:
      shutil.rmtree(shard_dir)   # shards of another input or other settings
  os.makedirs(shard_dir, exist_ok=True)
  util.write_json(spath, settings, indent=None)

  new_env_args = (delta_env_args(task, scaling) if to == "delta" else None)
  replayer = check_env = None
  results = {}
  it = names
  if progress:
    from tqdm import tqdm
    it = tqdm(names, desc=f"convert {os.path.basename(input_path)}", unit="demo")
  try:
    for name in it:
      shard = os.path.join(shard_dir, f"{name}.hdf5")
      if os.path.exists(shard):
        with h5py.File(shard, "r") as s:
          results[name] = json.loads(s["data/demo_0"].attrs.get("replay_check", "{}"))
        continue
      dwhere = f"{input_path}: data/{name}"
      with h5py.File(input_path, "r") as f:
        g = f["data"][name]
        if "states" not in g:
          raise DatasetError(f"{dwhere}: missing key 'states' (conversion replays states)")
        if "actions" not in g:
          raise DatasetError(f"{dwhere}: missing key 'actions' (has {sorted(g.keys())})")
        states = np.asarray(g["states"][()], np.float64)
        actions = np.asarray(g["actions"][()], np.float64)
        obs_in = {k: g["obs"][k][()] for k in g["obs"].keys()} if "obs" in g else {}
        extra_in = {k: g[k][()] for k in ("rewards", "dones") if k in g}
        model_xml = g.attrs.get("model_file")
        model_xml = model_xml.decode() if isinstance(model_xml, bytes) else model_xml
        demo_attrs = {k: v for k, v in g.attrs.items() if k not in (
            "num_samples", "replay_check", "source_demo", "delta_clipped_fraction")}
      if states.ndim != 2 or len(states) == 0:
        raise DatasetError(f"{dwhere}/states: expected shape (T>0, S), got {states.shape}")
      if actions.shape != (len(states), 7):
        raise DatasetError(f"{dwhere}/actions: expected shape ({len(states)}, 7) (one 7-D action "
                           f"per state), got {actions.shape}")
      if not np.all(np.isfinite(actions)) or not np.all(np.isfinite(states)):
        raise DatasetError(f"{dwhere}: non-finite values (NaN/inf) in states or actions")
      image_keys = ("agentview_image", "robot0_eye_in_hand_image")
      regen = not obs_in or (images and not all(k in obs_in for k in image_keys))
      if replayer is None:
        replayer = SceneReplayer(task, images=images and regen, image_size=image_size)
      if replayer.images != (images and regen):
        replayer.close()
        replayer = SceneReplayer(task, images=images and regen, image_size=image_size)
      seed = demo_attrs.get("seed")
      seed = None if seed is None else int(seed)
      replayer.load_scene(model_xml, dwhere, seed)
      scan = scan_states(replayer, states, dwhere, observations=regen, origin=origin)
      if conv == "delta":
        absolute = delta_to_absolute(actions, scan["site_pos"], scan["site_rot"], scaling,
                                     scan["origin_rot"])
        out_actions, extra = absolute, {"actions_delta": actions}
      elif to == "delta":
        absolute = actions
        out_actions, clipped = absolute_to_delta(actions, scan["site_pos"], scan["site_rot"],
                                                 scaling)
        extra = {"actions_absolute": actions}
        demo_attrs["delta_clipped_fraction"] = float(clipped.any(-1).mean())
      else:
        absolute = actions
        out_actions, extra = actions, {}
      obs = scan["obs"] if regen else obs_in
      replayer.set_state(states[0], dwhere)   # the episode's controllers for the steps below
      adopt_initial_joints(replayer.raw)
      if extra_in.get("rewards") is not None and extra_in.get("dones") is not None:
        rewards, dones = extra_in["rewards"], extra_in["dones"]
      else:
        rewards, _ = rewards_after(replayer, states, absolute[-1], dwhere)
        dones = np.zeros(len(states))
        dones[-1] = 1
      _, final_success = step_from(replayer, states[-1], absolute[-1], dwhere)
      # the recorded states end before the last action: count the state after it too
      check_res = {"source_success": bool(scan["success"].any() or final_success),
                   "observations": "regenerated" if regen else "copied"}
      if check:
        if check_env is None:
          check_env = SceneReplayer(task, images=False)
        check_res.update(open_loop_check(check_env.env, absolute, states, scan["site_pos"],
                                         scan["site_rot"], dwhere, model_xml, check_env, seed))
      results[name] = check_res
      demo_attrs["replay_check"] = json.dumps(check_res)
      demo_attrs["source_demo"] = name
      rh.write_demo_shard(shard, {"actions": out_actions, "states": states, "rewards": rewards,
                                  "dones": dones, "obs": obs, "extra": extra,
                                  "attrs": demo_attrs},
                          env_args=new_env_args or {}, action_convention=to)
  finally:
    for r in (replayer, check_env):
      if r is not None:
        r.close()

  if new_env_args is None:
    env = make_env(task, offscreen=False)
    try:
      new_env_args = env.env_args()
    finally:
      env.close()
  import robosuite
  import decoupled_jax
  provenance = {
      "source_file": os.path.abspath(input_path), "source_sha256": _file_digest(input_path),
      "source_env_args": env_args, "source_action_convention": conv, "to": to,
      "method": ("absolute actions = delta OSC goal (grip-site pose at the recorded state "
                 "composed with the scaled delta), gripper kept" if conv == "delta" and
                 to == "absolute" else
                 "delta actions = inverse of the delta OSC goal at the recorded state"
                 if to == "delta" else "actions kept"),
      "observations": sorted({r.get("observations", "copied") for r in results.values()}),
      "images": bool(images), "date": datetime.datetime.now(datetime.timezone.utc).isoformat(
          timespec="seconds"),
      "robosuite_version": robosuite.__version__,
      "decoupled_jax_version": getattr(decoupled_jax, "__version__", "0.1.0"),
      "num_demos": len(names)}
  kept = {k: [n for n in v if n in names] for k, v in masks.items()}
  rh.merge_shards([os.path.join(shard_dir, f"{n}.hdf5") for n in names], output_path,
                  new_env_args, names=names, masks=kept if masks else None,
                  attrs={"conversion": json.dumps(provenance)}, action_convention=to)
  checked = [r for r in results.values() if "pos_err_mean_mm" in r]
  summary = {"input": input_path, "output": output_path, "to": to, "task": task,
             "settings": settings,
             "source_action_convention": conv, "demos": len(names), "per_demo": results}
  if checked:
    summary["open_loop"] = {
        "pos_err_mean_mm": float(np.mean([r["pos_err_mean_mm"] for r in checked])),
        "pos_err_max_mm": float(np.max([r["pos_err_max_mm"] for r in checked])),
        "rot_err_max_deg": float(np.max([r["rot_err_max_deg"] for r in checked])),
        "success": int(sum(r["success"] for r in checked)),
        "source_success": int(sum(r["source_success"] for r in checked)),
        "checked": len(checked)}
  util.write_json(output_path + ".json", summary, indent=2)
  shutil.rmtree(shard_dir)
  return summary
