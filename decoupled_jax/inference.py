"""Inference from a checkpoint directory alone: observation history -> action chunk.

    runner = load_policy("workdirs/lift_decoupled/checkpoints")
    actions = runner({"robot0_eef_pos": (N, To, 3), ...})          # (N, Ta, 7) env actions

The checkpoint's `meta` item says everything needed (config, observation keys and shapes,
normaliser, horizons), so no workdir, dataset or config file is read. The closed-loop
evaluator, the paper chain, exports and the policy server all go through this one path.

Sampling noise: each row of a call gets its own key, fold_in(fold_in(base, seed), step)
when the caller passes the episode `seeds` and env `steps` (the evaluator does, so an
episode's actions do not depend on which other episodes share the batch), otherwise
fold_in(fold_in(base, call_index), row).
"""
from __future__ import annotations

import logging
from typing import Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from decoupled_jax.data import rotation
from decoupled_jax.data.normalizer import LimitsNormalizer
from decoupled_jax.errors import CheckpointError
from decoupled_jax.heads import make_head
from decoupled_jax.training import checkpoint as ckpt_lib
from decoupled_jax.training.policy import ACTION_DIM, make_sample_fn, policy_from_config

log = logging.getLogger(__name__)


class ObservationError(ValueError):
  """An observation does not match what the policy was trained on."""


class PolicyRunner:
  """Host-side policy: validate + normalise observations, sample on device, return the
  executed env actions [To-1, To-1+Ta) as 7-D [pos, axis-angle, gripper].

  Calls are padded to `batch_size` rows (larger calls are split), so one compiled program
  serves every call.
  """

  def __init__(self, policy, head, params, normalizer: LimitsNormalizer, *,
               obs_shapes: Mapping[str, Sequence[int]], obs_dtypes: Mapping[str, str],
               horizon: int, n_obs_steps: int, n_action_steps: int, batch_size: int = 1,
               seed: int = 0, metadata: Optional[dict] = None):
    self.params, self.normalizer = params, normalizer
    self.obs_shapes = {k: tuple(int(d) for d in v) for k, v in obs_shapes.items()}
    self.obs_dtypes = dict(obs_dtypes)
    self.obs_keys = tuple(self.obs_shapes)
    self.horizon, self.n_obs, self.n_act = int(horizon), int(n_obs_steps), int(n_action_steps)
    self.batch = max(1, int(batch_size))
    self.metadata = dict(metadata or {})
    self.base_key = jax.random.key(int(seed))
    self.calls = 0
    sample = make_sample_fn(policy, head, (self.horizon, ACTION_DIM))

    def sample_rows(params, obs, keys):
      def one(o, k):
        return sample(params, jax.tree.map(lambda x: x[None], o), k)[0]
      return jax.vmap(one)(obs, keys)

    self._sample = jax.jit(sample_rows)

  # ------------------------------------------------------------------ validation
  def check(self, obs_batch: Mapping) -> int:
    """Raises ObservationError naming the key, shape, dtype or NaN at fault; returns N."""
    missing = [k for k in self.obs_keys if k not in obs_batch]
    if missing:
      raise ObservationError(f"missing observation key(s) {missing}; the policy takes "
                             f"{list(self.obs_keys)}")
    n = None
    for k in self.obs_keys:
      x = np.asarray(obs_batch[k])
      want = (self.n_obs,) + self.obs_shapes[k]
      if x.ndim != len(want) + 1 or tuple(x.shape[1:]) != want:
        raise ObservationError(f"observation '{k}' has shape {tuple(x.shape)}, expected "
                               f"(N, {', '.join(map(str, want))})")
      if n is None:
        n = x.shape[0]
      elif x.shape[0] != n:
        raise ObservationError(f"observation '{k}' has {x.shape[0]} rows, others {n}")
      if self.obs_dtypes[k] == "uint8":
        if x.dtype != np.uint8:
          raise ObservationError(f"observation '{k}' must be uint8 images, got {x.dtype}")
      else:
        if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
          raise ObservationError(f"observation '{k}' must be numeric, got {x.dtype}")
        if not np.all(np.isfinite(x)):
          raise ObservationError(f"observation '{k}' contains NaN or inf")
    if not n:
      raise ObservationError("empty observation batch")
    return n

  # ------------------------------------------------------------------ inference
  def predict(self, obs_batch: Mapping, seeds=None, steps=None) -> np.ndarray:
    """Unnormalised model chunks (N, H, 10)."""
    n = self.check(obs_batch)
    obs = {k: np.asarray(obs_batch[k]) for k in self.obs_keys}
    lowdim = [k for k in self.normalizer.fields if k in obs]
    obs.update(self.normalizer.normalize({k: obs[k].astype(np.float32) for k in lowdim},
                                         fields=lowdim))
    self.calls += 1
    if seeds is not None:
      seeds = np.asarray(seeds, np.int64).reshape(-1)
      steps = np.zeros_like(seeds) if steps is None else np.asarray(steps, np.int64).reshape(-1)
      if seeds.shape != (n,) or steps.shape != (n,):
        raise ValueError(f"seeds/steps must have {n} entries, got {seeds.shape}/{steps.shape}")
      keys = [jax.random.fold_in(jax.random.fold_in(self.base_key, int(s) & 0x7FFFFFFF), int(t))
              for s, t in zip(seeds, steps)]
    else:
      call_key = jax.random.fold_in(self.base_key, self.calls)
      keys = [jax.random.fold_in(call_key, i) for i in range(n)]
    out = []
    for lo in range(0, n, self.batch):
      rows = slice(lo, min(lo + self.batch, n))
      m = rows.stop - rows.start
      pad = self.batch - m
      chunk = {k: v[rows] for k, v in obs.items()}
      k = jnp.stack(keys[rows] + [keys[rows][-1]] * pad)
      if pad:
        chunk = {k_: np.concatenate([v, np.repeat(v[-1:], pad, 0)]) for k_, v in chunk.items()}
      out.append(np.asarray(self._sample(self.params, chunk, k))[:m])
    pred = np.concatenate(out)
    return np.asarray(self.normalizer.unnormalize_field("actions", pred))

  def __call__(self, obs_batch: Mapping, seeds=None, steps=None) -> np.ndarray:
    pred = self.predict(obs_batch, seeds, steps)
    chunk = pred[:, self.n_obs - 1:self.n_obs - 1 + self.n_act]
    return rotation.model_action_to_env(chunk.astype(np.float64))


