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
from decoupled_jax.heads import make_head, merge_head_config
from decoupled_jax.training import checkpoint as ckpt_lib
from decoupled_jax.training.policy import ACTION_DIM, make_sample_fn, policy_from_config

log = logging.getLogger(__name__)


class ObservationError(ValueError):
  """An observation does not match what the policy was trained on."""


class PolicyRunner:
  """Host-side policy: validate + normalise observations, sample on device, return the
  executed env actions [To-1, To-1+Ta): 7-D [pos, axis-angle, gripper] for `ee_pose` policies,
  the joint targets + gripper for `joint_pos` ones.

  Calls are padded to `batch_size` rows (larger calls are split), so one compiled program
  serves every call.

  * `batch_size=1` (the default; every closed-loop evaluation uses it): each row is sampled by
    one compiled batch-1 program, so a row's actions are a bitwise function of (params, its
    observation, its key) whatever the other rows of the call, their number or its position
    (an evaluation gives the same episodes with any worker count). The rows of a call are
    dispatched together and run asynchronously.
  * `batch_size=B > 1` (the policy server's throughput setting): rows share a vmapped program
    of B rows; XLA picks kernels by shape, so a row's actions then differ from the batch-1
    ones by float rounding (~1e-6) and may depend on its position in the batch.
  """

  def __init__(self, policy, head, params, normalizer: LimitsNormalizer, *,
               obs_shapes: Mapping[str, Sequence[int]], obs_dtypes: Mapping[str, str],
               horizon: int, n_obs_steps: int, n_action_steps: int, batch_size: int = 1,
               seed: int = 0, metadata: Optional[dict] = None, action_dim: int = ACTION_DIM,
               action_space: str = "ee_pose"):
    self.params, self.normalizer = params, normalizer
    self.obs_shapes = {k: tuple(int(d) for d in v) for k, v in obs_shapes.items()}
    self.obs_dtypes = dict(obs_dtypes)
    self.obs_keys = tuple(self.obs_shapes)
    self.horizon, self.n_obs, self.n_act = int(horizon), int(n_obs_steps), int(n_action_steps)
    self.batch = max(1, int(batch_size))
    self.metadata = dict(metadata or {})
    self.base_key = jax.random.key(int(seed))
    self.calls = 0
    # 'ee_pose': model actions [pos, rot6d, gripper] become 7-D env actions [pos, axis-angle,
    # gripper]; 'joint_pos': the model's joint targets + gripper are the robot's actions.
    self.action_space, self.action_dim = str(action_space), int(action_dim)
    sample = make_sample_fn(policy, head, (self.horizon, self.action_dim))

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
    # What the model sees is float32 and normalised: a finite float64 (1e300) or float32
    # (3e38) value can still become inf there, so finiteness is checked again on that.
    floats = [k for k in self.obs_keys if self.obs_dtypes[k] != "uint8"]
    normalizer = getattr(self, "normalizer", None)   # duck-typed users (RemotePolicy) have none
    with np.errstate(over="ignore", invalid="ignore"):
      seen = {k: np.asarray(obs_batch[k]).astype(np.float32) for k in floats}
      if normalizer is not None:
        fields = [k for k in normalizer.fields if k in seen]
        seen.update(normalizer.normalize({k: seen[k] for k in fields}, fields=fields))
      for k in floats:
        if not np.all(np.isfinite(np.asarray(seen[k], np.float32))):
          big = float(np.max(np.abs(np.asarray(obs_batch[k], np.float64))))
          raise ObservationError(
              f"observation '{k}' is out of range: it holds values (|x| up to {big:.3g}) "
              f"that are not finite once cast to float32 and normalised")
    return n

  # ------------------------------------------------------------------ inference
  def predict(self, obs_batch: Mapping, seeds=None, steps=None) -> np.ndarray:
    """Unnormalised model chunks (N, H, action_dim)."""
    n = self.check(obs_batch)
    obs = {k: np.asarray(obs_batch[k]) for k in self.obs_keys}
    lowdim = [k for k in self.normalizer.fields if k in obs]
    obs.update(self.normalizer.normalize({k: obs[k].astype(np.float32) for k in lowdim},
                                         fields=lowdim))
    self.calls += 1
    if seeds is not None:
      try:
        seeds = np.asarray(seeds, np.int64).reshape(-1)
        steps = (np.zeros_like(seeds) if steps is None
                 else np.asarray(steps, np.int64).reshape(-1))
      except (OverflowError, TypeError, ValueError) as e:
        raise ValueError(f"seeds/steps must be 64-bit integers ({e})") from None
      if seeds.shape != (n,) or steps.shape != (n,):
        raise ValueError(f"seeds/steps must have {n} entries, got {seeds.shape}/{steps.shape}")
      if steps.size and (steps.min() < 0 or steps.max() > 0xFFFFFFFF):
        raise ValueError(f"steps must be in [0, 2**32), got {steps.min()}..{steps.max()}")
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
      out.append((self._sample(self.params, chunk, k), m))   # dispatched, not awaited
    out = [np.asarray(a)[:m] for a, m in out]
    pred = np.asarray(self.normalizer.unnormalize_field("actions", np.concatenate(out)))
    _refuse_non_finite(pred)
    return pred

  def __call__(self, obs_batch: Mapping, seeds=None, steps=None) -> np.ndarray:
    pred = self.predict(obs_batch, seeds, steps)
    chunk = pred[:, self.n_obs - 1:self.n_obs - 1 + self.n_act].astype(np.float64)
    if self.action_space == "joint_pos":
      return chunk
    return _refuse_non_finite(rotation.model_action_to_env(chunk))


def _refuse_non_finite(actions: np.ndarray) -> np.ndarray:
  """Non-finite actions never leave a runner: ObservationError naming the rows instead."""
  with np.errstate(invalid="ignore"):
    bad = ~np.isfinite(actions.reshape(len(actions), -1)).all(axis=1)
  if bad.any():
    raise ObservationError(
        f"the policy produced non-finite actions for row(s) {np.flatnonzero(bad).tolist()} "
        f"(observations far outside the training range?); no actions were returned")
  return actions


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
  # `head_overrides`: typed, e.g. {"diffusion": {"sampler": "ddim"}, "flow": {"num_steps": 10}};
  # the meta's head is typed, or flat when written before the typed sections
  head = make_head(merge_head_config(config.head, head_overrides))
  policy = policy_from_config(config, meta["image_keys"], meta["lowdim_keys"])
  keys = list(meta["image_keys"]) + list(meta["lowdim_keys"])
  return PolicyRunner(policy, head, params,
                      LimitsNormalizer.from_dict(meta["normalizer"]),
                      obs_shapes={k: meta["obs_shapes"][k] for k in keys},
                      obs_dtypes={k: meta["obs_dtypes"][k] for k in keys},
                      horizon=meta["horizon"], n_obs_steps=meta["n_obs_steps"],
                      n_action_steps=meta["n_action_steps"], batch_size=batch_size, seed=seed,
                      action_dim=int(meta.get("action_dim", ACTION_DIM)),
                      action_space=meta.get("action_space", "ee_pose"),
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
