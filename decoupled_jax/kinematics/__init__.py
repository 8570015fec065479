"""Franka Panda forward kinematics (MJX / plain JAX / C reference) and stage-1 data.

  panda.py         kinematics-only Panda MjModel from robosuite's MJCF; fk_mjx, fk_tree, fk_cpu
  trajectories.py  on-device random smooth joint windows -> (cond, target) FK pairs
  demo_pairs.py    (joint, pose) pairs from recorded demos, any dataset format (the paper's source)

Frame: MuJoCo world frame of robosuite table-top tasks; position = robot0_eef_pos (grip site);
orientation = the grip site's (robot0_eef_quat_site, the absolute-action frame) by default, or
site='hand' for robot0_eef_quat (right_hand body); quaternions xyzw. See panda.py.
Set XLA_FLAGS=--xla_cpu_use_fusion_emitters=false before importing jax when using MJX on CPU.
"""
from decoupled_jax.kinematics.panda import (  # noqa: F401
    BASE_POS, INIT_QPOS, PandaInfo, fk_cpu, fk_mjx, fk_tree, hand_to_site_rotation,
    kinematics_tree, load_panda_kinematics, put_mjx_model)
from decoupled_jax.kinematics.trajectories import (  # noqa: F401
    FKWindowConfig, FKWindowSampler, make_fk_window_sampler, sample_fk_windows)
