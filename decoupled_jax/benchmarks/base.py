"""What every benchmark object hands the two stages (docs/architecture.md "Benchmarks").

A stage (`pipelines/pretrain.py`, `pipelines/finetune.py`) is the same for every benchmark;
what differs — where the data comes from, its normaliser and observation keys, which stage-1
experts fit it, and how a trained model is scored — lives in one benchmark object, as openpi's
`DataConfigFactory` does for its data:

  stage 1 (`config.stage='pretrain'`) objects return `Stage1Data`: condition/target batches,
  the normaliser, held-out windows and the error function of the one stage-1 evaluation, and
  `describe` what a trained stage 1 saw in one line (a table record's `stage1`);
  stage 2 (`config.stage='finetune'`) objects return `TaskData` (episodes, normaliser, task,
  action space) and give `check_stage1` (the stage-1 compatibility rule) and `evaluators`.

Adding a benchmark is one module here and one entry in `benchmarks.BENCHMARKS`.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Callable, Optional

import numpy as np

from decoupled_jax import pretrained
from decoupled_jax.data import rotation
from decoupled_jax.data.episodes import EpisodeData
from decoupled_jax.data.normalizer import LimitsNormalizer
from decoupled_jax.errors import CheckpointError
from decoupled_jax.training import checkpoint as ckpt_lib

COND_KEY = "cond"     # stage 1's one observation key: the condition window


# ------------------------------------------------------------------------------- stage 2
@dataclasses.dataclass
class TaskData:
  """A stage-2 benchmark's training data, before normalisation."""
  episodes: EpisodeData       # the policy's observation keys + model actions
  norm: LimitsNormalizer      # fitted on the training episodes (actions: the shared scale)
  task: str                   # what the checkpoint's meta calls the task
  action_space: str = "ee_pose"   # 'ee_pose': [pos, rot6d, gripper]; 'joint_pos': joints+grip
  extra_meta: dict = dataclasses.field(default_factory=dict)
  held_out: Optional[EpisodeData] = None   # episodes kept out of training (offline evaluation)

  @property
  def action_dim(self) -> int:
    return int(self.episodes.fields["actions"].shape[-1])


class Stage2Benchmark:
  """Interface of a stage-2 benchmark (see the module docstring)."""
  name = ""

  def load(self, config) -> TaskData:
    raise NotImplementedError

  def check_stage1(self, config, data: TaskData) -> dict:
    """Vets `config.stage1_checkpoint` for a decoupled run on `data`; returns its meta."""
    raise NotImplementedError

  def evaluators(self, config, data: TaskData, runner: Callable) -> tuple:
    """(evaluate(params, step) or None, final_evaluate(params, workdir, step)); `runner(params)`
    is the run's batch-1 `inference.PolicyRunner`."""
    raise NotImplementedError

  def chain_demos_folder(self, chain) -> str:
    """The folder, under a table's workdir, that chain `chain`'s demonstrations go to: chains
    whose demonstrations are the same files share one (pipelines/paper.py `_table`)."""
    raise NotImplementedError


def stage1_benchmark(meta: dict) -> Optional[str]:
  """The stage-1 benchmark a checkpoint's meta was trained on; None for a stage-2 checkpoint.
  (Checkpoints written before the benchmark objects name it in the stage: 'libero_pretrain'.)"""
  stage = meta.get("stage")
  if stage == "pretrain":
    return meta.get("benchmark") or "fk"
  return "libero" if stage == "libero_pretrain" else None


