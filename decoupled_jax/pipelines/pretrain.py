"""Stage 1 (docs/method.md §1): the action expert on observation-free forward-kinematics data.

The robot (`config.robot`, kinematics/robot.py): the built-in Panda by default (robosuite's
world frame, today's numbers), or any MJCF given by path with its end-effector site(s).

Data sources (`config.data.source`):
  'generated'  smooth random joint trajectories + forward kinematics, sampled *inside*
               the jitted train step (no host round-trip, unlimited data);
  'demos'      the paper's source: (joint, pose) windows of a robomimic/MimicGen HDF5
               (the Panda only).
Targets (`config.robot.action_space`): 'ee_pose' = [pos(3), rot6d(6), gripper] per site (the
Panda's 10-D action), 'joint_pos' = [joints, grippers].
Signals (`config.data.signal`, §1.3): 'jp' (joints + gripper, 8-D for the Panda), 'eepose'
(the pose, 10-D), 'none' (zeros: an unconditional trajectory model).

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

import logging
import time

import jax
import jax.numpy as jnp
import numpy as np

from decoupled_jax.backbones import expert_interface
from decoupled_jax.data import rotation
from decoupled_jax.data.normalizer import FieldStats, LimitsNormalizer
from decoupled_jax.heads import make_head
from decoupled_jax.kinematics import robot as robot_lib
from decoupled_jax.kinematics import trajectories
from decoupled_jax.pipelines import common
from decoupled_jax.training import sharding
from decoupled_jax.training.policy import make_sample_fn, policy_from_config
from decoupled_jax.training.stage import Stage

COND_KEY = "cond"


def stage1_normalizer(signal: str, joint_lower, joint_upper, box, *, scheme: str = "ours",
                      sample=None, robot=None) -> LimitsNormalizer:
  """Stage 1's condition/target normaliser. `scheme='ours'`: see the module docstring;
  `scheme='paper'`: min/max of `sample = (cond, target)` (arrays (..., Dc), (..., Da)) on
  every dim, the condition unnormalised for signal 'none' (zeros), as the reference does.
  `robot` (a `kinematics.robot.RobotInfo`; None = the Panda's 10-D layout): the vectors'
  layout; `box` is ((3,), (3,)) or one such box per end-effector site (S, 2, 3)."""
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
  g_lo, g_hi = (np.float32(v) for v in robot.gripper_range)

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


def _gripper_agree(pred, true, lo: float = -1.0, hi: float = 1.0):
  mid = 0.5 * (lo + hi)
  return np.sign(pred - mid) == np.sign(true - mid)


def pose_errors(pred, true, robot=None):
  """Mean position error (mm) and rotation error (deg) of unnormalised pose trajectories
  (the Panda's 10-D layout, or `robot`'s pose vector: averaged over its sites)."""
  if robot is None:
    pos_dims, rot_dims, grip_dims, (lo, hi) = [[0, 1, 2]], [list(range(3, 9))], [9], (-1., 1.)
  else:
    pos_dims, rot_dims = robot.pose_position_dims(), robot.pose_rot6d_dims()
    grip_dims, (lo, hi) = robot.pose_gripper_dims(), robot.gripper_range
  pos_mm = np.mean([float((1000.0 * np.linalg.norm(pred[..., d] - true[..., d], axis=-1)).mean())
                    for d in pos_dims])
  rot = []
  for d in rot_dims:
    ang = rotation.rotation_angle_between(rotation.rot6d_to_matrix(pred[..., d]),
                                          rotation.rot6d_to_matrix(true[..., d]))
    rot.append(float(np.degrees(ang).mean()))
  out = {"pos_err_mm": float(pos_mm), "rot_err_deg": float(np.mean(rot))}
  if grip_dims:
    out["gripper_acc"] = float(np.mean(_gripper_agree(pred[..., grip_dims], true[..., grip_dims],
                                                      lo, hi)))
  return out


def _project_mean(mean, rot_dims, grip_dims, lo=-1.0, hi=1.0):
  """A mean pose trajectory made valid: rot6d Gram-Schmidt projected, gripper at lo / hi."""
  mean = np.array(mean)
  for d in rot_dims:
    mean[..., d] = rotation.matrix_to_rot6d(rotation.rot6d_to_matrix(mean[..., d]))
  if grip_dims:
    g = mean[..., grip_dims]
    if (lo, hi) == (-1.0, 1.0):
      mean[..., grip_dims] = np.sign(g) + (g == 0)
    else:
      mean[..., grip_dims] = np.where(g >= 0.5 * (lo + hi), hi, lo)
  return mean


def mean_pose_baseline(train_target, eval_target, robot=None):
  """The trivial predictor: the data's mean pose (per horizon step) for every window."""
  mean = train_target.mean(axis=0)
  if robot is None:
    m = rotation.rot6d_to_matrix(mean[..., 3:9])          # Gram-Schmidt projection to SO(3)
    mean = np.concatenate([mean[..., :3], rotation.matrix_to_rot6d(m), np.sign(mean[..., 9:])
                           + (mean[..., 9:] == 0)], -1)
    return pose_errors(np.broadcast_to(mean, eval_target.shape), eval_target)
  mean = _project_mean(mean, robot.pose_rot6d_dims(), robot.pose_gripper_dims(),
                       *robot.gripper_range)
  return pose_errors(np.broadcast_to(mean, eval_target.shape), eval_target, robot)


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


def make_stage(config) -> Stage:
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

  if auto_box:
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
  norm = stage1_normalizer(signal, info.joint_lower, info.joint_upper, boxes, scheme=scheme,
                           sample=sample, robot=info)
  norm_fields = [f for f in norm.fields if f in (COND_KEY, "actions")]

  def normalise(cond, target):
    d = norm.normalize({COND_KEY: cond, "actions": target}, fields=norm_fields)
    return {"obs": {COND_KEY: d[COND_KEY]}, "actions": d["actions"]}

  cond_dim, action_dim = sampler.cond_dim, sampler.target_dim
  if config.data.source == "generated":
    host_batches = None
    fk_params = sampler.params

    def device_batch_fn(rng):
      cond, target = sampler.sample_pure(rng, fk_params, batch)
      return normalise(cond, target)
  else:
    from decoupled_jax.kinematics.demo_pairs import gather_windows
    cond_dim = data.fields["cond"].shape[-1]
    device_batch_fn = None

    rows = sharding.process_rows(batch)

    def host_batches(start):
      step = start
      while True:   # global batch k is a function of (seed, k); this process's rows
        t = np.random.default_rng((config.seed, step)).integers(0, data.num_frames, size=batch)
        cond, target = gather_windows(data, horizon, t[rows])
        yield jax.tree.map(np.asarray, normalise(cond, target))
        step += 1

  policy = policy_from_config(config, lowdim_keys=(COND_KEY,))
  head = make_head(config.head)
  expert = expert_interface(policy.backbone)
  meta = {"config": common.config_to_dict(config), "normalizer": norm.to_dict(),
          "backbone": config.backbone.name, "head": config.head.type, "signal": signal,
          "source": config.data.source, "obs_keys": [COND_KEY], "cond_dim": cond_dim,
          "horizon": horizon, "action_dim": action_dim,
          # What stage 2 checks a stage-1 expert against (kinematics/robot.py describe()).
          "robot": dict(info.describe(), position_box=np.asarray(boxes).tolist())}

  # Held-out generated windows (fixed seeds never used for training batches).
  joint_space = info.action_space == "joint_pos"
  eval_cond, eval_target, eval_q, _, eval_poses = (np.asarray(a) for a in sampler(
      jax.random.PRNGKey(10_000 + config.seed), int(config.eval.num_windows),
      return_joints=True, return_poses=True))
  baseline = None
  sample_fn = jax.jit(make_sample_fn(policy, head, (horizon, action_dim)))
  eval_obs = normalise(eval_cond, eval_target)["obs"]
  joint_fk = _joint_fk(sampler) if joint_space else None

  def errors(pred):
    """Pose errors of unnormalised predictions (+ the joint error for joint_pos targets)."""
    if not joint_space:
      return pose_errors(pred, eval_target, info)
    out = pose_errors(joint_fk(pred), eval_poses, info)
    nj = info.num_joints
    out["joint_abs_err"] = float(np.abs(np.clip(pred[..., :nj], info.joint_lower,
                                                info.joint_upper) - eval_q).mean())
    return out

  def evaluate(params, step):
    nonlocal baseline
    if baseline is None:
      ref_target = reference_sample()[0]
      if joint_space:
        mean = ref_target.mean(axis=0)
        g = info.joint_gripper_dims()
        mean = _project_mean(mean, [], g, *info.gripper_range)
        baseline = errors(np.broadcast_to(mean, eval_target.shape).copy())
      else:
        baseline = mean_pose_baseline(ref_target, eval_target, info)
    t0 = time.time()
    pred = np.asarray(sample_fn(params, eval_obs, jax.random.PRNGKey(step)))
    out = errors(np.asarray(norm.unnormalize_field("actions", pred)))
    out.update({f"baseline_{k}": v for k, v in baseline.items()},
               sample_time_s=time.time() - t0)
    logging.info("stage-1 eval @%d: pos %.1f mm (baseline %.1f), rot %.2f deg (baseline %.2f)",
                 step, out["pos_err_mm"], baseline["pos_err_mm"], out["rot_err_deg"],
                 baseline["rot_err_deg"])
    return out

  def final_evaluate(params, workdir, step):
    return evaluate(params, step) if len(eval_cond) else {}

  return Stage(name="pretrain", policy=policy, head=head,
               example_obs={COND_KEY: jnp.zeros((1, horizon, cond_dim), jnp.float32)},
               action_shape=(horizon, action_dim), meta=meta,
               no_weight_decay=expert.no_weight_decay_patterns,
               host_batches=host_batches, device_batch_fn=device_batch_fn,
               evaluate=evaluate, final_evaluate=final_evaluate)
