"""The robosuite env adapter used by the evaluator, the scripted experts and demo generation.

`EnvAdapter` is the contract the evaluator (`sim/evaluator.py`), the scripted experts
(`sim/experts.py`) and demo generation (`sim/demos.py`) rely on; `RobosuiteEnv` is its only
implementation and `make_env(task)` / `make_env_from_spec(spec)` build it directly (task aliases:
`lift`, `stack`, `square`, `can`, or the robosuite env names):

  * observations are dicts keyed by **robomimic names** (`robot0_eef_pos`, `robot0_eef_quat`
    (xyzw), `robot0_gripper_qpos`, `robot0_joint_pos`, `object`, and with images
    `agentview_image`, `robot0_eye_in_hand_image` as uint8 (H, W, 3));
  * actions are 7-D absolute end-effector targets `[pos(3), axis-angle(3), gripper]` in the
    MuJoCo world frame (gripper -1 open, +1 close); see `sim/frames.py` for how their
    orientation relates to `robot0_eef_quat`;
  * `reset(seed)` makes the episode a pure function of `seed`, whatever ran before in the
    process (see "Determinism" below); `reset_to_state(state, seed)` additionally starts from a
    flat MuJoCo state (a demo's `states[0]`, the way robomimic's `reset_to` does).

Determinism. Everything random in an episode is drawn from generators re-seeded from the
episode seed at `reset(seed)`:
  * `env.rng`: robosuite 1.5.2's one generator (`np.random.default_rng(seed)` at construction,
    OS entropy when unseeded), held by reference by the placement samplers and used for the
    robot's initial-joint noise, is re-seeded in place;
  * tasks whose *model* is random when built are rebuilt from the re-seeded `env.rng` at every
    seeded reset (`_REBUILD_ON_RESET`): Lift draws the cube's half-size from U[0.020, 0.022]^3 in
    `_load_model` (`BoxObject(size_min, size_max, rng=self.rng)`). The other tasks' models are
    fixed (Stack's cube sizes have size_min == size_max; NutAssemblySquare and PickPlaceCan load
    fixed meshes; materials, colours and arenas are constant), so they keep the cheap soft reset
    (`mj_resetData` + robosuite's re-initialisation of robots, controllers and placements). The
    rebuild keeps the process's offscreen GL context (and the uploaded textures/meshes when the
    new model's assets are unchanged), so it costs one MJCF compile, not a new renderer;
  * numpy's global RNG (robosuite draws from it only for observation corruption / delays, not
    configured here) is swapped for a per-env state seeded from the episode seed during every
    robosuite call, so nothing leaks in from, or out to, the caller.

Only robosuite is supported, in-process. Simulators whose dependencies conflict with this
environment (e.g. LIBERO) are meant to run in their own process and talk to a policy server,
not to plug in here.

Images follow robosuite's default "opengl" convention (vertically flipped, as in the
robomimic/MimicGen HDF5 files), so generated and downloaded data look alike. `render()`
returns upright frames for videos.
"""
from __future__ import annotations

import abc
import contextlib
import copy
import dataclasses
import logging
from typing import Mapping

import numpy as np

LOW_DIM_KEYS = ("robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos", "robot0_joint_pos",
                "object")
CAMERA_NAMES = ("agentview", "robot0_eye_in_hand")
IMAGE_KEYS = tuple(f"{c}_image" for c in CAMERA_NAMES)

# Canonical task name -> robosuite env name and extra constructor kwargs.
ROBOSUITE_TASKS: dict[str, tuple[str, dict]] = {
    "Lift": ("Lift", {}),
    "Stack": ("Stack", {}),
    # NutAssemblySquare == NutAssembly(single_object_mode=2, nut_type="square").
    "NutAssemblySquare": ("NutAssemblySquare", {}),
    "PickPlaceCan": ("PickPlaceCan", {}),
}
TASK_ALIASES = {
    "lift": "Lift", "stack": "Stack", "square": "NutAssemblySquare",
    "nutassemblysquare": "NutAssemblySquare", "nut_assembly_square": "NutAssemblySquare",
    "can": "PickPlaceCan", "pickplacecan": "PickPlaceCan", "pick_place_can": "PickPlaceCan",
}


