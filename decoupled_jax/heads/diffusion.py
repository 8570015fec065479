"""Diffusion head: schedules, ε-prediction loss, DDPM and DDIM samplers (docs/method.md §5).

A port of diffusers' ``DDPMScheduler`` (``variance_type='fixed_small'``) and
``DDIMScheduler`` as Diffusion Policy configures them, written as pure functions:

- ``make_schedule`` builds ``betas``/``alphas``/``alphas_cumprod`` exactly like diffusers
  (betas in float64 Python/NumPy, cast to float32; ``alphas = 1 - betas`` in float32;
  the cumulative product accumulated in float64 like torch's CPU ``cumprod`` and cast
  to float32).
- ``ddpm_step`` / ``ddim_step`` are one scheduler ``step`` each, with the same float32
  arithmetic order as diffusers.
- ``sample_ddpm`` / ``sample_ddim`` run the whole reverse chain in one ``lax.scan`` (the
  ``denoise_fn`` is traced once).

``denoise_fn(x_t, t) -> model_output`` where ``x_t`` has the sample shape and ``t`` is a
float32 array of shape ``(B,)`` holding the integer train timestep (0..T-1).
"""
from __future__ import annotations

import functools
import math
from typing import Callable, Optional

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

DenoiseFn = Callable[[jax.Array, jax.Array], jax.Array]

BETA_SCHEDULES = ("squaredcos_cap_v2", "linear", "scaled_linear")
PREDICTION_TYPES = ("epsilon", "sample")


@flax.struct.dataclass
class DiffusionSchedule:
  """Noise schedule arrays (float32, shape ``(T,)``); ``num_train_steps`` is static."""
  betas: jax.Array
  alphas: jax.Array
  alphas_cumprod: jax.Array
  num_train_steps: int = flax.struct.field(pytree_node=False, default=100)


def _betas_for_alpha_bar(num_steps: int, max_beta: float = 0.999) -> np.ndarray:
  """diffusers ``betas_for_alpha_bar`` with the cosine alpha-bar (float64 Python math)."""

  def alpha_bar(t):
    return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

  betas = []
  for i in range(num_steps):
    t1 = i / num_steps
    t2 = (i + 1) / num_steps
    betas.append(min(1 - alpha_bar(t2) / alpha_bar(t1), max_beta))
  return np.asarray(betas, dtype=np.float64).astype(np.float32)


@functools.lru_cache(maxsize=32)
def _schedule_numpy(num_train_steps: int, beta_schedule: str, beta_start: float,
                    beta_end: float):
  if beta_schedule == "squaredcos_cap_v2":
    betas = _betas_for_alpha_bar(num_train_steps)
  elif beta_schedule == "linear":
    # torch.linspace(beta_start, beta_end, T, dtype=float32)
    betas = np.linspace(beta_start, beta_end, num_train_steps, dtype=np.float64).astype(np.float32)
  elif beta_schedule == "scaled_linear":
    # torch.linspace(beta_start**0.5, beta_end**0.5, T, dtype=float32) ** 2 (square in float32)
    betas = np.linspace(beta_start ** 0.5, beta_end ** 0.5, num_train_steps,
                        dtype=np.float64).astype(np.float32) ** 2
  else:
    raise ValueError(f"unknown beta_schedule {beta_schedule!r}; expected one of {BETA_SCHEDULES}")
  betas = betas.astype(np.float32)
  alphas = (np.float32(1.0) - betas).astype(np.float32)
  # torch's CPU cumprod accumulates float32 in double (acc_type) and stores float32.
  alphas_cumprod = np.cumprod(alphas.astype(np.float64)).astype(np.float32)
  for a in (betas, alphas, alphas_cumprod):
    a.setflags(write=False)
  return betas, alphas, alphas_cumprod


