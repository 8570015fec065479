"""Stage 2 (decoupled), normal and random-frozen training on demonstrations, the same stage
for every stage-2 benchmark (docs/method.md §2, §4, §5, §7; `benchmarks/`).

`config.mode` is the one freeze knob:
  'normal'         every parameter trains from its init (§2.2);
  'decoupled'      the backbone is loaded from `config.stage1_checkpoint` by path and shape
                   and frozen outside its conditioning pathway; the observation encoder and
                   the conditioning layers train (§2.1);
  'random_frozen'  the backbone is frozen at its random init (the control of §1.3).
  'oracle'         a diagnosis: the backbone of a stage-2 run trained end to end on the task
                   (`config.oracle_checkpoint`), frozen, with a fresh conditioning pathway and
                   encoder (docs/results/decoupled_gap.md).

`config.benchmark` picks the benchmark object that loads the data and normaliser, vets the
stage-1 expert and evaluates: 'robosuite' (closed loop in robosuite), 'libero' (the LIBERO
runner), 'dataset' (any dataset, any robot, no simulator: offline held-out action error).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os

import numpy as np

from decoupled_jax import benchmarks
from decoupled_jax.backbones import expert_interface
from decoupled_jax.benchmarks.base import TaskData, check_same_expert
from decoupled_jax.data.normalizer import LimitsNormalizer
from decoupled_jax.data.robomimic_hdf5 import DatasetError
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
from decoupled_jax.util import epoch_batches, seeded_batches


def make_stage(config) -> Stage:
  """Stage 2 on `config.benchmark`'s data, scored by its evaluator."""
  bench = benchmarks.stage2(config)
  return policy_stage(config, bench, bench.load(config))


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
  check_same_expert(config, theirs, where)
  act_theirs = meta["normalizer"]["fields"].get("actions")
  if json.dumps(act_theirs, sort_keys=True) != json.dumps(norm.to_dict()["fields"]["actions"],
                                                          sort_keys=True):
    raise CheckpointError(f"{where} normalised actions differently from this run; train the "
                          f"oracle on the same dataset and config.data.position_box")
  return meta


def policy_stage(config, bench, data: TaskData) -> Stage:
  """The stage-2 Stage of every benchmark: `data.episodes` hold the policy keys and model
  actions (not yet normalised), `data.norm` the benchmark's normaliser; `bench` vets the
  stage-1 expert and gives the evaluators."""
  d = config.data
  episodes, norm, task = data.episodes, data.norm, data.task
  action_dim = data.action_dim
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
    bench.check_stage1(config, data)
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

  # Global batch k is a function of (seed, k), so a resumed run sees the same data; each
  # process gathers its own rows.
  num_steps, rows = None, sharding.process_rows(batch)
  if int(config.train.epochs) > 0:   # the one run-length knob (config_lib.finetune_config)
    num_steps = int(config.train.epochs) * sampler.num_batches(batch)
    if num_steps < 1:
      raise DatasetError(f"{episodes.source}: {len(sampler)} windows, fewer than one batch "
                         f"of {batch}")
    host_batches = epoch_batches(len(sampler), batch, config.seed, sampler.get_batch, rows)
    logging.info("epoch budget: %d epochs x %d batches = %d steps", config.train.epochs,
                 sampler.num_batches(batch), num_steps)
  else:
    host_batches = seeded_batches(len(sampler), batch, config.seed, sampler.get_batch, rows)

  head = make_head(config.head)
  example = sampler.sample(np.random.default_rng(0), 1)["obs"]
  if config.mode == "random_frozen":
    freeze = random_frozen_rule(freeze, policy, example, int(d.horizon), action_dim)
  meta = {"mode": config.mode, "benchmark": benchmarks.name_of(config), "task": task,
          "config": common.config_to_dict(config), "action_space": data.action_space,
          "action_dim": action_dim,
          "normalizer": norm.to_dict(), "backbone": config.backbone.name,
          "head": config.head.type, "image_keys": list(image_keys),
          "lowdim_keys": list(lowdim_keys),
          "obs_shapes": {k: list(example[k].shape[2:]) for k in obs_keys},
          "obs_dtypes": {k: str(example[k].dtype) for k in obs_keys},
          "horizon": int(d.horizon), "n_obs_steps": int(d.n_obs_steps),
          "n_action_steps": int(d.n_action_steps),
          "dataset": os.path.abspath(d.dataset), "stage1_checkpoint": config.stage1_checkpoint,
          "oracle_checkpoint": config.get("oracle_checkpoint", "")}
  meta.update(data.extra_meta)

  def runner(params):
    # Batch 1 whatever config.eval.num_workers: every closed-loop evaluation (in process, or
    # served to the LIBERO runner) samples each episode's row with the same batch-1 program,
    # so its episodes do not depend on the worker count or on which rows share a call.
    return PolicyRunner(policy, head, params, norm, obs_shapes=meta["obs_shapes"],
                        obs_dtypes=meta["obs_dtypes"], horizon=d.horizon,
                        n_obs_steps=d.n_obs_steps, n_action_steps=d.n_action_steps,
                        batch_size=1, seed=config.seed, action_dim=action_dim,
                        action_space=data.action_space)

  evaluate, final_evaluate = bench.evaluators(config, data, runner)
  return Stage(name="finetune", policy=policy, head=head, example_obs=example,
               action_shape=(int(d.horizon), action_dim), meta=meta, freeze=freeze,
               weights=weights, no_weight_decay=expert.no_weight_decay_patterns,
               host_batches=host_batches,
               evaluate=evaluate if int(config.train.eval_every) else None,
               final_evaluate=final_evaluate, num_steps=num_steps)


def random_frozen_rule(freeze: FreezeRule, policy, example_obs, horizon: int,
                       action_dim: int = ACTION_DIM) -> FreezeRule:
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
                                             (horizon, action_dim)), jax.random.key(0))
  ours = jax.eval_shape(lambda k: init_policy(policy, k, example_obs, (horizon, action_dim)),
                        jax.random.key(0))
  ref, ours = flatten(ref), flatten(ours)
  same = frozenset(p for p, v in ours.items() if p.startswith("backbone/") and p in ref
                   and tuple(ref[p].shape) == tuple(v.shape))
  logging.info("random_frozen: %d backbone leaves frozen at their random init (§1.3)",
               len(freeze.frozen_paths({k: None for k in ours}) | same))
  return dataclasses.replace(freeze, also_frozen=same)