def canonical_task(task: str) -> str:
  if task in ROBOSUITE_TASKS:
    return task
  key = task.lower()
  if key in TASK_ALIASES:
    return TASK_ALIASES[key]
  raise KeyError(f"unknown task {task!r}; known: {sorted(set(ROBOSUITE_TASKS) | set(TASK_ALIASES))}")


@dataclasses.dataclass(frozen=True)
class EnvSpec:
  """Everything needed to rebuild an env in another process (picklable)."""
  task: str                       # canonical name, e.g. 'Lift'
  use_images: bool = False
  image_size: int = 84
  render_size: int = 256           # frames for videos (`render()`)
  offscreen: bool = True           # keep an offscreen context for videos even in low-dim mode
  control_freq: int = 20
  robot: str = "Panda"
  extra_kwargs: Mapping[str, object] = dataclasses.field(default_factory=dict)

  @property
  def obs_keys(self) -> tuple[str, ...]:
    return LOW_DIM_KEYS + (IMAGE_KEYS if self.use_images else ())


class EnvAdapter(abc.ABC):
  """The env interface the evaluator, experts and demo generation use (see module docstring)."""
  spec: EnvSpec

  @property
  def obs_keys(self) -> tuple[str, ...]:
    return self.spec.obs_keys

  @abc.abstractmethod
  def reset(self, seed: int | None = None) -> dict[str, np.ndarray]: ...

  @abc.abstractmethod
  def reset_to_state(self, state: np.ndarray, seed: int | None = None) -> dict[str, np.ndarray]:
    """`reset(seed)`, then set the flat simulator state `state` (robomimic `states[t]`)."""

  @abc.abstractmethod
  def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], float, bool, dict]: ...

  @abc.abstractmethod
  def is_success(self) -> bool: ...

  @abc.abstractmethod
  def render(self, camera: str = "agentview", size: int | None = None) -> np.ndarray:
    """Upright uint8 (size, size, 3) frame for videos."""

  @abc.abstractmethod
  def get_state(self) -> np.ndarray:
    """Flat simulator state (robomimic `states`)."""

  @abc.abstractmethod
  def env_args(self) -> dict:
    """robomimic-style env metadata: {'env_name', 'env_version', 'type', 'env_kwargs'}."""

  def privileged(self) -> dict[str, np.ndarray]:
    """Object / scene ground truth for scripted experts (task-specific keys)."""
    raise NotImplementedError

  def close(self) -> None:
    pass


# ----------------------------------------------------------------------------- factory
def make_spec(task: str, *, use_images: bool = False, image_size: int = 84,
              render_size: int = 256, offscreen: bool = True, **extra) -> EnvSpec:
  return EnvSpec(task=canonical_task(task), use_images=use_images, image_size=image_size,
                 render_size=render_size, offscreen=offscreen, extra_kwargs=dict(extra))


def make_env_from_spec(spec: EnvSpec, seed: int | None = None) -> EnvAdapter:
  """Build the env described by `spec`; `seed` seeds construction (episodes: `reset(seed)`)."""
  return RobosuiteEnv(spec, seed)


def make_env(task: str, *, use_images: bool = False, image_size: int = 84, seed: int | None = None,
             render_size: int = 256, offscreen: bool = True, **extra) -> EnvAdapter:
  """Build an adapter for `task` (alias or env name). `extra` goes to the robosuite constructor."""
  spec = make_spec(task, use_images=use_images, image_size=image_size, render_size=render_size,
                   offscreen=offscreen, **extra)
  return make_env_from_spec(spec, seed)


