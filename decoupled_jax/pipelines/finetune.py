"""Stage 2 (decoupled), normal and random-frozen training on demonstrations, with
closed-loop evaluation (docs/method.md §2, §4, §5, §7).

`config.mode` is the one freeze knob:
  'normal'         every parameter trains from its init (§2.2);
  'decoupled'      the backbone is loaded from `config.stage1_checkpoint` by path and shape
                   and frozen outside its conditioning pathway; the observation encoder and
                   the conditioning layers train (§2.1);
  'random_frozen'  the backbone is frozen at its random init (the control of §1.3).
  'oracle'         a diagnosis: the backbone of a stage-2 run trained end to end on the task
                   (`config.oracle_checkpoint`), frozen, with a fresh conditioning pathway and
                   encoder (docs/results/decoupled_gap.md).

Data: `config.data.dataset` in `config.data.format` (robomimic HDF5 — our generated
demonstrations or a converted real file —, RLDS or LeRobot). Actions are converted to
[pos, rot6d, gripper] and normalised with the fixed workspace box shared with stage 1 (§6);
`robot0_eef_pos` uses the same box; gripper_qpos, joints and the low-dim `object` state use
data limits; quaternions and rot6d stay raw.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time

import numpy as np

from decoupled_jax import pretrained
from decoupled_jax.backbones import expert_interface
from decoupled_jax.data.normalizer import FieldStats, LimitsNormalizer
from decoupled_jax.data.robomimic_hdf5 import DatasetError
from decoupled_jax.data.sources import load_episodes
from decoupled_jax.data.windows import WindowSampler, prepare_policy_dataset
from decoupled_jax.encoders import check_crop
from decoupled_jax.errors import CheckpointError, ConfigError
from decoupled_jax.heads import make_head
from decoupled_jax.inference import POLICY_STAGES, PolicyRunner
from decoupled_jax.pipelines import common
from decoupled_jax.training import checkpoint as ckpt_lib
from decoupled_jax.training import sharding
from decoupled_jax.training.partition import FreezeRule
from decoupled_jax.training.policy import ACTION_DIM, policy_from_config
from decoupled_jax.training.stage import Stage
from decoupled_jax.training.weight_loaders import FreshInit, Stage1Backbone, TaskBackbone

DATA_LIMIT_KEYS = ("robot0_gripper_qpos", "object", "robot0_joint_pos")


def policy_normalizer(episodes, lowdim_keys, box) -> LimitsNormalizer:
  """§6 for the fields present: the fixed workspace box for action and eef positions, data
  limits for gripper_qpos/object/joints, raw quaternions and rot6d."""
  lo, hi = (np.asarray(b, np.float32) for b in box)
  overrides = {"actions": FieldStats.create(lo, hi, dims=slice(0, 3))}
  if "robot0_eef_pos" in lowdim_keys:
    overrides["robot0_eef_pos"] = FieldStats.create(lo, hi)
  fields = {k: None for k in lowdim_keys if k in DATA_LIMIT_KEYS}
  return LimitsNormalizer.fit(episodes, fields, overrides=overrides)


def check_stage1_checkpoint(config, norm: LimitsNormalizer,
                            stage1_names: tuple = ("pretrain",),
                            same_action_scale: tuple = ("pretrain",)) -> dict:
  """A decoupled run needs a *stage-1* checkpoint (a stage in `stage1_names`) of the same
  expert, head and horizon, and — for stage-1 stages in `same_action_scale`, unless stage 1
  chose the reference's data-limit normalisation — the same action normalisation; anything
  else would silently invalidate the comparison. Returns its meta."""
  path = config.stage1_checkpoint
  try:
    meta = pretrained.load_meta(path) if pretrained.is_ref(path) else ckpt_lib.load_meta(path)
  except CheckpointError as e:
    raise CheckpointError(f"config.stage1_checkpoint: {e}") from None
  where = f"config.stage1_checkpoint={path}"
  if meta.get("stage") not in stage1_names:
    raise CheckpointError(
        f"{where} is a {meta.get('stage')!r} checkpoint (mode {meta.get('mode')!r}, task "
        f"{meta.get('task')!r}), not a stage-1 one: its backbone already saw a task, so a "
        f"'decoupled' run on it would not test the method; give an experiments/pretrain.py run")
  robot = meta.get("robot") or {}
  if robot.get("action_space", "ee_pose") != "ee_pose" or int(
      meta.get("action_dim", ACTION_DIM)) != ACTION_DIM:
    raise CheckpointError(
        f"{where} was pretrained on {robot.get('mjcf', '?')} with {robot.get('action_space')} "
        f"targets ({meta.get('action_dim')}-D); this stage 2 trains {ACTION_DIM}-D end-effector "
        f"pose actions [pos, rot6d, gripper]")
  theirs = meta["config"]
  _check_same_expert(config, theirs, where)
  act_theirs = meta["normalizer"]["fields"].get("actions")
  act_ours = norm.to_dict()["fields"]["actions"]
  # A stage 1 with the reference's data-limit normalisation (data.normalization='paper')
  # differs in scale by design: the comparison that option exists for (docs/method.md §1.1).
  paper_scheme = theirs.get("data", {}).get("normalization", "ours") == "paper"
  if (meta.get("stage") in same_action_scale and not paper_scheme
      and json.dumps(act_theirs, sort_keys=True) != json.dumps(act_ours, sort_keys=True)):
    raise CheckpointError(f"{where} normalised actions with {act_theirs}, this run with "
                          f"{act_ours}; set config.data.position_box to the stage-1 run's box")
  return meta


def check_oracle_checkpoint(config, norm: LimitsNormalizer) -> dict:
  """mode='oracle' takes a stage-2 checkpoint of the same expert, head, horizon and action
  normalisation (its backbone saw this task: that is the point of the diagnosis)."""
  path = config.oracle_checkpoint
  try:
    meta = ckpt_lib.load_meta(path)
  except CheckpointError as e:
    raise CheckpointError(f"config.oracle_checkpoint: {e}") from None
  where = f"config.oracle_checkpoint={path}"
  if meta.get("stage") not in POLICY_STAGES:
    raise CheckpointError(f"{where} is a {meta.get('stage')!r} checkpoint; mode='oracle' takes "
                          f"a stage-2 run's checkpoints (use mode='decoupled' for a stage 1)")
  theirs = meta["config"]
  _check_same_expert(config, theirs, where)
  act_theirs = meta["normalizer"]["fields"].get("actions")
  if json.dumps(act_theirs, sort_keys=True) != json.dumps(norm.to_dict()["fields"]["actions"],
                                                          sort_keys=True):
    raise CheckpointError(f"{where} normalised actions differently from this run; train the "
                          f"oracle on the same dataset and config.data.position_box")
  return meta


def _check_same_expert(config, theirs: dict, where: str) -> None:
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


def load_task_episodes(config):
  """(episodes with 7-D env actions, task) with the file's problems reported in one line."""
  from decoupled_jax.sim.robosuite_env import canonical_task
  d = config.data
  obs_keys = tuple(d.image_keys) + tuple(d.lowdim_keys)
  raw = load_episodes(d.dataset, obs_keys, format=d.format, key_map=d.key_map.to_dict(),
                      filter_key=d.filter_key or None, lazy_images=bool(d.lazy_images))
  names = raw.attrs.get("demo_names") or ["episode 0"]
  act = raw.fields["actions"]
  if act.ndim != 2 or act.shape[-1] != 7:
    raise DatasetError(f"{d.dataset}: 'actions' of {names[0]} have shape {act.shape[1:]} per "
                       f"frame; stage 2 needs 7-D absolute env actions [pos, axis-angle, "
                       f"gripper]")
  task = d.task or raw.attrs.get("env_args", {}).get("env_name", "")
  if not task:
    raise ConfigError(f"config.data.task is empty and {d.dataset} names no env in env_args")
  try:
    task = canonical_task(task)
  except KeyError as e:
    raise ConfigError(f"config.data.task: {e.args[0]}") from None
  return raw, task