def make_schedule(num_train_steps: int = 100, beta_schedule: str = "squaredcos_cap_v2",
                  beta_start: float = 1e-4, beta_end: float = 0.02) -> DiffusionSchedule:
  """Schedule as diffusers builds it. ``beta_start/end`` are unused by the cosine schedule."""
  if int(num_train_steps) < 1:
    raise ValueError(f"num_train_steps must be >= 1, got {num_train_steps}")
  betas, alphas, alphas_cumprod = _schedule_numpy(int(num_train_steps), str(beta_schedule),
                                                  float(beta_start), float(beta_end))
  return DiffusionSchedule(betas=jnp.asarray(betas), alphas=jnp.asarray(alphas),
                           alphas_cumprod=jnp.asarray(alphas_cumprod),
                           num_train_steps=int(num_train_steps))


def standard_normal(key: jax.Array, shape, dtype=jnp.float32) -> jax.Array:
  """N(0, I) of ``shape`` drawn as a flat vector and reshaped.

  Same distribution as ``jax.random.normal(key, shape)`` (not the same bits). With
  ``jax_threefry_partitionable`` (the default) XLA:CPU takes ~3 s to compile a rank-3
  threefry draw but ~0.3 s for a rank-1 one.
  """
  shape = tuple(int(d) for d in shape)
  return jax.random.normal(key, (math.prod(shape),), dtype).reshape(shape)


def _bcast(v: jax.Array, ndim: int) -> jax.Array:
  """(B,) -> (B, 1, ..., 1) with ``ndim`` dims in total; scalars pass through."""
  v = jnp.asarray(v)
  if v.ndim == 0:
    return v
  return v.reshape(v.shape + (1,) * (ndim - v.ndim))


def add_noise(schedule: DiffusionSchedule, x0: jax.Array, noise: jax.Array,
              t: jax.Array) -> jax.Array:
  """Forward noising x_t = sqrt(ᾱ_t)·x0 + sqrt(1 − ᾱ_t)·ε (diffusers ``add_noise``).

  ``t`` is an integer array of shape ``(B,)`` (or a scalar) indexing the train schedule.
  """
  ac = schedule.alphas_cumprod[jnp.asarray(t, jnp.int32)]
  sqrt_a = _bcast(ac ** 0.5, x0.ndim)
  sqrt_1ma = _bcast((1.0 - ac) ** 0.5, x0.ndim)
  return (sqrt_a * x0 + sqrt_1ma * noise).astype(x0.dtype)


# ----------------------------------------------------------------------------------------
# Training loss
# ----------------------------------------------------------------------------------------

def training_inputs(schedule: DiffusionSchedule, x0: jax.Array, rng: jax.Array, *,
                    num_noise_samples: int = 1):
  """Draw what the loss uses: returns ``(x_t, t, noise, x0_rep)``.

  ``t ~ U{0..T-1}`` per batch element (int32, shape ``(B·K,)``), and each element is
  replicated ``K = num_noise_samples`` times with independent ε and the *same* timestep.
  Replicas of element ``i`` are rows ``i·K .. i·K+K-1`` (``jnp.repeat`` on axis 0).
  """
  k = int(num_noise_samples)
  if k < 1:
    raise ValueError(f"num_noise_samples must be >= 1, got {num_noise_samples}")
  t_rng, n_rng = jax.random.split(rng)
  b = x0.shape[0]
  t = jax.random.randint(t_rng, (b,), 0, schedule.num_train_steps, dtype=jnp.int32)
  if k > 1:
    x0 = jnp.repeat(x0, k, axis=0)
    t = jnp.repeat(t, k, axis=0)
  noise = standard_normal(n_rng, x0.shape, x0.dtype)
  x_t = add_noise(schedule, x0, noise, t)
  return x_t, t, noise, x0