# ----------------------------------------------------------------------------- robosuite
# Tasks whose robosuite (1.5.2) model draws from `env.rng` when it is built; they are rebuilt at
# every seeded reset (see the module docstring; `test_eval_repro.py` checks the others' XML is
# seed-independent).
_REBUILD_ON_RESET = frozenset({"Lift"})


def _global_rng_state(seed: int):
  """A `np.random` global state derived from an episode seed (independent of `env.rng`'s)."""
  words = np.random.SeedSequence([int(seed), 0x6E70]).generate_state(8)
  return np.random.RandomState(words).get_state()


def _render_assets_equal(a, b) -> bool:
  """True when two MjModels upload the same textures / meshes / hfields / skins to an MjrContext."""
  fields = ("tex_data", "tex_adr", "tex_width", "tex_height", "tex_nchannel", "tex_type",
            "mesh_vert", "mesh_normal", "mesh_face", "mesh_facenormal", "mesh_texcoord",
            "mesh_vertadr", "mesh_vertnum", "mesh_faceadr", "mesh_facenum",
            "hfield_data", "hfield_size", "hfield_nrow", "hfield_ncol", "skin_vert", "skin_face",
            "flex_vert")
  try:
    for f in fields:
      if hasattr(a, f) != hasattr(b, f):
        return False
      if hasattr(a, f) and not np.array_equal(getattr(a, f), getattr(b, f)):
        return False
    va, vb = a.vis, b.vis
    return (va.global_.offwidth == vb.global_.offwidth
            and va.global_.offheight == vb.global_.offheight
            and va.quality.offsamples == vb.quality.offsamples
            and va.quality.shadowsize == vb.quality.shadowsize)
  except Exception:  # noqa: BLE001  (a MuJoCo version without some field: rebuild the context)
    return False


def _import_robosuite():
  from decoupled_jax.runtime import configure_environment
  configure_environment()     # headless rendering (EGL) unless the caller chose otherwise
  import robosuite  # noqa: WPS433
  from robosuite.utils.log_utils import ROBOSUITE_DEFAULT_LOGGER
  ROBOSUITE_DEFAULT_LOGGER.setLevel(logging.ERROR)
  for h in ROBOSUITE_DEFAULT_LOGGER.handlers:
    h.setLevel(logging.ERROR)
  return robosuite


def absolute_osc_controller_config(robot_part: str = "right") -> dict:
  """BASIC composite controller whose arm is OSC_POSE taking absolute world-frame targets.

  Only the arm's part config is kept (the Panda has no torso/head/base/legs/left arm), which
  also silences robosuite's "component not present" warnings.
  """
  robosuite = _import_robosuite()
  cfg = robosuite.load_composite_controller_config(controller="BASIC")
  parts = cfg["body_parts"]
  arm = parts["arms"][robot_part] if "arms" in parts else parts[robot_part]
  arm = copy.deepcopy(arm)
  assert arm["type"] == "OSC_POSE", arm["type"]
  arm["input_type"] = "absolute"     # robosuite/controllers/parts/arm/osc.py::set_goal
  arm["input_ref_frame"] = "world"   # targets are world-frame, like robot0_eef_pos
  cfg["body_parts"] = {robot_part: arm}
  return cfg


