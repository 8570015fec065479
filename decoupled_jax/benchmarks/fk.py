"""Stage-1 benchmark `fk` (docs/method.md §1): observation-free forward-kinematics data of a robot.

The robot (`config.robot`, kinematics/robot.py): the built-in Panda by default (robosuite's
world frame, today's numbers), or any MJCF given by path with its end-effector site(s).

Data sources (`config.data.source`):
  'generated'  smooth random joint trajectories + forward kinematics, sampled *inside*
               the jitted train step (no host round-trip, unlimited data);
  'demos'      the paper's source: (joint, pose) windows of a robomimic/MimicGen HDF5
               (the Panda only).
Targets (`config.robot.action_space`): 'ee_pose' = [pos(3), rot6d(6), gripper] per site (the
Panda's 10-D action), 'joint_pos' = [joints, grippers]. `config.data.fk.target='delta'` (pose
robots, generated data): each step's motion to the next frame as a delta controller's action
(kinematics/trajectories.py; LIBERO's action form), normalised by the fixed [-1, 1] action box
(the controller's input range, as LIBERO's stage 2 normalises its actions) and scored in mm and
degrees per step.
Signals (`config.data.signal`, §1.3): 'jp' (joints + gripper, 8-D for the Panda), 'eepose'
(the pose, 10-D), 'none' (zeros: an unconditional trajectory model), 'jv' (ours, generated
data: joints + the joint step to the next frame + gripper, 15-D; the steps normalised by the
generator's fastest step per frame).

Normalisation (limits, §1.1, §6): the target's position dims use the fixed workspace box
shared with stage 2 (`config.data.position_box`), so a frozen backbone sees the same action
scale in both stages, and the FK generator keeps its via-points in that box (for a robot with
`robot.workspace='auto'`, the default for MJCF robots: each site's reachable box, measured on a
fixed sample of windows, no via-point constraint). rot6d stays raw, and so does a gripper
command with robosuite's range (-1, 1) (another range is mapped to [-1, 1]). Joints use the
robot's joint limits; eepose conditions use the pose scheme.
`config.data.normalization='paper'` selects the reference's scheme instead: condition and all
target dims by the training data's min/max (for generated data, over a fixed sample of 16 384
windows), to measure whether the difference matters (docs/results/README.md, table
`normalization`).

Evaluation: sampled end-effector trajectories for held-out generated windows vs the true FK,
as mean position error (mm) and rotation error (deg), next to the trivial baseline that
predicts the data's mean pose (joint_pos: the FK of the sampled joint trajectories, and the
mean joint error).
"""
from __future__ import annotations

import os

import jax
import numpy as np

from decoupled_jax.benchmarks.base import (COND_KEY, Stage1Data, _project_mean,
                                           describe_stage1, mean_pose_baseline, pose_errors)
from decoupled_jax.data.normalizer import FieldStats, LimitsNormalizer
from decoupled_jax.kinematics import robot as robot_lib
from decoupled_jax.kinematics import trajectories
from decoupled_jax.training import sharding
from decoupled_jax.util import seeded_batches

# The normalisation box of delta targets' positions: the delta controller's input range.
DELTA_BOX = ((-1.0, -1.0, -1.0), (1.0, 1.0, 1.0))