def loss(denoise_fn: DenoiseFn, schedule: DiffusionSchedule, x0: jax.Array, rng: jax.Array, *,
         num_noise_samples: int = 1, prediction_type: str = "epsilon") -> jax.Array:
  """MSE between the model output and ε (or x0 for ``prediction_type='sample'``).

  Averaged over all B·K·(sample dims) elements; returns a float32 scalar.
  """
  if prediction_type not in PREDICTION_TYPES:
    raise ValueError(f"unknown prediction_type {prediction_type!r}")
  x_t, t, noise, x0_rep = training_inputs(schedule, x0, rng, num_noise_samples=num_noise_samples)
  pred = denoise_fn(x_t, t.astype(jnp.float32))
  target = noise if prediction_type == "epsilon" else x0_rep
  if pred.shape != target.shape:
    raise ValueError(f"denoise_fn returned shape {pred.shape}, expected {target.shape}")
  return jnp.mean(jnp.square(pred.astype(jnp.float32) - target.astype(jnp.float32)))


# ----------------------------------------------------------------------------------------
# Timesteps ("leading" spacing, as diffusers' set_timesteps)
# ----------------------------------------------------------------------------------------

def inference_timesteps(num_train_steps: int, num_inference_steps: int,
                        steps_offset: int = 0) -> np.ndarray:
  """diffusers "leading" spacing: (arange(n)·(T//n)).round()[::-1] + steps_offset."""
  n = int(num_inference_steps)
  if not 1 <= n <= num_train_steps:
    raise ValueError(f"num_inference_steps={n} must be in [1, {num_train_steps}]")
  step_ratio = num_train_steps // n
  ts = (np.arange(0, n) * step_ratio).round()[::-1].copy().astype(np.int64)
  return ts + int(steps_offset)


def _alpha_prev(schedule: DiffusionSchedule, prev_t, final_alpha_cumprod):
  prev_t = jnp.asarray(prev_t, jnp.int32)
  ac_prev = schedule.alphas_cumprod[jnp.maximum(prev_t, 0)]
  return jnp.where(prev_t >= 0, ac_prev, jnp.asarray(final_alpha_cumprod, jnp.float32))


def _pred_x0(model_output, sample, alpha_prod_t, beta_prod_t, prediction_type):
  if prediction_type == "epsilon":
    return (sample - beta_prod_t ** 0.5 * model_output) / alpha_prod_t ** 0.5
  if prediction_type == "sample":
    return model_output
  raise ValueError(f"unknown prediction_type {prediction_type!r}")


# ----------------------------------------------------------------------------------------
# DDPM
# ----------------------------------------------------------------------------------------

def ddpm_variance(schedule: DiffusionSchedule, t, prev_t=None) -> jax.Array:
  """fixed_small posterior variance β̃_t = (1 − ᾱ_prev)/(1 − ᾱ_t)·(1 − ᾱ_t/ᾱ_prev), ≥ 1e-20."""
  t = jnp.asarray(t, jnp.int32)
  prev_t = t - 1 if prev_t is None else prev_t
  alpha_prod_t = schedule.alphas_cumprod[t]
  alpha_prod_t_prev = _alpha_prev(schedule, prev_t, 1.0)
  current_beta_t = 1 - alpha_prod_t / alpha_prod_t_prev
  variance = (1 - alpha_prod_t_prev) / (1 - alpha_prod_t) * current_beta_t
  return jnp.maximum(variance, 1e-20)