# Stages whose checkpoints are observation -> action policies (stage 1 is not one).
POLICY_STAGES = ("finetune", "libero_finetune")
# Meta entries a runner passes on to clients (the server's metadata).
CLIENT_META = ("task", "mode", "backbone", "step", "max_steps", "suite", "language",
               "action_layout")


def runner_from_meta(params, meta: dict, *, batch_size: int = 1, seed: int = 0,
                     head_overrides: Optional[dict] = None) -> PolicyRunner:
  """A runner from inference params and a stage-2 checkpoint's meta."""
  if meta.get("stage") not in POLICY_STAGES:
    raise CheckpointError(f"this is a {meta.get('stage')!r} checkpoint (stage 1 predicts "
                     f"end-effector trajectories from joint windows, not actions from "
                     f"observations); load a stage-2 (experiments/train.py) checkpoint")
  config = ml_collections.ConfigDict(meta["config"])
  if head_overrides:
    config.head.update(head_overrides)
  policy = policy_from_config(config, meta["image_keys"], meta["lowdim_keys"])
  keys = list(meta["image_keys"]) + list(meta["lowdim_keys"])
  return PolicyRunner(policy, make_head(config.head), params,
                      LimitsNormalizer.from_dict(meta["normalizer"]),
                      obs_shapes={k: meta["obs_shapes"][k] for k in keys},
                      obs_dtypes={k: meta["obs_dtypes"][k] for k in keys},
                      horizon=meta["horizon"], n_obs_steps=meta["n_obs_steps"],
                      n_action_steps=meta["n_action_steps"], batch_size=batch_size, seed=seed,
                      metadata={k: meta[k] for k in CLIENT_META
                                if meta.get(k) is not None})


def load_policy(checkpoint_dir: str, *, step: Optional[int] = None, batch_size: int = 1,
                seed: int = 0, head_overrides: Optional[dict] = None):
  """(runner, meta) from a stage-2 run's checkpoint directory (newest intact step)."""
  meta = ckpt_lib.load_meta(checkpoint_dir, step)
  if meta.get("stage") not in POLICY_STAGES:   # refuse before reading any weights
    runner_from_meta({}, meta)
  params, meta = ckpt_lib.load_inference_params(checkpoint_dir, meta["step"])
  return runner_from_meta(params, meta, batch_size=batch_size, seed=seed,
                          head_overrides=head_overrides), meta