def make_stage(config) -> Stage:
  """Stage 2 on a robosuite task's demonstrations, evaluated closed loop in robosuite."""
  d = config.data
  image_keys, lowdim_keys = tuple(d.image_keys), tuple(d.lowdim_keys)
  raw, task = load_task_episodes(config)
  episodes = prepare_policy_dataset(raw, image_keys + lowdim_keys)
  norm = policy_normalizer(episodes, lowdim_keys, d.position_box)
  avg_len = float(np.mean(np.diff(np.concatenate([[0], episodes.episode_ends]))))
  max_steps = int(config.eval.max_steps) or int(math.ceil(2.5 * avg_len))

  def evaluators(runner, meta):
    def evaluate(params, step):
      r = closed_loop(runner(params), task, config.eval, max_steps=max_steps,
                      use_images=bool(image_keys),
                      num_episodes=int(config.eval.periodic_episodes))
      return {"success_rate": r["success_rate"], "mean_episode_length": r["mean_episode_length"]}

    def final_evaluate(params, workdir, step):
      out = {}
      if int(config.eval.num_episodes) > 0:
        t0 = time.time()
        ev = closed_loop(runner(params), task, config.eval, max_steps=max_steps,
                         use_images=bool(image_keys), video_dir=os.path.join(workdir, "videos"),
                         json_path=os.path.join(workdir, "eval.json"))
        out = dict({k: v for k, v in ev.items() if k != "episodes"}, wall_time_s=time.time() - t0)
      n_train = int(config.eval.train_episodes)
      if n_train > 0 and d.format == "robomimic":
        from decoupled_jax.sim.evaluator import demo_initial_states
        t0 = time.time()
        ev = closed_loop(runner(params), task, config.eval, max_steps=max_steps,
                         use_images=bool(image_keys),
                         json_path=os.path.join(workdir, "eval_train.json"),
                         initial_states=demo_initial_states(d.dataset, n_train,
                                                            filter_key=d.filter_key or None))
        out["train"] = dict({k: v for k, v in ev.items() if k != "episodes"},
                            wall_time_s=time.time() - t0)
      return out

    return evaluate, final_evaluate

  return policy_stage(config, episodes, norm, task=task, name="finetune",
                      evaluators=evaluators, extra_meta={"max_steps": max_steps})