def ddpm_step(schedule: DiffusionSchedule, model_output: jax.Array, t, sample: jax.Array,
              noise: Optional[jax.Array] = None, *, prev_t=None, clip_sample: bool = True,
              clip_range: float = 1.0, prediction_type: str = "epsilon"):
  """One ``DDPMScheduler.step`` (fixed_small). Returns ``(prev_sample, pred_mean)``.

  ``t`` is a scalar integer timestep (may be traced); ``prev_t`` defaults to ``t - 1``
  (the value diffusers uses with the full 100-step chain). ``pred_mean`` is the noise-free
  posterior mean; ``prev_sample = pred_mean + sqrt(β̃_t)·noise`` when ``t > 0`` and ``noise``
  is given, else ``pred_mean``.
  """
  t = jnp.asarray(t, jnp.int32)
  prev_t = t - 1 if prev_t is None else jnp.asarray(prev_t, jnp.int32)
  alpha_prod_t = schedule.alphas_cumprod[t]
  alpha_prod_t_prev = _alpha_prev(schedule, prev_t, 1.0)
  beta_prod_t = 1 - alpha_prod_t
  beta_prod_t_prev = 1 - alpha_prod_t_prev
  current_alpha_t = alpha_prod_t / alpha_prod_t_prev
  current_beta_t = 1 - current_alpha_t

  pred_original_sample = _pred_x0(model_output, sample, alpha_prod_t, beta_prod_t,
                                  prediction_type)
  if clip_sample:
    pred_original_sample = jnp.clip(pred_original_sample, -clip_range, clip_range)

  pred_original_sample_coeff = (alpha_prod_t_prev ** 0.5 * current_beta_t) / beta_prod_t
  current_sample_coeff = current_alpha_t ** 0.5 * beta_prod_t_prev / beta_prod_t
  pred_mean = pred_original_sample_coeff * pred_original_sample + current_sample_coeff * sample
  pred_mean = pred_mean.astype(sample.dtype)
  if noise is None:
    return pred_mean, pred_mean
  std = ddpm_variance(schedule, t, prev_t) ** 0.5
  prev_sample = pred_mean + jnp.where(t > 0, std, 0.0).astype(sample.dtype) * noise
  return prev_sample, pred_mean


def _chain_tables(schedule, num_inference_steps, steps_offset=0):
  ts = inference_timesteps(schedule.num_train_steps, num_inference_steps, steps_offset)
  return ts.astype(np.int32)


def sample_ddpm(denoise_fn: DenoiseFn, schedule: DiffusionSchedule, rng: jax.Array,
                shape, *, clip_sample: bool = True, clip_range: float = 1.0,
                num_inference_steps: Optional[int] = None, prediction_type: str = "epsilon",
                add_noise_in_steps: bool = True, x_T: Optional[jax.Array] = None) -> jax.Array:
  """DDPM ancestral sampling (diffusers, fixed_small) from x_T ~ N(0, I), one ``lax.scan``.

  ``num_inference_steps`` defaults to ``num_train_steps`` (the paper's 100-step chain); a
  smaller value uses diffusers' "leading" timesteps with ``prev_t`` = the next timestep.
  ``x_T`` overrides the initial noise; ``add_noise_in_steps=False`` switches the per-step
  noise off (deterministic chain of posterior means, for tests).
  """
  n = schedule.num_train_steps if num_inference_steps is None else int(num_inference_steps)
  ts = _chain_tables(schedule, n)
  prev = np.concatenate([ts[1:], np.array([-1], np.int32)]).astype(np.int32)
  init_rng, step_rng = jax.random.split(rng)
  x = standard_normal(init_rng, shape) if x_T is None else x_T
  keys = jax.random.split(step_rng, n)
  batch = x.shape[0]

  def body(x, inp):
    t, pt, key = inp
    t_in = jnp.full((batch,), t, jnp.float32)
    out = denoise_fn(x, t_in)
    noise = standard_normal(key, x.shape, x.dtype) if add_noise_in_steps else None
    x, _ = ddpm_step(schedule, out, t, x, noise, prev_t=pt, clip_sample=clip_sample,
                     clip_range=clip_range, prediction_type=prediction_type)
    return x, None

  x, _ = jax.lax.scan(body, x, (jnp.asarray(ts), jnp.asarray(prev), keys))
  return x


# ----------------------------------------------------------------------------------------
# DDIM
# ----------------------------------------------------------------------------------------

