"""Tests of decoupled_jax.heads: diffusers parity on the golden files, losses, samplers."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from decoupled_jax import heads
from decoupled_jax.heads import diffusion as D
from decoupled_jax.heads import flow as F

TOL = 1e-5


@pytest.fixture(scope="module")
def sched():
  return D.make_schedule(100, "squaredcos_cap_v2")


@pytest.fixture(scope="module")
def golden(golden_dir):
  return {
      "cfg": json.loads((golden_dir / "schedulers.json").read_text()),
      "ddpm": dict(np.load(golden_dir / "ddpm_squaredcos_100.npz")),
      "post": dict(np.load(golden_dir / "ddpm_posterior_means.npz")),
      "ddim": dict(np.load(golden_dir / "ddim_squaredcos_10.npz")),
  }


def _uniform(seed, shape):
  return jnp.asarray(np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32))


def _scan_lengths(fn, *args):
  jaxpr = jax.make_jaxpr(fn)(*args)
  return [e.params["length"] for e in jaxpr.jaxpr.eqns if e.primitive.name == "scan"]


def _point_mass_eps(schedule, target):
  """Exact ε-prediction for data = the constant ``target`` (x̂0 == target at every step)."""

  def fn(x, t):
    ac = schedule.alphas_cumprod[t.astype(jnp.int32)][:, None, None]
    return (x - jnp.sqrt(ac) * target) / jnp.sqrt(1.0 - ac)

  return fn


# ----------------------------------------------------------------------------------------
# Golden parity (diffusers 0.42.1)
# ----------------------------------------------------------------------------------------

def test_golden_config_is_what_we_port(golden):
  cfg = golden["cfg"]
  for k in ("ddpm", "ddim"):
    assert cfg[k]["num_train_timesteps"] == 100
    assert cfg[k]["beta_schedule"] == "squaredcos_cap_v2"
    assert cfg[k]["clip_sample"] is True
    assert cfg[k]["prediction_type"] == "epsilon"
  assert cfg["ddpm"]["variance_type"] == "fixed_small"
  assert cfg["ddim"]["eta"] == 0.0 and cfg["ddim"]["set_alpha_to_one"] is True
  assert cfg["ddim"]["steps_offset"] == 0


def test_schedule_matches_golden(sched, golden):
  g = golden["ddpm"]
  assert sched.betas.dtype == jnp.float32 and sched.alphas_cumprod.shape == (100,)
  np.testing.assert_allclose(np.asarray(sched.betas), g["betas"], rtol=0, atol=1e-7)
  np.testing.assert_allclose(np.asarray(sched.alphas_cumprod), g["alphas_cumprod"], rtol=0,
                             atol=1e-7)
  np.testing.assert_allclose(np.asarray(sched.alphas), 1.0 - g["betas"], atol=1e-7)
  np.testing.assert_array_equal(D.inference_timesteps(100, 100), g["timesteps"])
  # Spec §5 closed form.
  abar = lambda s: np.cos((s + 0.008) / 1.008 * np.pi / 2) ** 2
  i = np.arange(100)
  np.testing.assert_allclose(np.asarray(sched.betas),
                             np.minimum(1 - abar((i + 1) / 100) / abar(i / 100), 0.999),
                             rtol=1e-6)
  assert float(sched.betas[-1]) == pytest.approx(0.999)


def test_add_noise_matches_golden(sched, golden):
  g = golden["ddpm"]
  out = D.add_noise(sched, jnp.asarray(g["x0"]), jnp.asarray(g["noise"]), g["t_query"])
  np.testing.assert_allclose(np.asarray(out), g["add_noise"], rtol=0, atol=TOL)


def test_ddpm_posterior_means_every_step(sched, golden):
  p = golden["post"]
  np.testing.assert_array_equal(p["x_T"], golden["ddpm"]["x_T"])
  x = jnp.asarray(p["x_T"])
  step = jax.jit(lambda out, t, x: D.ddpm_step(sched, out, t, x))
  for i, t in enumerate(range(99, -1, -1)):
    prev, mean = step(jnp.asarray(p["eps_seq"][i]), t, x)
    np.testing.assert_array_equal(np.asarray(prev), np.asarray(mean))  # no noise given
    np.testing.assert_allclose(np.asarray(mean), p["means"][i], rtol=0, atol=TOL,
                               err_msg=f"step {i} (t={t})")
    x = jnp.asarray(p["means"][i])  # golden input of step i+1
  var = np.asarray(jax.vmap(lambda t: D.ddpm_variance(sched, t))(jnp.arange(99, -1, -1)))
  np.testing.assert_allclose(var, p["variances"], rtol=1e-5, atol=1e-12)


def test_ddpm_step_adds_noise_only_for_t_positive(sched):
  x = jnp.full((2, 3, 4), 0.2)
  out = jnp.zeros_like(x)
  noise = jnp.ones_like(x)
  for t in (0, 1, 50):
    prev, mean = D.ddpm_step(sched, out, t, x, noise)
    std = float(jnp.sqrt(D.ddpm_variance(sched, t)))
    expect = 0.0 if t == 0 else std
    np.testing.assert_allclose(np.asarray(prev - mean), expect, atol=1e-6)
    if t > 0:
      assert std > 1e-3


def test_sample_ddpm_scan_reproduces_golden_chain(sched, golden):
  p = golden["post"]
  eps = jnp.asarray(p["eps_seq"])

  def replay(x, t):  # model output of step i is eps_seq[i], i = 99 - t
    return eps[99 - t[0].astype(jnp.int32)]

  fn = jax.jit(lambda rng: D.sample_ddpm(replay, sched, rng, p["x_T"].shape,
                                         add_noise_in_steps=False, x_T=jnp.asarray(p["x_T"])))
  out = fn(jax.random.key(0))
  np.testing.assert_allclose(np.asarray(out), p["means"][-1], rtol=0, atol=TOL)


def test_ddim_trajectory_matches_golden(sched, golden):
  d = golden["ddim"]
  np.testing.assert_array_equal(D.inference_timesteps(100, 10), d["timesteps"])
  np.testing.assert_allclose(np.asarray(sched.alphas_cumprod), d["alphas_cumprod"], atol=1e-7)
  x = jnp.asarray(d["trajectory"][0])
  np.testing.assert_array_equal(np.asarray(x), d["x_T"])
  for i, t in enumerate(d["timesteps"]):
    x, _ = D.ddim_step(sched, jnp.asarray(d["eps_seq"][i]), int(t), int(t) - 10, x)
    np.testing.assert_allclose(np.asarray(x), d["trajectory"][i + 1], rtol=0, atol=TOL,
                               err_msg=f"DDIM step {i} (t={t})")
  # The same through the scanned sampler.
  eps = jnp.asarray(d["eps_seq"])
  seen = []

  def replay(x, t):
    seen.append(t)
    return eps[9 - (t[0] / 10).astype(jnp.int32)]

  out = D.sample_ddim(replay, sched, jax.random.key(0), d["x_T"].shape,
                      x_T=jnp.asarray(d["x_T"]))
  np.testing.assert_allclose(np.asarray(out), d["trajectory"][-1], rtol=0, atol=TOL)
  assert len(seen) == 1  # traced once inside the scan


def test_diffusers_direct_parity(sched):
  diffusers = pytest.importorskip("diffusers")
  torch = pytest.importorskip("torch")
  for sch in ("squaredcos_cap_v2", "linear", "scaled_linear"):
    ref = diffusers.DDPMScheduler(num_train_timesteps=100, beta_schedule=sch)
    ours = D.make_schedule(100, sch)
    np.testing.assert_allclose(np.asarray(ours.betas), ref.betas.numpy(), atol=1e-7)
    np.testing.assert_allclose(np.asarray(ours.alphas_cumprod), ref.alphas_cumprod.numpy(),
                               atol=1e-7)
  rng = np.random.default_rng(0)
  x = rng.standard_normal((2, 8, 10)).astype(np.float32)
  eps = rng.standard_normal((2, 8, 10)).astype(np.float32)
  ddim = diffusers.DDIMScheduler(num_train_timesteps=100, beta_schedule="squaredcos_cap_v2",
                                 clip_sample=True)
  ddim.set_timesteps(10)
  ddpm = diffusers.DDPMScheduler(num_train_timesteps=100, beta_schedule="squaredcos_cap_v2",
                                 clip_sample=True, variance_type="fixed_small")
  ddpm.set_timesteps(100)
  for t in (99, 50, 3, 0):
    ref = ddpm.step(torch.from_numpy(eps), t, torch.from_numpy(x)).pred_original_sample
    _, x0 = D.ddim_step(sched, eps, t, t - 1, x)  # same x̂0 formula
    np.testing.assert_allclose(np.asarray(x0), ref.numpy(), atol=TOL)
  ref0 = ddpm.step(torch.from_numpy(eps), 0, torch.from_numpy(x)).prev_sample  # no noise at t=0
  np.testing.assert_allclose(np.asarray(D.ddpm_step(sched, eps, 0, x)[0]), ref0.numpy(), atol=TOL)
  for t in (90, 40, 0):
    ref = ddim.step(torch.from_numpy(eps), t, torch.from_numpy(x)).prev_sample
    ours, _ = D.ddim_step(sched, eps, t, t - 10, x)
    np.testing.assert_allclose(np.asarray(ours), ref.numpy(), atol=TOL)


# ----------------------------------------------------------------------------------------
# Schedules and timesteps
# ----------------------------------------------------------------------------------------

def test_linear_schedules_and_errors():
  lin = D.make_schedule(1000, "linear", 1e-4, 0.02)
  assert float(lin.betas[0]) == pytest.approx(1e-4, rel=1e-6)
  assert float(lin.betas[-1]) == pytest.approx(0.02, rel=1e-6)
  np.testing.assert_allclose(np.diff(np.asarray(lin.betas, np.float64)), 0.0199 / 999, rtol=1e-3)
  sl = D.make_schedule(1000, "scaled_linear", 0.00085, 0.012)
  assert float(sl.betas[0]) == pytest.approx(0.00085, rel=1e-5)
  assert float(sl.betas[-1]) == pytest.approx(0.012, rel=1e-5)
  np.testing.assert_allclose(np.sqrt(np.asarray(sl.betas, np.float64))[500],
                             np.sqrt(0.00085) + 500 / 999 * (np.sqrt(0.012) - np.sqrt(0.00085)),
                             rtol=1e-5)
  np.testing.assert_allclose(np.asarray(lin.alphas_cumprod),
                             np.cumprod(1.0 - np.asarray(lin.betas, np.float64)), rtol=1e-5)
  with pytest.raises(ValueError):
    D.make_schedule(100, "cosine")
  with pytest.raises(ValueError):
    D.inference_timesteps(100, 101)


def test_inference_timesteps_leading():
  np.testing.assert_array_equal(D.inference_timesteps(100, 10), np.arange(90, -1, -10))
  np.testing.assert_array_equal(D.inference_timesteps(100, 10, steps_offset=1),
                                np.arange(91, 0, -10))
  np.testing.assert_array_equal(D.inference_timesteps(100, 16), np.arange(0, 96, 6)[::-1])


def test_schedule_is_pytree_with_static_T(sched):
  leaves, treedef = jax.tree.flatten(sched)
  assert len(leaves) == 3
  doubled = jax.tree.map(lambda a: a * 2, sched)
  assert doubled.num_train_steps == 100
  out = jax.jit(lambda s: s.alphas_cumprod[s.num_train_steps - 1])(sched)
  assert float(out) == pytest.approx(float(sched.alphas_cumprod[99]))


# ----------------------------------------------------------------------------------------
# Diffusion loss
# ----------------------------------------------------------------------------------------

def test_diffusion_loss_oracle_zero_and_wrong_model_one(sched):
  x0 = _uniform(1, (64, 16, 10))
  rng = jax.random.key(2)

  def oracle(x_t, t):  # recovers ε from x_t and x0
    ac = sched.alphas_cumprod[t.astype(jnp.int32)][:, None, None]
    return (x_t - jnp.sqrt(ac) * x0) / jnp.sqrt(1 - ac)

  l_oracle = float(jax.jit(lambda r: D.loss(oracle, sched, x0, r))(rng))
  assert np.isfinite(l_oracle) and l_oracle < 1e-8
  l_zero = float(D.loss(lambda x, t: jnp.zeros_like(x), sched, x0, rng))
  assert 0.9 < l_zero < 1.1  # E[ε²] = 1
  l_x0 = float(D.loss(lambda x, t: x0, sched, x0, rng, prediction_type="sample"))
  assert l_x0 == 0.0
  l_bad = float(D.loss(lambda x, t: x, sched, x0, rng, prediction_type="sample"))
  assert l_bad > 1e-3
  with pytest.raises(ValueError):
    D.loss(lambda x, t: x[:, :1], sched, x0, rng)


def test_diffusion_loss_timesteps_and_inputs(sched):
  x0 = jnp.zeros((4096, 2, 3))
  seen = {}

  def record(x_t, t):
    seen["x_t"], seen["t"] = x_t, t
    return jnp.zeros_like(x_t)

  D.loss(record, sched, x0, jax.random.key(3))
  t = np.asarray(seen["t"])
  assert t.dtype == np.float32 and t.shape == (4096,)
  assert np.all(t == np.round(t)) and t.min() == 0 and t.max() == 99
  assert abs(t.mean() - 49.5) < 2.0
  # x0 = 0 → x_t = sqrt(1 - ᾱ_t)·ε: the per-row std follows the schedule.
  ac = np.asarray(sched.alphas_cumprod)[t.astype(int)]
  ratio = np.asarray(seen["x_t"]).reshape(4096, -1) / np.sqrt(1 - ac)[:, None]
  assert 0.95 < ratio.std() < 1.05


def test_num_noise_samples_share_timestep(sched):
  b, k = 16, 8
  x0 = _uniform(4, (b, 5, 3))
  x_t, t, noise, x0_rep = D.training_inputs(sched, x0, jax.random.key(5), num_noise_samples=k)
  assert x_t.shape == (b * k, 5, 3) and t.shape == (b * k,) and t.dtype == jnp.int32
  tk = np.asarray(t).reshape(b, k)
  assert np.all(tk == tk[:, :1]) and len(np.unique(tk[:, 0])) > 1
  np.testing.assert_array_equal(np.asarray(x0_rep).reshape(b, k, 5, 3)[:, 3], np.asarray(x0))
  nk = np.asarray(noise).reshape(b, k, -1)
  assert np.abs(nk[:, 0] - nk[:, 1]).min() > 0  # independent ε per replica

  x0_k = jnp.repeat(x0, k, axis=0)
  seen = []

  def oracle(xt, tt):
    seen.append(tt.shape)
    ac = sched.alphas_cumprod[tt.astype(jnp.int32)][:, None, None]
    return (xt - jnp.sqrt(ac) * x0_k) / jnp.sqrt(1 - ac)

  assert float(D.loss(oracle, sched, x0, jax.random.key(6), num_noise_samples=k)) < 1e-8
  assert seen == [(b * k,)]
  # Wrong replica layout (tile instead of repeat) must not give zero loss.
  x0_tiled = jnp.tile(x0, (k, 1, 1))

  def wrong(xt, tt):
    ac = sched.alphas_cumprod[tt.astype(jnp.int32)][:, None, None]
    return (xt - jnp.sqrt(ac) * x0_tiled) / jnp.sqrt(1 - ac)

  assert float(D.loss(wrong, sched, x0, jax.random.key(6), num_noise_samples=k)) > 1e-2


# ----------------------------------------------------------------------------------------
# Diffusion samplers
# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("sampler,steps", [("ddpm", 100), ("ddpm", 10), ("ddim", 10)])
def test_samplers_recover_point_mass(sched, sampler, steps):
  target = jnp.linspace(-0.9, 0.9, 6 * 4).reshape(1, 6, 4)
  fn = _point_mass_eps(sched, target)
  if sampler == "ddpm":
    run = lambda r: D.sample_ddpm(fn, sched, r, (3, 6, 4), num_inference_steps=steps)
  else:
    run = lambda r: D.sample_ddim(fn, sched, r, (3, 6, 4), num_inference_steps=steps)
  out = jax.jit(run)(jax.random.key(7))
  assert out.shape == (3, 6, 4) and out.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(out), np.broadcast_to(target, (3, 6, 4)), atol=1e-4)


def test_clip_sample_clips_x0(sched):
  target = jnp.full((1, 2, 2), 3.0)  # outside [-1, 1]
  fn = _point_mass_eps(sched, target)
  clipped = D.sample_ddpm(fn, sched, jax.random.key(8), (2, 2, 2))
  np.testing.assert_allclose(np.asarray(clipped), 1.0, atol=1e-4)
  free = D.sample_ddim(fn, sched, jax.random.key(8), (2, 2, 2), clip_sample=False)
  np.testing.assert_allclose(np.asarray(free), 3.0, atol=1e-3)


def test_ddpm_gaussian_target_statistics(sched):
  sig = 0.5

  def eps_gauss(x, t):  # E[ε | x_t] for data ~ N(0, sig²)
    ac = sched.alphas_cumprod[t.astype(jnp.int32)][:, None, None]
    return jnp.sqrt(1 - ac) * x / (ac * sig ** 2 + 1 - ac)

  run = jax.jit(lambda r, n: D.sample_ddpm(eps_gauss, sched, r, (256, 16, 10), clip_sample=False,
                                           add_noise_in_steps=n), static_argnums=1)
  out = np.asarray(run(jax.random.key(9), True))
  assert abs(out.mean()) < 0.02 and 0.45 < out.std() < 0.53  # fixed_small: ≈ 0.48
  det = np.asarray(run(jax.random.key(9), False))
  assert det.std() < 0.01  # without the per-step noise the chain collapses to the mean


def test_samplers_compile_to_one_scan(sched):
  calls = []

  def model(x, t):
    calls.append(1)
    return 0.1 * x * t[:, None, None] / 100.0

  shape = (2, 16, 10)
  rng = jax.random.key(0)
  ddpm = lambda r: D.sample_ddpm(model, sched, r, shape)
  ddim = lambda r: D.sample_ddim(model, sched, r, shape, num_inference_steps=10)
  assert _scan_lengths(ddpm, rng) == [100]
  assert len(calls) == 1  # the model is traced once (scan body), not unrolled
  assert _scan_lengths(ddim, rng) == [10]
  assert _scan_lengths(lambda r: D.sample_ddpm(model, sched, r, shape, num_inference_steps=25),
                       rng) == [25]
  compiled = jax.jit(ddpm).lower(rng).compile()
  out = compiled(rng)
  assert out.shape == shape and out.dtype == jnp.float32 and np.all(np.isfinite(out))
  np.testing.assert_allclose(np.asarray(out), np.asarray(jax.jit(ddpm)(rng)), atol=1e-6)
  assert not np.allclose(np.asarray(out), np.asarray(jax.jit(ddpm)(jax.random.key(1))))


def test_sampler_timesteps_seen_by_model(sched):
  seen = []

  def model(x, t):
    jax.debug.callback(lambda tt: seen.append(np.asarray(tt)), t)
    return jnp.zeros_like(x)

  jax.block_until_ready(D.sample_ddim(model, sched, jax.random.key(0), (3, 2, 2)))
  jax.effects_barrier()
  assert [float(s[0]) for s in seen] == list(range(90, -1, -10))
  assert all(s.shape == (3,) and s.dtype == np.float32 for s in seen)


# ----------------------------------------------------------------------------------------
# Flow head
# ----------------------------------------------------------------------------------------

def test_flow_loss_oracle_and_time_distribution():
  x0 = _uniform(10, (4096, 4, 3))
  seen = {}

  def oracle(x_t, ts):
    seen["t"] = ts
    t = (ts / 100.0)[:, None, None]
    return (x_t - x0) / t  # = ε − x0 on the path x_t = t·ε + (1 − t)·x0

  assert float(F.loss(oracle, x0, jax.random.key(11))) < 1e-6
  t = np.asarray(seen["t"]) / 100.0
  assert t.shape == (4096,) and t.min() >= 0.001 - 1e-6 and t.max() <= 1.0 + 1e-6
  assert abs(t.mean() - (0.6 * 0.999 + 0.001)) < 0.02  # Beta(1.5, 1) mean 0.6
  assert abs(np.mean(t < 0.5) - 0.5 ** 1.5) < 0.03  # Beta(1.5, 1) CDF = t^1.5
  l_zero = float(F.loss(lambda x, t: jnp.zeros_like(x), x0, jax.random.key(11)))
  assert 1.2 < l_zero < 1.45  # E|ε − x0|² = 1 + 1/3

  # time_scale is honoured, replicas share t.
  x_t, tr, noise, x0_rep = F.training_inputs(x0[:8], jax.random.key(12), num_noise_samples=4)
  assert x_t.shape == (32, 4, 3)
  assert np.all(np.asarray(tr).reshape(8, 4) == np.asarray(tr).reshape(8, 4)[:, :1])
  np.testing.assert_allclose(np.asarray(x_t), np.asarray(
      tr[:, None, None] * noise + (1 - tr[:, None, None]) * x0_rep), atol=1e-6)
  x0k = jnp.repeat(x0[:8], 4, axis=0)
  l_k = F.loss(lambda x, ts: (x - x0k) / (ts / 7.0)[:, None, None], x0[:8], jax.random.key(12),
               time_scale=7.0, num_noise_samples=4)
  assert float(l_k) < 1e-6


def test_flow_sampler_point_mass_exact():
  target = jnp.linspace(-2.0, 2.0, 16 * 10).reshape(1, 16, 10)
  seen = []

  def v(x, ts):
    seen.append(ts)
    return (x - target) / (ts / 100.0)[:, None, None]

  out = jax.jit(lambda r: F.sample(v, r, (4, 16, 10), num_steps=10))(jax.random.key(13))
  assert out.shape == (4, 16, 10) and out.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(out), np.broadcast_to(target, out.shape), atol=1e-5)
  clipped = F.sample(v, jax.random.key(13), (4, 16, 10), num_steps=10, clip_sample=True)
  np.testing.assert_allclose(np.asarray(clipped), np.clip(np.broadcast_to(target, out.shape),
                                                          -1, 1), atol=1e-5)
  assert _scan_lengths(lambda r: F.sample(v, r, (4, 16, 10), num_steps=7),
                       jax.random.key(0)) == [7]


def test_flow_sampler_time_grid():
  seen = []

  def v(x, ts):
    jax.debug.callback(lambda tt: seen.append(float(tt[0])), ts)
    return jnp.zeros_like(x)

  jax.block_until_ready(F.sample(v, jax.random.key(0), (2, 3, 1), num_steps=4, time_scale=100.0))
  jax.effects_barrier()
  np.testing.assert_allclose(seen, [100.0, 75.0, 50.0, 25.0], atol=1e-4)


def test_flow_sampler_gaussian_target():
  mu, sg = 0.3, 0.5

  def v(x, ts):  # exact marginal velocity for data ~ N(mu, sg²)
    t = (ts / 100.0)[:, None, None]
    return -mu + (t - (1 - t) * sg ** 2) / (t ** 2 + (1 - t) ** 2 * sg ** 2) * (x - (1 - t) * mu)

  out = np.asarray(jax.jit(lambda r: F.sample(v, r, (256, 16, 10), num_steps=100))(
      jax.random.key(14)))
  assert abs(out.mean() - mu) < 0.01
  assert abs(out.std() - sg) < 0.015


# ----------------------------------------------------------------------------------------
# Head objects
# ----------------------------------------------------------------------------------------

def test_make_head_from_dict_and_configdict(sched):
  ml_collections = pytest.importorskip("ml_collections")
  h = heads.make_head({"type": "diffusion"})
  assert isinstance(h, heads.DiffusionHead)
  assert h.sampler == "ddpm" and h.inference_steps == 100 and h.clip_sample
  cfg = ml_collections.ConfigDict(heads.head_defaults())
  cfg.diffusion.sampler, cfg.diffusion.num_noise_samples = "ddim", 8
  h2 = heads.make_head(cfg)
  assert h2.sampler == "ddim" and h2.inference_steps == 10 and h2.num_noise_samples == 8
  hash(h2)  # hashable → usable as a jit static argument
  f = heads.make_head({"type": "flow", "flow": {"num_steps": 5, "time_scale": 50.0}})
  assert isinstance(f, heads.FlowHead) and f.num_steps == 5 and f.time_scale == 50.0
  assert not f.clip_sample and f.num_noise_samples == 1
  cases = [({"type": "diffusion", "diffusion": {"num_inferense_steps": 10}},
            "diffusion.num_inferense_steps: not a field of DiffusionHead"),
           ({"type": "diffusion", "flow": {"sampler": "ddim"}}, "flow.sampler: not a field"),
           ({"type": "gan"}, "type: must be one of"),
           ({"diffusion": {"sampler": "euler"}}, "diffusion.sampler: must be 'ddpm' or 'ddim'"),
           ({"type": "flow", "flow": {"num_steps": 0}}, "flow.num_steps: must be >= 1"),
           ({"type": "flow", "flow": {"num_steps": 2}, "sampler": "ddim"},
            "sampler: unknown head key"),
           ({"type": "flow", "flow": 3}, "flow: must be a mapping"),
           ({"type": "diffusion", "diffusion": {"num_inference_steps": 101}},
            r"diffusion.num_inference_steps: 101 must be in \[1, num_train_steps=100\]")]
  for bad, match in cases:
    with pytest.raises(heads.HeadConfigError, match=match) as e:
      heads.make_head(bad)
    assert isinstance(e.value, ValueError) and "\n" not in str(e.value)


def test_head_defaults_are_the_dataclasses():
  import dataclasses
  d = heads.head_defaults()
  assert set(d) == {"type", "diffusion", "flow"} and d["type"] == "diffusion"
  for kind, cls in (("diffusion", heads.DiffusionHead), ("flow", heads.FlowHead)):
    assert d[kind] == {f.name: f.default for f in dataclasses.fields(cls)}
  assert heads.make_head(d) == heads.DiffusionHead()
  assert heads.make_head(dict(d, type="flow")) == heads.FlowHead()


# The flat head section of checkpoint metas, shipped experts and exports written before the
# typed sections (what `head_defaults()` returned then).
OLD_FLAT = {"type": "diffusion", "num_train_steps": 100, "beta_schedule": "squaredcos_cap_v2",
            "beta_start": 1e-4, "beta_end": 0.02, "sampler": "ddpm", "num_inference_steps": None,
            "clip_sample": True, "clip_range": 1.0, "num_noise_samples": 1,
            "prediction_type": "epsilon", "eta": 0.0, "set_alpha_to_one": True,
            "steps_offset": 0, "flow_num_steps": 10, "time_scale": 100.0,
            "flow_clip_sample": False}


def test_old_flat_head_reads_as_its_typed_form():
  assert heads.typed_head_config(OLD_FLAT) == heads.head_defaults()
  flat = dict(OLD_FLAT, sampler="ddim", num_inference_steps=5, num_noise_samples=8,
              clip_range=2.0, flow_num_steps=3, flow_clip_sample=True, time_scale=50.0)
  typed = heads.typed_head_config(flat)
  assert typed["diffusion"]["clip_sample"] and typed["flow"] == {
      "num_steps": 3, "time_scale": 50.0, "clip_sample": True, "clip_range": 2.0,
      "num_noise_samples": 8}   # clip_range / num_noise_samples were shared by both heads
  for kind in ("diffusion", "flow"):
    assert heads.make_head(dict(flat, type=kind)) == heads.make_head(dict(typed, type=kind))
  assert heads.make_head(dict(flat, type="flow")) == heads.FlowHead(
      num_steps=3, time_scale=50.0, clip_sample=True, clip_range=2.0, num_noise_samples=8)
  # partial flat dicts (old tests, old metas) keep working; unknown keys name themselves
  assert heads.make_head({"type": "flow", "flow_num_steps": 5}).num_steps == 5
  with pytest.raises(heads.HeadConfigError, match="num_inferense_steps: unknown head key"):
    heads.make_head({"type": "diffusion", "num_inferense_steps": 10})
  # overrides (serve / evaluate flags) apply section by section onto either form
  merged = heads.merge_head_config(OLD_FLAT, {"diffusion": {"sampler": "ddim"},
                                              "flow": {"num_steps": 4}})
  assert merged["diffusion"]["sampler"] == "ddim" and merged["flow"]["num_steps"] == 4
  assert merged["type"] == "diffusion" and merged["diffusion"]["num_train_steps"] == 100


@pytest.mark.parametrize("cfg,length", [
    ({"type": "diffusion", "diffusion": {"sampler": "ddpm"}}, 100),
    ({"type": "diffusion", "diffusion": {"sampler": "ddim", "num_inference_steps": 5}}, 5),
    ({"type": "flow", "flow": {"num_steps": 3}}, 3),
])
def test_head_loss_and_sample(sched, cfg, length):
  head = heads.make_head(cfg)
  target = jnp.linspace(-0.5, 0.5, 8 * 3).reshape(1, 8, 3)
  if cfg["type"] == "diffusion":
    model = _point_mass_eps(sched, target)
  else:
    model = lambda x, ts: (x - target) / (ts / 100.0)[:, None, None]
  x0 = jnp.broadcast_to(target, (5, 8, 3))

  @jax.jit
  def step(rng):
    return head.loss(model, x0, rng)

  l = float(step(jax.random.key(0)))
  assert np.isfinite(l) and l < 1e-6
  assert _scan_lengths(lambda r: head.sample(model, r, (5, 8, 3)), jax.random.key(0)) == [length]
  out = jax.jit(head.sample, static_argnums=(0, 2))(model, jax.random.key(1), (5, 8, 3))
  np.testing.assert_allclose(np.asarray(out), np.asarray(x0), atol=1e-4)
