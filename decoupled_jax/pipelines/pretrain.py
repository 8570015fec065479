"""Stage 1 (docs/method.md §1): the action expert on observation-free (condition -> action
trajectory) windows, the same stage for every stage-1 benchmark (`config.benchmark`):

  'fk'      forward kinematics of `config.robot` (the built-in Panda or any MJCF), generated
            on device, or the (joint, pose) windows of demonstrations (`benchmarks/fk.py`);
  'libero'  LIBERO's end-effector state -> delta action pairs (`benchmarks/libero.py`).

The benchmark object owns the data, the normaliser and the held-out windows; this module builds
the policy (one low-dim key, the condition window), the stage and its one evaluation: sampled
trajectories for the held-out windows against their targets, next to the trivial predictor of
the data's mean trajectory.
"""
from __future__ import annotations

import logging
import time

import jax
import jax.numpy as jnp
import numpy as np

from decoupled_jax import benchmarks
from decoupled_jax.backbones import expert_interface
from decoupled_jax.benchmarks.base import COND_KEY  # noqa: F401  (re-exported)
from decoupled_jax.heads import make_head
from decoupled_jax.pipelines import common
from decoupled_jax.training.policy import make_sample_fn, policy_from_config
from decoupled_jax.training.stage import Stage


def make_stage(config) -> Stage:
  horizon = int(config.data.horizon)
  data = benchmarks.stage1(config).load(config)
  policy = policy_from_config(config, lowdim_keys=(COND_KEY,))
  head = make_head(config.head)
  expert = expert_interface(policy.backbone)
  meta = {"config": common.config_to_dict(config), "normalizer": data.norm.to_dict(),
          "benchmark": benchmarks.name_of(config), "backbone": config.backbone.name,
          "head": config.head.type, "obs_keys": [COND_KEY], "cond_dim": data.cond_dim,
          "horizon": horizon, "action_dim": data.action_dim}
  meta.update(data.meta)

  sample_fn = jax.jit(make_sample_fn(policy, head, (horizon, data.action_dim)))
  eval_obs = data.normalise(data.eval_cond, data.eval_target)["obs"]

  def evaluate(params, step):
    baseline = data.baseline()
    t0 = time.time()
    pred = np.asarray(sample_fn(params, eval_obs, jax.random.PRNGKey(step)))
    out = data.errors(np.asarray(data.norm.unnormalize_field("actions", pred)))
    out.update({f"baseline_{k}": v for k, v in baseline.items()},
               sample_time_s=time.time() - t0)
    logging.info("%s @%d: pos %.2f mm (baseline %.2f), rot %.2f deg (baseline %.2f)",
                 data.log_line, step, out["pos_err_mm"], baseline["pos_err_mm"],
                 out["rot_err_deg"], baseline["rot_err_deg"])
    return out

  def final_evaluate(params, workdir, step):
    return evaluate(params, step) if len(data.eval_cond) else {}

  return Stage(name="pretrain", policy=policy, head=head,
               example_obs={COND_KEY: jnp.zeros((1, horizon, data.cond_dim), jnp.float32)},
               action_shape=(horizon, data.action_dim), meta=meta,
               no_weight_decay=expert.no_weight_decay_patterns,
               host_batches=data.host_batches, device_batch_fn=data.device_batch_fn,
               evaluate=evaluate if len(data.eval_cond) else None,
               final_evaluate=final_evaluate)