def policy_stage(config, episodes, norm: LimitsNormalizer, *, task: str, name: str,
                 evaluators, extra_meta=None, check_stage1=None) -> Stage:
  """The stage-2 Stage shared by every benchmark: `episodes` hold the policy keys and 10-D
  actions (not yet normalised), `norm` the benchmark's normaliser; `evaluators(runner, meta)`
  returns (evaluate(params, step), final_evaluate(params, workdir, step)) where
  `runner(params)` is an `inference.PolicyRunner`. `check_stage1(config, norm)` vets the
  decoupled run's stage-1 checkpoint (default: `check_stage1_checkpoint`)."""
  d = config.data
  image_keys, lowdim_keys = tuple(d.image_keys), tuple(d.lowdim_keys)
  obs_keys = image_keys + lowdim_keys
  policy = policy_from_config(config, image_keys, lowdim_keys)
  for k in image_keys:   # before any compile: the encoder's own crop check, on the frames
    frames = episodes.fields.get(k)
    if frames is None:
      continue
    try:
      check_crop(frames, policy.encoder.crop_size)
    except ValueError:
      h, w = frames.shape[1:3]
      raise ConfigError(f"config.encoder.crop_size: {policy.encoder.crop_size} exceeds the "
                        f"{h}x{w} frames of '{k}' in {episodes.source}") from None
  expert = expert_interface(policy.backbone)
  freeze = FreezeRule(mode="none" if config.mode == "normal" else "backbone",
                      conditioning_patterns=expert.conditioning_patterns,
                      extra_frozen=tuple(config.freeze.extra_frozen),
                      extra_trainable=tuple(config.freeze.extra_trainable))
  weights = FreshInit()
  if config.mode == "decoupled":
    (check_stage1 or check_stage1_checkpoint)(config, norm)
    weights = Stage1Backbone(config.stage1_checkpoint, expert.conditioning_patterns,
                             expert.reinit_on_load_patterns)
  elif config.mode == "oracle":
    check_oracle_checkpoint(config, norm)
    weights = TaskBackbone(config.oracle_checkpoint, expert.conditioning_patterns)

  episodes = prepare_policy_dataset(episodes, obs_keys, convert_actions=False, normalizer=norm)
  sampler = WindowSampler(episodes, n_obs_steps=d.n_obs_steps, horizon=d.horizon,
                          n_action_steps=d.n_action_steps, obs_keys=obs_keys)
  batch = int(config.train.batch_size)
  logging.info("%s: %d demos, %d frames, %d windows; task %s", episodes.source,
               episodes.num_episodes, episodes.num_frames, len(sampler), task)

  num_steps = None
  if d.sampling == "epochs":
    num_steps = int(config.train.epochs) * sampler.num_batches(batch)
    host_batches = _epoch_batches(sampler, batch, config.seed)
    logging.info("epoch budget: %d epochs x %d batches = %d steps", config.train.epochs,
                 sampler.num_batches(batch), num_steps)
  else:
    host_batches = _uniform_batches(sampler, batch, config.seed)

  head = make_head(config.head)
  example = sampler.sample(np.random.default_rng(0), 1)["obs"]
  if config.mode == "random_frozen":
    freeze = random_frozen_rule(freeze, policy, example, int(d.horizon))
  meta = {"mode": config.mode, "task": task, "config": common.config_to_dict(config),
          "normalizer": norm.to_dict(), "backbone": config.backbone.name,
          "head": config.head.type, "image_keys": list(image_keys),
          "lowdim_keys": list(lowdim_keys),
          "obs_shapes": {k: list(example[k].shape[2:]) for k in obs_keys},
          "obs_dtypes": {k: str(example[k].dtype) for k in obs_keys},
          "horizon": int(d.horizon), "n_obs_steps": int(d.n_obs_steps),
          "n_action_steps": int(d.n_action_steps),
          "dataset": os.path.abspath(d.dataset), "stage1_checkpoint": config.stage1_checkpoint,
          "oracle_checkpoint": config.get("oracle_checkpoint", "")}
  meta.update(extra_meta or {})

  def runner(params):
    # Batch 1 whatever config.eval.num_workers: every closed-loop evaluation (in process, or
    # served to the LIBERO runner) samples each episode's row with the same batch-1 program,
    # so its episodes do not depend on the worker count or on which rows share a call.
    return PolicyRunner(policy, head, params, norm, obs_shapes=meta["obs_shapes"],
                        obs_dtypes=meta["obs_dtypes"], horizon=d.horizon,
                        n_obs_steps=d.n_obs_steps, n_action_steps=d.n_action_steps,
                        batch_size=1, seed=config.seed)

  evaluate, final_evaluate = evaluators(runner, meta)
  return Stage(name=name, policy=policy, head=head, example_obs=example,
               action_shape=(int(d.horizon), ACTION_DIM), meta=meta, freeze=freeze,
               weights=weights, no_weight_decay=expert.no_weight_decay_patterns,
               host_batches=host_batches,
               evaluate=evaluate if int(config.train.eval_every) else None,
               final_evaluate=final_evaluate, num_steps=num_steps)