def check_stage1_checkpoint(config, data: Optional[TaskData], *, benchmarks=("fk",),
                            same_action_scale=("fk",), fk_targets=("absolute",)) -> dict:
  """The stage-1 compatibility rule every stage-2 benchmark applies to
  `config.stage1_checkpoint` (a checkpoints folder or `pretrained:<name>`): a *stage-1*
  expert of one of `benchmarks` (an 'fk' one with one of `fk_targets`: absolute poses or
  delta actions, kinematics/trajectories.py), with `data`'s action space and width, the same
  backbone, head and horizon, and — for stage-1 benchmarks in `same_action_scale` and every
  delta-action FK expert, unless stage 1 chose the reference's data-limit normalisation — the
  same action normalisation; anything else would silently invalidate the comparison. Returns
  its meta."""
  path = config.stage1_checkpoint
  try:
    meta = pretrained.load_meta(path) if pretrained.is_ref(path) else ckpt_lib.load_meta(path)
  except CheckpointError as e:
    raise CheckpointError(f"config.stage1_checkpoint: {e}") from None
  where = f"config.stage1_checkpoint={path}"
  theirs_bench = stage1_benchmark(meta)
  if theirs_bench is None:
    raise CheckpointError(
        f"{where} is a {meta.get('stage')!r} checkpoint (mode {meta.get('mode')!r}, task "
        f"{meta.get('task')!r}), not a stage-1 one: its backbone already saw a task, so a "
        f"'decoupled' run on it would not test the method; give a stage-1 "
        f"(python -m decoupled_jax.pipelines.pretrain / experiments/pretrain.py) run")
  if theirs_bench not in benchmarks:
    raise CheckpointError(f"{where} is a stage-1 expert of benchmark {theirs_bench!r}; "
                          f"this benchmark takes one of {list(benchmarks)}")
  fk_target = meta.get("fk_target", "absolute")
  if theirs_bench == "fk" and fk_target not in fk_targets:
    raise CheckpointError(f"{where} was pretrained on {fk_target} FK targets; this benchmark's "
                          f"actions take {' or '.join(fk_targets)} ones")
  space = data.action_space if data is not None else "ee_pose"
  dim = data.action_dim if data is not None else 10
  robot = meta.get("robot") or {}
  if theirs_bench == "fk" and (robot.get("action_space", "ee_pose") != space
                               or int(meta.get("action_dim", 10)) != dim):
    raise CheckpointError(
        f"{where} was pretrained on {robot.get('mjcf', '?')} with "
        f"{robot.get('action_space', 'ee_pose')} targets ({meta.get('action_dim', 10)}-D); "
        f"this stage 2 trains {dim}-D {space} actions")
  theirs = meta["config"]
  check_same_expert(config, theirs, where)
  if data is None:
    return meta
  act_theirs = meta["normalizer"]["fields"].get("actions")
  act_ours = data.norm.to_dict()["fields"]["actions"]
  # A stage 1 with the reference's data-limit normalisation (data.normalization='paper')
  # differs in scale by design: the comparison that option exists for (docs/method.md §1.1).
  paper_scheme = theirs.get("data", {}).get("normalization", "ours") == "paper"
  same_scale = theirs_bench in same_action_scale or (theirs_bench == "fk"
                                                     and fk_target == "delta")
  if (same_scale and not paper_scheme
      and json.dumps(act_theirs, sort_keys=True) != json.dumps(act_ours, sort_keys=True)):
    raise CheckpointError(f"{where} normalised actions with {act_theirs}, this run with "
                          f"{act_ours}; set config.data.position_box to the stage-1 run's box")
  return meta


def check_same_expert(config, theirs: dict, where: str) -> None:
  """The loaded backbone must be this run's expert: same backbone config, head and horizon."""
  for field, ours, other in (
      ("backbone", config.backbone.to_dict(), theirs["backbone"]),
      ("head.type", config.head.type, theirs["head"]["type"]),
      ("data.horizon", int(config.data.horizon), int(theirs["data"]["horizon"]))):
    if json.dumps(_plain(ours), sort_keys=True) != json.dumps(_plain(other), sort_keys=True):
      raise CheckpointError(f"{where} was trained with {field}={_plain(other)}, this run uses "
                            f"{_plain(ours)}; set config.{field} to match")


def _plain(x):
  return json.loads(json.dumps(x, default=lambda o: list(o) if isinstance(o, tuple) else str(o)))


# ------------------------------------------------------------------------------- stage 1
def describe_stage1(what: str, config, summary: dict | None, held_out: str) -> str:
  """The one line a stage-1 benchmark's `describe` gives (a table record's `stage1`):
  '<what>, signal <s>, <steps> steps x <batch>' of the stage-1 `config` (a ConfigDict or its
  dict) and, when its run's `summary` holds the held-out evaluation, '; ' + `held_out`
  formatted with that error (`err`, mm) and its baseline's (`baseline`)."""
  d, t = config.get("data", {}), config.get("train", {})
  text = (f"{what}, signal {d.get('signal', '?')}, {t.get('num_steps', '?')} steps x "
          f"{t.get('batch_size', '?')}")
  ev = (summary or {}).get("eval") or {}
  if "pos_err_mm" in ev:
    text += "; " + held_out.format(err=ev["pos_err_mm"], baseline=ev["baseline_pos_err_mm"])
  return text


@dataclasses.dataclass
class Stage1Data:
  """A stage-1 benchmark's data: exactly one of `host_batches` / `device_batch_fn` (already
  normalised, as `training.stage.Stage` takes them), the held-out windows of the evaluation
  (unnormalised) and how a prediction is scored against them."""
  norm: LimitsNormalizer
  cond_dim: int
  action_dim: int
  meta: dict                                   # merged into the checkpoints' meta
  eval_cond: np.ndarray                        # (N, H, Dc) held-out conditions (raw)
  eval_target: np.ndarray                      # (N, H, Da) their targets (raw)
  errors: Callable[[np.ndarray], dict]         # raw prediction (N, H, Da) -> error scalars
  baseline: Callable[[], dict]                 # the trivial mean predictor's errors (cached)
  host_batches: Optional[Callable] = None
  device_batch_fn: Optional[Callable] = None
  log_line: str = "stage-1 eval"

  def normalise(self, cond, target) -> dict:
    fields = [f for f in self.norm.fields if f in (COND_KEY, "actions")]
    d = self.norm.normalize({COND_KEY: cond, "actions": target}, fields=fields)
    return {"obs": {COND_KEY: d[COND_KEY]}, "actions": d["actions"]}


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
    else:   # the nearer of the two command values (either may be the larger)
      mean[..., grip_dims] = np.where(np.abs(g - hi) <= np.abs(g - lo), hi, lo)
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

