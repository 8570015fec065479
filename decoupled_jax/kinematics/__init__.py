"""Forward kinematics (plain JAX / MJX / C reference) of any robot and stage-1 data.

  robot.py         any robot from its MJCF (config.robot): kinematics-only model, sites, joints,
                   limits; fk_tree_sites, fk_mjx_sites, fk_cpu_sites; one-line config errors
  panda.py         the built-in Panda (robot.mjcf='panda') from robosuite's MJCF; fk_mjx, fk_tree,
                   fk_cpu for its 'hand' / 'grip_site' sites
  trajectories.py  on-device random smooth joint windows -> (cond, target) FK pairs, any robot
  demo_pairs.py    (joint, pose) pairs from recorded demos, any dataset format (the paper's source)

Panda frame: MuJoCo world frame of robosuite table-top tasks; position = robot0_eef_pos (grip
site); orientation = the grip site's (robot0_eef_quat_site, the absolute-action frame) by
default, or site='hand' for robot0_eef_quat (right_hand body); quaternions xyzw. See panda.py.
Other robots: the frame of config.robot.base (default the MJCF's world). See robot.py.
Set XLA_FLAGS=--xla_cpu_use_fusion_emitters=false before importing jax when using MJX on CPU.

`SIGNALS` (the stage-1 condition) is defined here, the one home of the package's constants that
the config schema re-exports (`config_lib.SIGNALS`); so importing this package stays light and
the names below are loaded from their modules on first use (jax and mujoco only then).
"""
import importlib

# stage-1 condition (docs/method.md §1.3); 'jv' (joints + each frame's joint step to the next,
# generated data only) is ours: it makes a delta target a function of the condition
# (kinematics/trajectories.py).
SIGNALS = ("jp", "eepose", "none", "jv")

_EXPORTS = {
    "panda": ("BASE_POS", "INIT_QPOS", "PandaInfo", "fk_cpu", "fk_mjx", "fk_tree",
              "hand_to_site_rotation", "kinematics_tree", "load_panda_kinematics",
              "put_mjx_model"),
    "robot": ("Robot", "RobotInfo", "RobotSpec", "fk_cpu_sites", "fk_mjx_sites", "fk_tree_sites",
              "load_robot"),
    "trajectories": ("FKWindowConfig", "FKWindowSampler", "make_fk_window_sampler",
                     "sample_fk_windows"),
}
_HOME = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = ["SIGNALS", *_HOME]


def __getattr__(name):
  module = _HOME.get(name)
  if module is None:
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
  value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
  globals()[name] = value
  return value


def __dir__():
  return sorted(set(globals()) | set(_HOME))