def stage1_normalizer(signal: str, joint_lower, joint_upper, box, *, scheme: str = "ours",
                      sample=None, robot=None, joint_step=None) -> LimitsNormalizer:
  """Stage 1's condition/target normaliser. `scheme='ours'`: see the module docstring;
  `scheme='paper'`: min/max of `sample = (cond, target)` (arrays (..., Dc), (..., Da)) on
  every dim, the condition unnormalised for signal 'none' (zeros), as the reference does.
  `robot` (a `kinematics.robot.RobotInfo`; None = the Panda's 10-D layout): the vectors'
  layout; `box` is ((3,), (3,)) or one such box per end-effector site (S, 2, 3);
  `joint_step` (signal 'jv'): the largest joint step per frame, per joint (the joint-step
  dims are normalised by +-joint_step)."""
  if scheme == "paper":
    cond, target = (np.asarray(a, np.float32) for a in sample)
    data = {"actions": target.reshape(-1, target.shape[-1])}
    if signal != "none":
      data[COND_KEY] = cond.reshape(-1, cond.shape[-1])
    return LimitsNormalizer.fit(data, {k: None for k in data})
  if scheme != "ours":
    raise ValueError(f"config.data.normalization={scheme!r}: 'ours' or 'paper'")
  if robot is None:
    robot = robot_lib.load_robot(None).info
  boxes = np.asarray(box, np.float32)
  boxes = np.broadcast_to(boxes, (robot.num_sites, 2, 3)) if boxes.ndim == 2 else boxes
  # the gripper command's range as (min, max): a range may name the open value first and the
  # larger one second or not (gym-aloha: open 1, closed 0), the scale is the same
  g_lo, g_hi = (np.float32(v) for v in sorted(robot.gripper_range))

  def pose_stats():
    dims, lo, hi = [], [], []
    for s, d in enumerate(robot.pose_position_dims()):
      dims += d
      lo += list(boxes[s, 0])
      hi += list(boxes[s, 1])
    if not robot.default_gripper_range:
      for d in robot.pose_gripper_dims():
        dims.append(d)
        lo.append(g_lo)
        hi.append(g_hi)
    return FieldStats.create(np.asarray(lo, np.float32), np.asarray(hi, np.float32), dims=dims)

  def joint_stats():
    g = robot.num_grippers
    jlo = np.concatenate([np.asarray(joint_lower, np.float32), [g_lo] * g]).astype(np.float32)
    jhi = np.concatenate([np.asarray(joint_upper, np.float32), [g_hi] * g]).astype(np.float32)
    return FieldStats.create(jlo, jhi)

  stats = {"actions": pose_stats() if robot.action_space == "ee_pose" else joint_stats()}
  if signal == "jp":
    stats[COND_KEY] = joint_stats()
  elif signal == "jv":
    j, nj = joint_stats(), robot.num_joints
    step = np.broadcast_to(np.asarray(joint_step, np.float32), (nj,))
    stats[COND_KEY] = FieldStats.create(
        np.concatenate([j.min[:nj], -step, j.min[nj:]]).astype(np.float32),
        np.concatenate([j.max[:nj], step, j.max[nj:]]).astype(np.float32))
  elif signal == "eepose":
    stats[COND_KEY] = pose_stats()
  return LimitsNormalizer.from_stats(stats)


def fk_window_config(config, workspace_box=None) -> trajectories.FKWindowConfig:
  """The generator's config: `config.data.fk` + horizon, signal and the via-point box
  (default `config.data.position_box`; () = no constraint)."""
  box = (config.data.position_box if workspace_box is None else workspace_box)
  box = tuple(tuple(float(v) for v in b) for b in box)
  return trajectories.FKWindowConfig.from_any(dict(
      config.data.fk, horizon=int(config.data.horizon), signal=config.data.signal,
      workspace_box=box))


def _joint_fk(sampler):
  """Host function (joint vectors (B, H, nj + G)) -> pose vectors (B, H, pose_dim): the FK of
  predicted joints, clipped to the joint limits (joint_pos evaluation)."""
  cfg, info = sampler.config, sampler.info
  nj, g = info.num_joints, info.num_grippers

  @jax.jit
  def fk(params, q, grip):
    pos, mat = trajectories.fk_sites(params, q, cfg, info)
    return trajectories.pose_vector(pos, mat, [grip[..., i] for i in range(g)], info)

  lo, hi = info.joint_lower.astype(np.float32), info.joint_upper.astype(np.float32)
  return lambda v: np.asarray(fk(sampler.params, np.clip(v[..., :nj], lo, hi),
                                 np.asarray(v[..., nj:], np.float32)))


def robot_of(config) -> robot_lib.Robot:
  """The stage's robot (`config.robot`; configs without the section: the built-in Panda)."""
  return robot_lib.load_robot(config.get("robot"))


class FKData:
  """Stage-1 benchmark 'fk' (`load` below)."""
  name = "fk"

  def load(self, config) -> Stage1Data:
    return load(config)

  def describe(self, config, summary: dict | None) -> str:
    """What a stage 1 of `config` saw, and its held-out FK error (`summary`: its run's)."""
    robot = config.get("robot", {}).get("mjcf", "panda")
    robot = "Panda" if robot == "panda" else os.path.basename(str(robot))
    data = config.get("data", {})
    generated = data.get("source", "generated") == "generated"
    fk = data.get("fk", {})
    if generated and fk.get("target", "absolute") == "delta":
      return describe_stage1(
          f"generated {robot} FK as delta actions (per-step motion / "
          f"{1000 * fk['delta_pos_scale']:g} mm, {1000 * fk['delta_rot_scale']:g} mrad, "
          "speed {:g}-{:g})".format(*fk["speed_range"]), config, summary,
          "held-out delta error {err:.1f} mm/step (mean-action baseline {baseline:.1f})")
    return describe_stage1(f"generated {robot} FK" if generated else "demonstration pairs",
                           config, summary,
                           "held-out FK {err:.1f} mm (mean-pose baseline {baseline:.1f} mm)")