def ddim_step(schedule: DiffusionSchedule, model_output: jax.Array, t, prev_t, sample: jax.Array,
              noise: Optional[jax.Array] = None, *, eta: float = 0.0, clip_sample: bool = True,
              clip_range: float = 1.0, set_alpha_to_one: bool = True,
              prediction_type: str = "epsilon"):
  """One ``DDIMScheduler.step`` (use_clipped_model_output=False).

  Returns ``(prev_sample, pred_original_sample)``. ``prev_t = t - T//n`` in diffusers; a
  negative ``prev_t`` uses the final ᾱ (1 with ``set_alpha_to_one``, else ᾱ_0). With
  ``eta > 0`` the step adds ``eta·σ_t·noise`` (``noise`` required).
  """
  t = jnp.asarray(t, jnp.int32)
  final_alpha = 1.0 if set_alpha_to_one else schedule.alphas_cumprod[0]
  alpha_prod_t = schedule.alphas_cumprod[t]
  alpha_prod_t_prev = _alpha_prev(schedule, prev_t, final_alpha)
  beta_prod_t = 1 - alpha_prod_t

  if prediction_type == "epsilon":
    pred_original_sample = (sample - beta_prod_t ** 0.5 * model_output) / alpha_prod_t ** 0.5
    pred_epsilon = model_output
  elif prediction_type == "sample":
    pred_original_sample = model_output
    pred_epsilon = (sample - alpha_prod_t ** 0.5 * pred_original_sample) / beta_prod_t ** 0.5
  else:
    raise ValueError(f"unknown prediction_type {prediction_type!r}")
  if clip_sample:
    pred_original_sample = jnp.clip(pred_original_sample, -clip_range, clip_range)

  if eta != 0.0:
    beta_prod_t_prev = 1 - alpha_prod_t_prev
    variance = (beta_prod_t_prev / beta_prod_t) * (1 - alpha_prod_t / alpha_prod_t_prev)
    std_dev_t = eta * variance ** 0.5
  else:
    std_dev_t = jnp.float32(0.0)
  pred_sample_direction = (1 - alpha_prod_t_prev - std_dev_t ** 2) ** 0.5 * pred_epsilon
  prev_sample = alpha_prod_t_prev ** 0.5 * pred_original_sample + pred_sample_direction
  if eta != 0.0:
    if noise is None:
      raise ValueError("ddim_step with eta > 0 needs noise")
    prev_sample = prev_sample + std_dev_t * noise
  return prev_sample.astype(sample.dtype), pred_original_sample


def sample_ddim(denoise_fn: DenoiseFn, schedule: DiffusionSchedule, rng: jax.Array, shape, *,
                num_inference_steps: int = 10, eta: float = 0.0, clip_sample: bool = True,
                clip_range: float = 1.0, set_alpha_to_one: bool = True, steps_offset: int = 0,
                prediction_type: str = "epsilon", x_T: Optional[jax.Array] = None) -> jax.Array:
  """DDIM sampling (diffusers, "leading" spacing) from x_T ~ N(0, I), one ``lax.scan``.

  With T=100, n=10: timesteps 90, 80, …, 0 and prev_t = t − 10 (−1 → final ᾱ = 1).
  """
  n = int(num_inference_steps)
  ts = _chain_tables(schedule, n, steps_offset)
  prev = (ts - schedule.num_train_steps // n).astype(np.int32)
  init_rng, step_rng = jax.random.split(rng)
  x = standard_normal(init_rng, shape) if x_T is None else x_T
  keys = jax.random.split(step_rng, n)
  batch = x.shape[0]

  def body(x, inp):
    t, pt, key = inp
    out = denoise_fn(x, jnp.full((batch,), t, jnp.float32))
    noise = standard_normal(key, x.shape, x.dtype) if eta != 0.0 else None
    x, _ = ddim_step(schedule, out, t, pt, x, noise, eta=eta, clip_sample=clip_sample,
                     clip_range=clip_range, set_alpha_to_one=set_alpha_to_one,
                     prediction_type=prediction_type)
    return x, None

  x, _ = jax.lax.scan(body, x, (jnp.asarray(ts), jnp.asarray(prev), keys))
  return x
