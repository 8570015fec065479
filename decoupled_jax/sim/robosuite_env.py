"""Simulator adapters: one small interface every evaluation / demo-generation backend implements.

`EnvAdapter` is the contract the evaluator (`sim/evaluator.py`), the scripted experts
(`sim/experts.py`) and demo generation (`experiments/generate_demos.py`) rely on:

  * observations are dicts keyed by **robomimic names** (`robot0_eef_pos`, `robot0_eef_quat`
    (xyzw), `robot0_gripper_qpos`, `robot0_joint_pos`, `object`, and with images
    `agentview_image`, `robot0_eye_in_hand_image` as uint8 (H, W, 3));
  * actions are 7-D absolute end-effector targets `[pos(3), axis-angle(3), gripper]` in the
    MuJoCo world frame (gripper -1 open, +1 close); see `sim/frames.py` for how their
    orientation relates to `robot0_eef_quat`;
  * `reset(seed)` is deterministic given the seed (the task's own placement randomisation is
    driven by a generator re-seeded in place).

Backends register a factory under a name with `register_backend`; `make_env(task)` resolves
task aliases (`lift`, `stack`, `square`, `can`, or the robosuite env names) to a backend.
Only the robosuite backend exists; MimicGen / LIBERO adapters plug in by subclassing
`EnvAdapter` and calling `register_backend(name, factory, tasks=...)`.

Images follow robosuite's default "opengl" convention (vertically flipped, as in the
robomimic/MimicGen HDF5 files), so generated and downloaded data look alike. `render()`
returns upright frames for videos.
"""
from __future__ import annotations

import abc
import copy
import dataclasses
import logging
import os
from typing import Callable, Mapping, Sequence

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
  if task in ROBOSUITE_TASKS or task in _BACKENDS_BY_TASK:
    return task
  key = task.lower()
  if key in TASK_ALIASES:
    return TASK_ALIASES[key]
  raise KeyError(f"unknown task {task!r}; known: {sorted(set(ROBOSUITE_TASKS) | set(TASK_ALIASES))}")


@dataclasses.dataclass(frozen=True)
class EnvSpec:
  """Everything needed to rebuild an env in another process (picklable)."""
  task: str                       # canonical name, e.g. 'Lift'
  backend: str = "robosuite"
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
  """Backend-independent env interface (see module docstring)."""
  spec: EnvSpec

  @property
  def obs_keys(self) -> tuple[str, ...]:
    return self.spec.obs_keys

  @abc.abstractmethod
  def reset(self, seed: int | None = None) -> dict[str, np.ndarray]: ...

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
    """Object / scene ground truth for scripted experts (backend-specific keys)."""
    raise NotImplementedError

  def close(self) -> None:
    pass


# ----------------------------------------------------------------------------- registry
_BACKENDS: dict[str, Callable[[EnvSpec, int | None], EnvAdapter]] = {}
_BACKENDS_BY_TASK: dict[str, str] = {}


def register_backend(name: str, factory: Callable[[EnvSpec, int | None], EnvAdapter],
                     tasks: Sequence[str] = ()) -> None:
  """Register `factory(spec, seed) -> EnvAdapter` under `name`, serving `tasks`."""
  _BACKENDS[name] = factory
  for t in tasks:
    _BACKENDS_BY_TASK[t] = name


def make_spec(task: str, *, use_images: bool = False, image_size: int = 84,
              render_size: int = 256, offscreen: bool = True, **extra) -> EnvSpec:
  task = canonical_task(task)
  backend = _BACKENDS_BY_TASK.get(task, "robosuite")
  return EnvSpec(task=task, backend=backend, use_images=use_images, image_size=image_size,
                 render_size=render_size, offscreen=offscreen, extra_kwargs=dict(extra))


def make_env_from_spec(spec: EnvSpec, seed: int | None = None) -> EnvAdapter:
  if spec.backend not in _BACKENDS:
    raise KeyError(f"no env backend {spec.backend!r}; registered: {sorted(_BACKENDS)}")
  return _BACKENDS[spec.backend](spec, seed)


def make_env(task: str, *, use_images: bool = False, image_size: int = 84, seed: int | None = None,
             render_size: int = 256, offscreen: bool = True, **extra) -> EnvAdapter:
  """Build an adapter for `task` (alias or env name). `extra` goes to the backend constructor."""
  spec = make_spec(task, use_images=use_images, image_size=image_size, render_size=render_size,
                   offscreen=offscreen, **extra)
  return make_env_from_spec(spec, seed)


# ----------------------------------------------------------------------------- robosuite
def _import_robosuite():
  os.environ.setdefault("MUJOCO_GL", "egl")
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
    self.env = robosuite.make(env_name, seed=seed, **self._env_kwargs)
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

  def _reseed(self, seed: int):
    # The placement samplers and robot init-noise share `env.rng` by reference; reseed in place.
    self.env.rng.bit_generator.state = np.random.default_rng(seed).bit_generator.state

  # -- EnvAdapter
  def reset(self, seed: int | None = None) -> dict[str, np.ndarray]:
    if seed is not None:
      self._reseed(int(seed))
    self._raw = self.env.reset()
    self._shadows_off()
    # robosuite fills the object-to-eef observables lazily; one refresh makes reset obs match
    # the step obs layout exactly.
    self._raw = self.env._get_observations(force_update=True)
    self._success = False
    return self._convert(self._raw)

  def step(self, action):
    action = np.asarray(action, dtype=np.float64).reshape(-1)
    if action.shape != (7,) or not np.all(np.isfinite(action)):
      raise ValueError(f"{self.spec.task}: expected a finite 7-D action, got {action!r}")
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


register_backend("robosuite", lambda spec, seed: RobosuiteEnv(spec, seed), tasks=tuple(ROBOSUITE_TASKS))