def load(config) -> Stage1Data:
  """The stage-1 data of `config.robot`: generated on device (`data.source='generated'`) or the
  (joint, pose) windows of demonstrations (`'demos'`), with the held-out windows (fixed seeds
  never used for training) that the evaluation scores."""
  horizon, batch, signal = int(config.data.horizon), int(config.train.batch_size), config.data.signal
  robot = robot_of(config)
  info = robot.info
  auto_box = info.workspace == "auto"
  fk_cfg = fk_window_config(config, workspace_box=() if auto_box else None)
  sampler = trajectories.make_fk_window_sampler(fk_cfg, robot)
  # The position box(es) of the normalisation: the configured one, or each site's reachable box
  # measured on the fixed reference sample that the evaluation's mean-pose baseline uses.
  reference = None

  def reference_sample():   # (target, poses) of 4096 windows never used for training
    nonlocal reference
    if reference is None:
      out = sampler(jax.random.PRNGKey(20_000 + config.seed), 4096, return_poses=True)
      reference = tuple(np.asarray(a) for a in out[1:])
    return reference

  delta = fk_cfg.target == "delta"   # (generated data of a pose robot: config_lib checks)
  if delta:   # the delta action's own range, whatever the via-point box
    boxes = np.broadcast_to(np.asarray(DELTA_BOX, np.float32), (info.num_sites, 2, 3))
  elif auto_box:
    boxes = trajectories.reachable_box(reference_sample()[1], info)
  else:
    boxes = np.broadcast_to(np.asarray(config.data.position_box, np.float32),
                            (info.num_sites, 2, 3))
  scheme = config.data.normalization
  data = sample = None
  if config.data.source == "demos":
    from decoupled_jax.kinematics.demo_pairs import load_demo_pairs
    data = load_demo_pairs(config.data.dataset, signal=signal, format=config.data.format,
                           key_map=config.data.key_map.to_dict())
    sample = (data.fields["cond"], data.fields["target"])
  elif scheme == "paper":   # the generated data's limits, from a fixed sample of windows
    sample = sampler(jax.random.PRNGKey(30_000 + config.seed), 16_384)
  # the generator's fastest joint step per frame (speed 1 of its velocity limits)
  joint_step = info.velocity_limits * fk_cfg.vel_margin / fk_cfg.fps
  norm = stage1_normalizer(signal, info.joint_lower, info.joint_upper, boxes, scheme=scheme,
                           sample=sample, robot=info, joint_step=joint_step)

  # Held-out generated windows (fixed seeds never used for training batches).
  joint_space = info.action_space == "joint_pos"
  eval_cond, eval_target, eval_q, _, eval_poses = (np.asarray(a) for a in sampler(
      jax.random.PRNGKey(10_000 + config.seed), int(config.eval.num_windows),
      return_joints=True, return_poses=True))
  joint_fk = _joint_fk(sampler) if joint_space else None

  # delta targets are scored as motion per step (mm, degrees), not in action units
  physical = ((lambda x: trajectories.delta_to_physical(x, fk_cfg, info)) if delta
              else (lambda x: x))

  def errors(pred):
    """Pose errors of unnormalised predictions (+ the joint error for joint_pos targets)."""
    if not joint_space:
      return pose_errors(physical(pred), physical(eval_target), info)
    out = pose_errors(joint_fk(pred), eval_poses, info)
    nj = info.num_joints
    out["joint_abs_err"] = float(np.abs(np.clip(pred[..., :nj], info.joint_lower,
                                                info.joint_upper) - eval_q).mean())
    return out

  baseline_cache = {}

  def baseline():
    if not baseline_cache:
      ref_target = reference_sample()[0]
      if joint_space:
        mean = ref_target.mean(axis=0)
        mean = _project_mean(mean, [], info.joint_gripper_dims(), *info.gripper_range)
        baseline_cache.update(errors(np.broadcast_to(mean, eval_target.shape).copy()))
      else:
        baseline_cache.update(mean_pose_baseline(physical(ref_target), physical(eval_target),
                                                 info))
    return dict(baseline_cache)

  meta = {"signal": signal, "source": config.data.source, "fk_target": fk_cfg.target,
          # What stage 2 checks a stage-1 expert against (kinematics/robot.py describe()).
          "robot": dict(info.describe(), position_box=np.asarray(boxes).tolist())}
  out = Stage1Data(norm=norm, cond_dim=sampler.cond_dim, action_dim=sampler.target_dim,
                   meta=meta, eval_cond=eval_cond, eval_target=eval_target, errors=errors,
                   baseline=baseline)
  if config.data.source == "generated":
    fk_params = sampler.params

    def device_batch_fn(rng):
      cond, target = sampler.sample_pure(rng, fk_params, batch)
      return out.normalise(cond, target)

    out.device_batch_fn = device_batch_fn
  else:
    from decoupled_jax.kinematics.demo_pairs import gather_windows
    out.cond_dim = data.fields["cond"].shape[-1]

    def window(t):
      return jax.tree.map(np.asarray, out.normalise(*gather_windows(data, horizon, t)))

    out.host_batches = seeded_batches(data.num_frames, batch, config.seed, window,
                                      rows=sharding.process_rows(batch))
  return out