class RobosuiteEnv(EnvAdapter):
  """robosuite 1.5 task with Panda + absolute OSC_POSE at 20 Hz (see module docstring)."""

  def __init__(self, spec: EnvSpec, seed: int | None = None):
    robosuite = _import_robosuite()
    self.spec = spec
    env_name, task_kwargs = ROBOSUITE_TASKS[spec.task]
    cams = list(CAMERA_NAMES)
    self._env_kwargs = dict(
        robots=[spec.robot],
        controller_configs=absolute_osc_controller_config(),
        has_renderer=False,
        has_offscreen_renderer=bool(spec.use_images or spec.offscreen),
        ignore_done=True,
        use_object_obs=True,
        use_camera_obs=bool(spec.use_images),
        camera_names=cams,
        camera_heights=spec.image_size,
        camera_widths=spec.image_size,
        camera_depths=False,
        control_freq=spec.control_freq,
        reward_shaping=False,
        hard_reset=False,
        **task_kwargs,
        **dict(spec.extra_kwargs),
    )
    self._env_name = env_name
    self._robosuite_version = robosuite.__version__
    self._np_global = _global_rng_state(0 if seed is None else seed)
    with self._own_global_rng():
      self.env = robosuite.make(env_name, seed=seed, **self._env_kwargs)
    self._rebuild = spec.task in _REBUILD_ON_RESET
    self._robosuite_initialize_sim = self.env._initialize_sim
    self.env._initialize_sim = self._initialize_sim_keep_renderer
    self._shadows_off()
    self._raw: dict[str, np.ndarray] = {}
    self._success = False

  # -- helpers
  def _shadows_off(self):
    m = self.env.sim.model
    m.light_castshadow[:] = 0

  def _convert(self, raw: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = {
        "robot0_eef_pos": np.asarray(raw["robot0_eef_pos"], np.float64),
        "robot0_eef_quat": np.asarray(raw["robot0_eef_quat"], np.float64),
        "robot0_gripper_qpos": np.asarray(raw["robot0_gripper_qpos"], np.float64),
        "robot0_joint_pos": np.asarray(raw["robot0_joint_pos"], np.float64),
        "object": np.asarray(raw["object-state"], np.float64),
    }
    if self.spec.use_images:
      for k in IMAGE_KEYS:
        out[k] = np.ascontiguousarray(raw[k], dtype=np.uint8)
    return out

  @contextlib.contextmanager
  def _own_global_rng(self):
    """Run robosuite with this env's own `np.random` global state (seeded per episode)."""
    outer = np.random.get_state()
    np.random.set_state(self._np_global)
    try:
      yield
    finally:
      self._np_global = np.random.get_state()
      np.random.set_state(outer)

  def _initialize_sim_keep_renderer(self, xml_string=None):
    """robosuite's `_initialize_sim` (new MjSim), moving the offscreen renderer to the new sim.

    robosuite would create a fresh GL context + MjrContext for every rebuilt sim (~0.5-1 s with
    software EGL, and the old ones linger); the GL context is reused, and the MjrContext too when
    the new model's textures/meshes are the same (Lift: only the cube's box size changes).
    """
    old = getattr(self.env, "sim", None)
    ctx = getattr(old, "_render_context_offscreen", None) if old is not None else None
    self._robosuite_initialize_sim(xml_string)
    sim = self.env.sim
    sim.model.light_castshadow[:] = 0
    if ctx is None or sim is old:
      return
    import mujoco
    old._render_context_offscreen = None
    ctx.gl_ctx.make_current()
    if not _render_assets_equal(ctx.model._model, sim.model._model):
      ctx.con.free()
      ctx.model = sim.model
      ctx._set_mujoco_context_and_buffers()
    ctx.sim, ctx.model, ctx.data = sim, sim.model, sim.data
    ctx.scn = mujoco.MjvScene(sim.model._model, maxgeom=10000)
    sim.add_render_context(ctx)

  def _reseed(self, seed: int):
    # The placement samplers and robot init-noise share `env.rng` by reference; reseed in place.
    self.env.rng.bit_generator.state = np.random.default_rng(seed).bit_generator.state
    self._np_global = _global_rng_state(seed)

  # -- EnvAdapter
  def reset(self, seed: int | None = None) -> dict[str, np.ndarray]:
    """New episode; with a seed, the episode is a pure function of it (module docstring)."""
    with self._own_global_rng():
      rebuild = seed is not None and self._rebuild
      if seed is not None:
        self._reseed(int(seed))
      self.env.hard_reset = rebuild  # rebuild the model from the re-seeded env.rng
      try:
        self._raw = self.env.reset()
      finally:
        self.env.hard_reset = False
      self._shadows_off()
      # robosuite fills the object-to-eef observables lazily; one refresh makes reset obs match
      # the step obs layout exactly.
      self._raw = self.env._get_observations(force_update=True)
    self._success = False
    return self._convert(self._raw)

  def reset_to_state(self, state: np.ndarray, seed: int | None = None) -> dict[str, np.ndarray]:
    """`reset(seed)`, then the flat MuJoCo state `state` (as robomimic's `reset_to`).

    The seed still matters: it fixes the model (Lift's cube size is not part of `state`), so pass
    the seed the demo was generated with when it is known.
    """
    state = np.asarray(state, np.float64).reshape(-1)
    n = 1 + self.env.sim.model.nq + self.env.sim.model.nv
    if state.shape != (n,) or not np.all(np.isfinite(state)):
      raise ValueError(f"{self.spec.task}: expected a finite flat state of size {n} "
                       f"(time, qpos, qvel), got shape {state.shape}")
    from decoupled_jax.sim.replay import adopt_initial_joints, refresh_controllers
    self.reset(seed)
    sim = self.env.sim
    with self._own_global_rng():
      sim.set_state_from_flattened(state)
      sim.forward()
      # robosuite's controllers cache the reset pose until their first step and pull toward
      # the reset's (noisy) initial joints: make them read the demo's state instead.
      refresh_controllers(self.env)
      adopt_initial_joints(self.env)
      self._raw = self.env._get_observations(force_update=True)
    self._success = bool(self.env._check_success())
    return self._convert(self._raw)

  def step(self, action):
    action = np.asarray(action, dtype=np.float64).reshape(-1)
    if action.shape != (7,) or not np.all(np.isfinite(action)):
      raise ValueError(f"{self.spec.task}: expected a finite 7-D action, got {action!r}")
    with self._own_global_rng():
      self._raw, reward, done, info = self.env.step(action)
    self._success = bool(self.env._check_success())
    info = dict(info)
    info["success"] = self._success
    return self._convert(self._raw), float(reward), bool(done), info

  def is_success(self) -> bool:
    return bool(self.env._check_success())

  def render(self, camera: str = "agentview", size: int | None = None) -> np.ndarray:
    size = int(size or self.spec.render_size)
    img = self.env.sim.render(width=size, height=size, camera_name=camera)
    return np.ascontiguousarray(img[::-1])

  def get_state(self) -> np.ndarray:
    return np.asarray(self.env.sim.get_state().flatten(), np.float64)

  def env_args(self) -> dict:
    kw = copy.deepcopy(self._env_kwargs)
    kw.pop("hard_reset", None)
    kw["robots"] = list(kw["robots"])
    return {"env_name": self._env_name, "env_version": self._robosuite_version, "type": 1,
            "env_kwargs": kw}

  def privileged(self) -> dict[str, np.ndarray]:
    """Raw robosuite observables (object poses etc.) plus a few task constants."""
    d = {k: np.asarray(v) for k, v in self._raw.items() if not k.endswith("_image")}
    env = self.env
    if self.spec.task == "NutAssemblySquare":
      d["peg_pos"] = np.array(env.sim.data.body_xpos[env.peg1_body_id])
      d["table_z"] = np.array(env.table_offset[2])
      sid = env.sim.model.site_name2id("SquareNut_handle_site")
      d["handle_pos"] = np.array(env.sim.data.site_xpos[sid])
    elif self.spec.task == "PickPlaceCan":
      d["target_pos"] = np.array(env.target_bin_placements[env.object_to_id["can"]])
      d["bin1_pos"] = np.array(env.bin1_pos)
    else:
      d["table_z"] = np.array(env.table_offset[2])
    return d

  def close(self) -> None:
    try:
      self.env.close()
    except Exception:  # noqa: BLE001  (renderer teardown can fail at interpreter exit)
      pass