def _uniform_batches(sampler, batch: int, seed: int):
  """Windows drawn with replacement; global batch k is a function of (seed, k), so a resumed
  run sees the same data; each process gathers its own rows (`sharding.process_rows`)."""
  rows = sharding.process_rows(batch)

  def host_batches(start):
    step = start
    while True:
      pos = np.random.default_rng((seed, step)).integers(0, len(sampler), size=batch)
      yield sampler.get_batch(pos[rows])
      step += 1

  return host_batches


def _epoch_batches(sampler, batch: int, seed: int):
  """The reference's budget: shuffled passes over every window, the last partial batch
  dropped; batch k of the run is a function of (seed, k), so a resumed run sees the same data."""
  per_epoch = sampler.num_batches(batch)
  if per_epoch < 1:
    raise DatasetError(f"{sampler.episodes.source}: {len(sampler)} windows, fewer than one "
                       f"batch of {batch}")
  rows = sharding.process_rows(batch)

  def host_batches(start):
    step = start
    while True:
      epoch, i = divmod(step, per_epoch)
      perm = np.random.default_rng((seed, epoch)).permutation(len(sampler))
      yield sampler.get_batch(perm[i * batch:(i + 1) * batch][rows])
      step += 1

  return host_batches


def random_frozen_rule(freeze: FreezeRule, policy, example_obs, horizon: int) -> FreezeRule:
  """The paper's random-frozen control (§1.3): every backbone leaf whose name *and shape*
  match a randomly initialised stage-1 model stays frozen at its random init, conditioning
  biases, `pos_emb` and DP-T's condition MLP included (no bias exception); only the
  conditioning leaves whose shape depends on the observation width train."""
  import jax
  import jax.numpy as jnp
  from decoupled_jax.encoders import ObservationEncoder
  from decoupled_jax.training.partition import flatten
  from decoupled_jax.training.policy import Policy, init_policy
  stage1 = Policy(ObservationEncoder(lowdim_keys=("cond",)), policy.backbone)
  ref = jax.eval_shape(lambda k: init_policy(stage1, k, {"cond": jnp.zeros((1, horizon, 8))},
                                             (horizon, ACTION_DIM)), jax.random.key(0))
  ours = jax.eval_shape(lambda k: init_policy(policy, k, example_obs, (horizon, ACTION_DIM)),
                        jax.random.key(0))
  ref, ours = flatten(ref), flatten(ours)
  same = frozenset(p for p, v in ours.items() if p.startswith("backbone/") and p in ref
                   and tuple(ref[p].shape) == tuple(v.shape))
  logging.info("random_frozen: %d backbone leaves frozen at their random init (§1.3)",
               len(freeze.frozen_paths({k: None for k in ours}) | same))
  return dataclasses.replace(freeze, also_frozen=same)


def closed_loop(policy_fn, task: str, eval_config, *, max_steps: int, use_images: bool,
                video_dir=None, json_path=None, num_episodes=None, initial_states=None) -> dict:
  """The MimicGen protocol (§7.1): 'test' episodes on seeds 100000 + seed_offset + i, or
  'train' episodes from demonstrations' initial states."""
  from decoupled_jax.sim.evaluator import DEFAULT_SEED_BASE, evaluate_policy
  n = int(num_episodes or eval_config.num_episodes)
  first = DEFAULT_SEED_BASE + int(eval_config.seed_offset)
  seeds = None if initial_states is not None else list(range(first, first + n))
  return evaluate_policy(policy_fn, task, seeds=seeds, initial_states=initial_states,
                         n_obs_steps=policy_fn.n_obs, n_action_steps=policy_fn.n_act,
                         max_steps=max_steps, num_workers=int(eval_config.num_workers),
                         use_images=use_images, video_dir=video_dir,
                         num_videos=int(eval_config.num_videos), json_path=json_path,
                         progress=bool(eval_config.progress))
