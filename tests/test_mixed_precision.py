"""config.compute_dtype='bfloat16': matmuls and convolutions of every backbone and the image
encoder run in bfloat16 while parameters, optimizer state and the loss stay float32.

Tolerance: the bf16 forward pass matches float32 to 3 % of the output's largest magnitude
(measured 0.4-1.7 % on these small models); bf16 keeps 8 bits of mantissa."""
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from decoupled_jax import config_lib
from decoupled_jax.backbones import expert_interface
from decoupled_jax.heads import make_head
from decoupled_jax.training import trainer
from decoupled_jax.training.partition import FreezeRule
from decoupled_jax.training.policy import encode, init_policy, make_denoise_fn, policy_from_config
from decoupled_jax.training.stage import Stage
from decoupled_jax.training.train_state import make_train_step

# DP-C, DP-T and DP-T-FiLM behind the `slow` marker to keep the default suite short.
ARCHS = ["dp_mlp", "unified",
         pytest.param("dp_c", marks=pytest.mark.slow),
         pytest.param("dp_t", marks=pytest.mark.slow),
         pytest.param("dp_t_film", marks=pytest.mark.slow)]


def _policy(arch, dtype, image=False):
  c = config_lib.finetune_config("decoupled", arch, "adaln_zero", obs="image" if image else "lowdim")
  c.backbone.kwargs.update(config_lib.debug_backbone_kwargs(arch))
  c.compute_dtype = dtype
  keys = ("agentview_image",) if image else ()
  return c, policy_from_config(c, keys, ("robot0_eef_pos",))


def _obs(image, b=2):
  rng = np.random.default_rng(0)
  obs = {"robot0_eef_pos": jnp.asarray(rng.uniform(-1, 1, (b, 2, 3)), jnp.float32)}
  if image:
    obs["agentview_image"] = jnp.asarray(rng.integers(0, 255, (b, 2, 84, 84, 3)), jnp.uint8)
  return obs


@pytest.mark.parametrize("arch", ARCHS)
def test_bf16_forward_matches_fp32_and_uses_bf16_matmuls(arch):
  image = arch == "dp_mlp"            # the ResNet encoder once (it is the slow part)
  horizon = config_lib.default_horizon(arch)
  obs = _obs(image)
  x = jnp.asarray(np.random.default_rng(1).normal(size=(2, horizon, 10)), jnp.float32)
  t = jnp.array([3.0, 50.0])
  outs = {}
  for dtype in ("float32", "bfloat16"):
    _, policy = _policy(arch, dtype, image)
    params = init_policy(policy, jax.random.key(0), obs, (horizon, 10))   # float32 either way

    def f(params, obs, x, t):
      cond = encode(policy, params, obs, train=False)
      return make_denoise_fn(policy, params, cond, train=False)(x, t)

    outs[dtype] = np.asarray(jax.jit(f)(params, obs, x, t))
    if dtype == "bfloat16":
      hlo = jax.jit(f).lower(params, obs, x, t).as_text()
      ops = re.findall(r"stablehlo\.(?:dot_general|convolution).*?:\s*\((tensor<[^>]*>), "
                       r"(tensor<[^>]*>)\)", hlo)
      assert ops and not [o for o in ops if "f32" in o[0] or "f32" in o[1]]
  assert outs["bfloat16"].dtype == np.float32
  scale = np.abs(outs["float32"]).max()
  assert np.abs(outs["bfloat16"] - outs["float32"]).max() <= 0.03 * scale


@pytest.mark.parametrize("arch", ["dp_mlp"] + [pytest.param(a, marks=pytest.mark.slow) for a in
                                                ("unified", "dp_c", "dp_t", "dp_t_film")])
def test_bf16_stage2_train_step(arch):
  cfg, policy = _policy(arch, "bfloat16")
  horizon = config_lib.default_horizon(arch)
  expert = expert_interface(policy.backbone)
  obs = _obs(False, 4)
  batch = {"obs": obs, "actions": jnp.asarray(
      np.random.default_rng(2).uniform(-1, 1, (4, horizon, 10)), jnp.float32)}
  stage = Stage(name="finetune", policy=policy, head=make_head(cfg.head), example_obs=obs,
                action_shape=(horizon, 10), meta={},
                freeze=FreezeRule("backbone", expert.conditioning_patterns),
                no_weight_decay=expert.no_weight_decay_patterns,
                host_batches=lambda start: iter(()))
  state, tx, _, _ = trainer.build_initial_state(cfg, stage)
  step = jax.jit(make_train_step(policy, stage.head, tx))
  for _ in range(2):
    state, metrics = step(state, batch, jax.random.key(0))
  assert np.isfinite(float(metrics["loss"])) and float(metrics["grad_norm"]) > 0
  assert metrics["loss"].dtype == jnp.float32
  for leaf in jax.tree.leaves((state.params, state.opt_state, state.ema)):
    if jnp.issubdtype(leaf.dtype, jnp.floating):
      assert leaf.dtype == jnp.float32
