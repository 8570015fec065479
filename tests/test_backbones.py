"""Backbones and shared layers (docs/method.md §2.1, §3). Big models are only shape-traced
(jax.eval_shape); forward passes use small configs to stay fast on CPU."""
import functools
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from decoupled_jax import backbones as bb
from decoupled_jax.backbones.unified import CondDecoderLayer
from decoupled_jax.training import partition
from decoupled_jax.training.partition import FreezeRule
from decoupled_jax.nn import (Conv1d, ConvTranspose1d, ParallelLinear, RMSNorm, TorchLinear,
                              RMS_NORM_EPS, sinusoidal_embedding)

DA = 10
M = 1e6


def _abstract_params(model, horizon, n_obs, cond_dim, batch=2):
  x = jax.ShapeDtypeStruct((batch, horizon, DA), jnp.float32)
  t = jax.ShapeDtypeStruct((batch,), jnp.float32)
  c = jax.ShapeDtypeStruct((batch, n_obs, cond_dim), jnp.float32)
  return jax.eval_shape(model.init, jax.random.key(0), x, t, c)["params"]


def _split_counts(model, params):
  """(trainable, frozen) backbone leaves under the stage-2 freeze rule, keyed by paths
  relative to the backbone, computed by the training partition itself."""
  rule = FreezeRule("backbone", bb.expert_interface(model).conditioning_patterns)
  tree = {"backbone": params}
  train, frozen = partition.split(tree, rule.frozen_paths(tree))
  strip = lambda d: {k[len("backbone/"):]: v for k, v in d.items()}
  return strip(train), strip(frozen)


def _jit_apply(module):
  """Jitted ``module.apply``; ``train`` is static, ``rngs`` a traced pytree."""
  return jax.jit(module.apply, static_argnames=("train",))


def _inputs(horizon, n_obs, cond_dim, batch=2, seed=0):
  rng = np.random.default_rng(seed)
  x = jnp.asarray(rng.normal(size=(batch, horizon, DA)), jnp.float32)
  t = jnp.asarray(rng.integers(0, 100, size=(batch,)), jnp.float32)
  c = jnp.asarray(rng.normal(size=(batch, n_obs, cond_dim)), jnp.float32)
  return x, t, c


# ---------------------------------------------------------------------------------------
# Shared layers
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("dim", [16, 128, 256])
def test_sinusoidal_embedding_formula(dim):
  t = np.array([0.0, 1.0, 7.0, 42.0, 99.0], np.float32)
  half = dim // 2
  freqs = np.exp(-math.log(10000.0) * np.arange(half) / (half - 1))
  ref = np.concatenate([np.sin(t[:, None] * freqs), np.cos(t[:, None] * freqs)], axis=-1)
  out = np.asarray(sinusoidal_embedding(jnp.asarray(t), dim))
  assert out.shape == (5, dim)
  np.testing.assert_allclose(out, ref, atol=2e-5)
  np.testing.assert_allclose(out[0, :half], 0.0)  # t = 0 -> sin 0, cos 1
  np.testing.assert_allclose(out[0, half:], 1.0)


@pytest.mark.parametrize("length,k,stride,pad,dil", [
    (4, 5, 1, 2, 1),   # T < kernel: the U-Net's lowest level
    (16, 5, 1, 2, 1),
    (16, 3, 2, 1, 1),  # Downsample1d
    (7, 3, 2, 1, 2),   # odd length, dilation
    (5, 1, 1, 0, 1),   # 1x1 conv
])
def test_conv1d_matches_lax_conv(length, k, stride, pad, dil):
  x = jnp.asarray(np.random.default_rng(length * 100 + k).normal(size=(3, length, 6)), jnp.float32)
  kp = jax.random.key(k, impl="unsafe_rbg")
  layer = Conv1d(8, k, stride=stride, padding=pad, dilation=dil)
  params = jax.jit(layer.init)(kp, x)["params"]
  assert params["kernel"].shape == (k, 6, 8)
  out = jax.jit(layer.apply)({"params": params}, x)
  ref = jax.lax.conv_general_dilated(
      x, params["kernel"], window_strides=(stride,), padding=[(pad, pad)],
      rhs_dilation=(dil,), dimension_numbers=("NWC", "WIO", "NWC"),
      precision=jax.lax.Precision.HIGHEST) + params["bias"]
  assert out.shape == ref.shape
  np.testing.assert_allclose(np.asarray(out), np.asarray(ref), rtol=1e-5, atol=1e-5)


def _conv_transpose_reference(x, w, b, stride, pad):
  """torch ConvTranspose1d by its definition: y[i*s + j] += x[i] @ w[j], crop pad per side."""
  x, w = np.asarray(x, np.float64), np.asarray(w, np.float64)
  bsz, length, _ = x.shape
  k, _, c_out = w.shape
  full = np.zeros((bsz, (length - 1) * stride + k, c_out))
  for i in range(length):
    for j in range(k):
      full[:, i * stride + j] += x[:, i] @ w[j]
  return full[:, pad: full.shape[1] - pad] + np.asarray(b)


@pytest.mark.parametrize("length,k,stride,pad", [
    (4, 4, 2, 1),  # Upsample1d: 4 -> 8
    (1, 4, 2, 1),
    (5, 3, 2, 0),  # k not a multiple of s
    (5, 5, 3, 2),
    (6, 3, 1, 1),
])
def test_conv_transpose1d_matches_definition(length, k, stride, pad):
  x = jnp.asarray(np.random.default_rng(length * 10 + k).normal(size=(2, length, 5)), jnp.float32)
  kp = jax.random.key(k, impl="unsafe_rbg")
  layer = ConvTranspose1d(7, k, stride=stride, padding=pad)
  params = jax.jit(layer.init)(kp, x)["params"]
  out = np.asarray(jax.jit(layer.apply)({"params": params}, x))
  ref = _conv_transpose_reference(x, params["kernel"], params["bias"], stride, pad)
  assert out.shape == ref.shape == (2, (length - 1) * stride - 2 * pad + k, 7)
  np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
  # Second, independent reference: input-dilated correlation with the flipped kernel.
  lax_ref = jax.lax.conv_general_dilated(
      x, params["kernel"][::-1], window_strides=(1,), padding=[(k - 1 - pad, k - 1 - pad)],
      lhs_dilation=(stride,), dimension_numbers=("NWC", "WIO", "NWC"),
      precision=jax.lax.Precision.HIGHEST) + params["bias"]
  np.testing.assert_allclose(out, np.asarray(lax_ref), rtol=1e-5, atol=1e-5)


def _check_uniform(w, bound, tight=True):
  w = np.asarray(w)
  assert np.abs(w).max() <= bound * (1 + 1e-6)
  if tight:  # enough samples to approach the bound and match U's std
    assert np.abs(w).max() > 0.97 * bound
    assert abs(w.std() / (bound / math.sqrt(3)) - 1) < 0.05


def test_torch_default_init_bounds():
  key = jax.random.key(1, impl="unsafe_rbg")
  # Linear(200 -> 300): fan_in 200 for weight and bias.
  p = jax.jit(TorchLinear(300).init)(key, jnp.zeros((1, 200)))["params"]
  assert p["kernel"].shape == (200, 300)
  _check_uniform(p["kernel"], 1 / math.sqrt(200))
  _check_uniform(p["bias"], 1 / math.sqrt(200), tight=False)
  assert np.abs(np.asarray(p["bias"])).max() > 0.5 / math.sqrt(200)
  # Conv1d(40 -> 64, k5): fan_in = 40 * 5.
  p = jax.jit(Conv1d(64, 5, padding=2).init)(key, jnp.zeros((1, 8, 40)))["params"]
  _check_uniform(p["kernel"], 1 / math.sqrt(200))
  _check_uniform(p["bias"], 1 / math.sqrt(200), tight=False)
  # ConvTranspose1d(64 -> 40, k4): torch's fan_in is C_out * k = 160, not C_in * k = 256.
  p = jax.jit(ConvTranspose1d(40, 4, stride=2, padding=1).init)(key, jnp.zeros((1, 4, 64)))["params"]
  _check_uniform(p["kernel"], 1 / math.sqrt(160))
  _check_uniform(p["bias"], 1 / math.sqrt(160), tight=False)


def test_parallel_linear_is_per_index_affine_with_standard_normal_init():
  x = jnp.asarray(np.random.default_rng(0).normal(size=(3, 16, 10)), jnp.float32)
  p = ParallelLinear(64).init(jax.random.key(1, impl="unsafe_rbg"), x)["params"]
  assert p["kernel"].shape == (16, 10, 64) and p["bias"].shape == (16, 64)
  for leaf in (p["kernel"], p["bias"]):
    assert abs(float(jnp.std(leaf)) - 1.0) < 0.05 and abs(float(jnp.mean(leaf))) < 0.05
  out = ParallelLinear(64).apply({"params": p}, x)
  ref = np.stack([np.asarray(x[:, h]) @ np.asarray(p["kernel"][h]) + np.asarray(p["bias"][h])
                  for h in range(16)], axis=1)
  np.testing.assert_allclose(np.asarray(out), ref, rtol=1e-5, atol=1e-4)


def test_rms_norm_uses_float32_eps():
  x = jnp.array([[1e-4, -2e-4, 3e-4]], jnp.float32)
  out = RMSNorm().apply({}, x)
  ref = np.asarray(x) / np.sqrt(np.mean(np.asarray(x) ** 2) + np.finfo(np.float32).eps)
  assert RMS_NORM_EPS == np.finfo(np.float32).eps
  np.testing.assert_allclose(np.asarray(out), ref, rtol=1e-5)


def test_attention_dropout_acts_on_attention_weights():
  from decoupled_jax.nn import MultiHeadAttention
  mha = MultiHeadAttention(num_heads=2, dropout=0.5)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 6, 8)), jnp.float32)
  v = mha.init(jax.random.key(0, impl="unsafe_rbg"), x, x, x)
  det = mha.apply(v, x, x, x)
  drop = mha.apply(v, x, x, x, deterministic=False,
                   rngs={"dropout": jax.random.key(1, impl="unsafe_rbg")})
  assert not np.allclose(np.asarray(det), np.asarray(drop))
  # Mask: query 0 may only see key 0, so its output ignores every other token.
  mask = jnp.zeros((6, 6), bool).at[:, 0].set(True).at[1:].set(True)
  o1 = mha.apply(v, x, x, x, mask)
  o2 = mha.apply(v, x, x.at[:, 1:].add(5.0), x.at[:, 1:].add(5.0), mask)
  np.testing.assert_allclose(np.asarray(o1[:, 0]), np.asarray(o2[:, 0]), atol=1e-6)


def test_masks():
  mm = np.asarray(bb.memory_mask(10, 3))
  for t in range(10):
    for s in range(3):
      assert mm[t, s] == (t >= s - 1)
  pm = np.asarray(bb.prefix_mask(3, 4))
  assert pm[:3, :3].all() and not pm[:3, 3:].any()          # prefix sees only prefix
  assert pm[3:, :3].all()                                   # actions see every prefix token
  np.testing.assert_array_equal(pm[3:, 3:], np.tril(np.ones((4, 4), bool)))  # causal actions


# ---------------------------------------------------------------------------------------
# Parameter counts and the stage-2 trainable split (full size, shape-traced only)
# ---------------------------------------------------------------------------------------
DP_C_BLOCKS = ([f"down_{i}_block_{j}" for i in range(3) for j in range(2)]
               + [f"mid_block_{j}" for j in range(2)]
               + [f"up_{i}_block_{j}" for i in range(2) for j in range(2)])


@pytest.mark.parametrize("name,n_obs,cond_dim,film,film_spec_m,backbone_spec_m", [
    ("dp_c", 2, 137, 11_554_816, 11.55, 244.06),   # stage 2 (g = 128 + 274)
    ("dp_c", 16, 8, 7_368_704, 7.37, 244.06),      # stage 1 (g = 128 + 128)
    ("dp_c_droid", 2, 512, 18_364_416, 18.36, 61.54),  # LIBERO stage 2 (g = 256 + 1024)
    ("dp_c_droid", 16, 10, 5_978_112, 5.98, 61.54),    # LIBERO stage 1, eepose (g = 256 + 160)
])
def test_dp_c_param_counts_and_film_split(name, n_obs, cond_dim, film, film_spec_m,
                                          backbone_spec_m):
  model = bb.make_backbone(name)
  params = _abstract_params(model, 16, n_obs, cond_dim)
  train, frozen = _split_counts(model, params)
  if name == "dp_c":
    assert bb.count_params(frozen) == 244_057_226  # docs/method.md §3.1, the paper's "244M"
  assert abs(bb.count_params(frozen) / M - backbone_spec_m) < 0.005
  assert bb.count_params(train) == film
  assert abs(film / M - film_spec_m) < 0.005
  # Exactly the FiLM Linear (kernel + bias) of all 12 residual blocks.
  assert set(train) == {f"{blk}/cond_film/{leaf}" for blk in DP_C_BLOCKS
                        for leaf in ("kernel", "bias")}
  assert len(train) == 24
  assert "step_encoder/linear_0/kernel" in frozen and "final_conv/kernel" in frozen
  assert "up_1_upsample/kernel" in frozen and "down_0_downsample/kernel" in frozen
  assert "up_2_upsample/kernel" not in frozen  # only two up levels


@pytest.mark.parametrize("n_obs,cond_dim,film,film_spec_m", [
    (2, 137, 8_699_904, 8.70),   # stage 2, g = 530
    (16, 8, 6_307_840, 6.31),    # stage 1, g = 384
    (2, 512, 20_987_904, 20.99),  # LIBERO stage 2, g = 1280
])
def test_dp_mlp_param_counts_and_film_split(n_obs, cond_dim, film, film_spec_m):
  model = bb.make_backbone("dp_mlp")
  params = _abstract_params(model, 16, n_obs, cond_dim)
  train, frozen = _split_counts(model, params)
  assert bb.count_params(frozen) == 4_782_346  # docs/method.md §3.5
  assert bb.count_params(train) == film and abs(film / M - film_spec_m) < 0.005
  assert set(train) == {f"block_{i}/cond_film/{leaf}" for i in range(8)
                        for leaf in ("kernel", "bias")}
  assert params["input_emb"]["kernel"].shape == (16, DA, 256)
  assert params["input_emb"]["bias"].shape == (16, 256)


DP_T_TRAINABLE = {"cond_obs_emb/kernel", "cond_obs_emb/bias", "cond_pos_emb", "pos_emb",
                  "cond_encoder/linear_0/kernel", "cond_encoder/linear_0/bias",
                  "cond_encoder/linear_1/kernel", "cond_encoder/linear_1/bias"}


@pytest.mark.parametrize("name", ["dp_t", "unified_cross_attn"])
def test_dp_t_param_counts_and_trainable_set(name):
  model = bb.make_backbone(name)
  # Stage 1 (cond 8, To = 10): the reference's total "~8.97 M".
  p1 = _abstract_params(model, 10, 10, 8)
  assert bb.count_params(p1) == 8_966_666 and abs(8_966_666 / M - 8.97) < 0.005
  # Stage 2 (cond 137, To = 2).
  p2 = _abstract_params(model, 10, 2, 137)
  train, frozen = _split_counts(model, p2)
  assert set(train) == DP_T_TRAINABLE
  assert bb.count_params(train) == 564_224
  assert bb.count_params(p2) == 8_997_642
  decoder = sum(bb.count_params(v) for k, v in p2.items() if k.startswith("layer_"))
  assert decoder == 8_427_520 and abs(decoder / M - 8.43) < 0.005         # docs/method.md: decoder 8.43 M
  cond_mlp = bb.count_params(p2["cond_encoder"])
  assert cond_mlp == 525_568 and abs(cond_mlp / M - 0.53) < 0.005        # docs/method.md: condition MLP
  assert p2["cond_pos_emb"].shape == (1, 3, 256) and p2["pos_emb"].shape == (1, 10, 256)
  # Cross-attention weights stay frozen (docs/method.md §2.1).
  assert "layer_0/cross_attn/q_proj/kernel" in frozen
  if name == "dp_t":  # LIBERO loader: pos_emb and the condition MLP stay frozen (§2.1)
    rule = FreezeRule("backbone", model.CONDITIONING_PATTERNS,
                      extra_frozen=(r"^backbone/pos_emb$", r"^backbone/cond_encoder/"))
    libero = set(partition.flatten({"backbone": p2})) - rule.frozen_paths({"backbone": p2})
    assert libero == {"backbone/cond_obs_emb/kernel", "backbone/cond_obs_emb/bias",
                      "backbone/cond_pos_emb"}


@pytest.mark.parametrize("n_obs,cond_dim,used_film_m", [(2, 137, 2.17), (10, 8, 1.38)])
def test_dp_t_film_param_counts_and_trainable_set(n_obs, cond_dim, used_film_m):
  model = bb.make_backbone("dp_t_film")
  params = _abstract_params(model, 10, n_obs, cond_dim)
  train, frozen = _split_counts(model, params)
  g = 256 + n_obs * cond_dim
  one_film = (g * 512 + 512) * 8
  assert abs(one_film / M - used_film_m) < 0.005
  backbone = bb.count_params(params) - 2 * one_film  # includes pos_emb and unused parts
  assert backbone == 8_957_450 and abs(backbone / M - 8.96) < 0.005
  assert set(train) == ({f"layer_{i}/cond_film_{w}/{leaf}" for i in range(8)
                         for w in ("ffn", "self_attn") for leaf in ("kernel", "bias")}
                        | {"pos_emb"})
  assert len(train) == 33 and bb.count_params(train) == 2 * one_film + 2560
  assert "layer_0/cross_attn/k_proj/kernel" in frozen  # constructed but unused


# (backbone without conditioning layers, conditioning layers) in M, docs/method.md §3.6 (stage 2).
UNIFIED_SPEC = {
    "film": (6.85, 4.35, 6_852_106, 4_349_952, 33, ("cond_film_sa", "cond_film_ffn")),
    "adaln_zero": (6.84, 6.52, 6_843_914, 6_524_928, 17, ("cond_adaln_modulation",)),
    "adaln": (6.84, 4.35, 6_843_914, 4_349_952, 17, ("cond_adaln_modulation",)),
    "ada_rms_norm": (6.84, 4.35, 6_843_914, 4_349_952, 17, ("cond_adarmsnorm_modulation",)),
    "additive": (6.85, 2.17, 6_852_106, 2_174_976, 33, ("cond_proj_sa", "cond_proj_ff")),
    "lora_cond": (6.85, 0.21, 6_852_106, 205_568, 49,
                  ("cond_lora_down", "cond_lora_up_q", "cond_lora_up_v")),
}


@pytest.mark.parametrize("method", sorted(UNIFIED_SPEC))
def test_unified_global_vector_param_counts(method):
  spec_bb, spec_cond, n_bb, n_cond, n_leaves, modules = UNIFIED_SPEC[method]
  model = bb.make_backbone("unified", conditioning=method)
  params = _abstract_params(model, 10, 2, 137)
  train, frozen = _split_counts(model, params)
  cond = {k: v for k, v in train.items() if k != "pos_emb"}
  assert bb.count_params(cond) == n_cond and abs(n_cond / M - spec_cond) < 0.005
  assert bb.count_params(params) - n_cond == n_bb and abs(n_bb / M - spec_bb) < 0.005
  assert len(train) == n_leaves and "pos_emb" in train
  assert set(cond) == {f"layer_{i}/{mod}/{leaf}" for i in range(8) for mod in modules
                       for leaf in ("kernel", "bias")}
  assert "step_encoder/linear_0/kernel" in frozen  # the step MLP is frozen
  if method in ("adaln_zero", "adaln", "ada_rms_norm"):  # norms without affine params
    assert not any(re.search(r"/norm\d/", k) for k in partition.flatten(params))


def test_unified_prefix_trainable_set():
  model = bb.make_backbone("unified", conditioning="prefix")
  params = _abstract_params(model, 10, 2, 137)
  train, frozen = _split_counts(model, params)
  assert set(train) == DP_T_TRAINABLE
  assert not any("cross_attn" in k for k in frozen)
  assert bb.count_params(params) == 8_997_642 - 8 * (263_168 + 512)  # DP-T minus cross-attn


def test_registry():
  assert {"dp_c", "dp_c_droid", "dp_mlp", "dp_t", "dp_t_film", "unified"} <= set(bb.BACKBONES)
  assert isinstance(bb.make_backbone("dp_c_droid"), bb.ConditionalUnet1D)
  assert bb.make_backbone("dp_c_droid").down_dims == (256, 512, 1024)
  assert bb.make_backbone("dp_c", down_dims=(8, 16, 32)).down_dims == (8, 16, 32)
  assert bb.make_backbone("unified_film").conditioning == "film"
  with pytest.raises(ValueError):
    bb.make_backbone("unified")
  with pytest.raises(KeyError):
    bb.make_backbone("nope")
  for cls in (bb.ConditionalUnet1D, bb.MLPForDiffusion, bb.TransformerForDiffusion,
              bb.TransformerForDiffusionFiLM, bb.UnifiedTransformer):
    assert cls.CONDITIONING_PATTERNS and "§3" in cls.__doc__


# ---------------------------------------------------------------------------------------
# Forward passes (small configs). Compiling is the cost on CPU (a fresh XLA executable per
# shape, ~0.5 s per jax.random call), so forward tests use host-made (numpy) params of the
# traced shapes and one cached jitted apply per backbone; init values are tested on layers.
# ---------------------------------------------------------------------------------------
SMALL_T = dict(n_layer=2, n_head=4, n_emb=32)
SMALL = {
    "dp_c": (dict(down_dims=(8, 16, 32), diffusion_step_embed_dim=8), 16),
    "dp_mlp": (dict(n_layer=2, n_emb=32), 16),
    "dp_t": (SMALL_T, 10),
    "dp_t_film": (SMALL_T, 10),
    **{f"unified_{m}": (SMALL_T, 10) for m in bb.CONDITIONING_METHODS},
}


def _host_params(abstract, seed=0):
  """Random params of the given shapes made with numpy (no XLA compilation)."""
  rng = np.random.default_rng(seed)

  def make(path, s):
    leaf = str(getattr(path[-1], "key", path[-1]))
    if leaf == "kernel":
      v = rng.normal(size=s.shape) / math.sqrt(max(1, int(np.prod(s.shape[:-1]))))
    elif leaf == "scale":
      v = 1.0 + 0.1 * rng.normal(size=s.shape)
    else:
      v = 0.1 * rng.normal(size=s.shape)
    return jnp.asarray(v, jnp.float32)

  return jax.tree_util.tree_map_with_path(make, abstract)


@functools.lru_cache(maxsize=None)
def _small(name):
  overrides, horizon = SMALL[name]
  model = bb.make_backbone(name, **overrides)
  x, t, c = _inputs(horizon, 2, 7)
  params = _host_params(_abstract_params(model, horizon, 2, 7))
  return model, {"params": params}, _jit_apply(model), (x, t, c)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_forward_shape(name):
  model, variables, fwd, (x, t, c) = _small(name)
  out = fwd(variables, x, t, c)
  assert out.shape == x.shape and bool(jnp.all(jnp.isfinite(out)))
  # The condition and the timestep reach the output.
  out_c = fwd(variables, x, t, c + 1.0)
  out_t = fwd(variables, x, t + 7.0, c)
  assert not np.allclose(np.asarray(out), np.asarray(out_c))
  assert not np.allclose(np.asarray(out), np.asarray(out_t))


@pytest.mark.parametrize("name", ["dp_mlp", "dp_t", "unified_lora_cond"])
def test_dropout_only_in_train_mode(name):
  model, variables, fwd, (x, t, c) = _small(name)
  out = fwd(variables, x, t, c)
  # rbg keys: threefry-based dropout masks take ~10x longer to compile on XLA:CPU.
  r1 = {"dropout": jax.random.key(1, impl="unsafe_rbg")}
  r2 = {"dropout": jax.random.key(2, impl="unsafe_rbg")}
  o1 = fwd(variables, x, t, c, train=True, rngs=r1)
  o2 = fwd(variables, x, t, c, train=True, rngs=r2)
  assert o1.shape == x.shape
  assert not np.allclose(np.asarray(out), np.asarray(o1))
  assert not np.allclose(np.asarray(o1), np.asarray(o2))
  np.testing.assert_array_equal(np.asarray(out), np.asarray(fwd(variables, x, t, c)))


@pytest.mark.parametrize("rate", [0.1, 0.3])
def test_dropout_16_bit_masks_rate_and_unbiased_scale(rate):
  from decoupled_jax.nn import Dropout
  x = jnp.ones((4, 1001, 3), jnp.float32)          # odd element count: the last word's half
  rngs = {"dropout": jax.random.key(0, impl="unsafe_rbg")}
  y = np.asarray(Dropout(rate).apply({}, x, deterministic=False, rngs=rngs))
  thr = round(rate * 65536) / 65536                  # the effective rate (16-bit threshold)
  assert abs(thr - rate) < 2 ** -17
  frac = (y == 0).mean()
  assert abs(frac - thr) < 4 * math.sqrt(thr * (1 - thr) / y.size)
  np.testing.assert_allclose(np.unique(y[y != 0]), 1 / (1 - thr), rtol=1e-6)
  # both halves of each word are used and independent of each other
  words = y.reshape(-1)
  n = words.size
  lo, hi = words[: (n + 1) // 2][: n // 2] == 0, words[(n + 1) // 2:] == 0
  assert abs(lo.mean() - hi.mean()) < 6 * math.sqrt(thr / n)
  assert abs((lo & hi).mean() - thr * thr) < 6 * math.sqrt(thr * thr / n)
  other = Dropout(rate).apply({}, x, deterministic=False,
                              rngs={"dropout": jax.random.key(1, impl="unsafe_rbg")})
  assert not np.array_equal(y, np.asarray(other))
  np.testing.assert_array_equal(Dropout(rate).apply({}, x, deterministic=True), x)
  xb = x.astype(jnp.bfloat16)
  assert Dropout(rate).apply({}, xb, deterministic=False, rngs=rngs).dtype == jnp.bfloat16


def test_gelu_is_torchs_erf_form():
  from decoupled_jax.nn import gelu
  x = np.linspace(-10, 10, 4001)
  ref = x * 0.5 * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))
  np.testing.assert_allclose(np.asarray(gelu(jnp.asarray(x, jnp.float32))), ref, atol=2e-6,
                             rtol=1e-6)
  g = jax.vmap(jax.grad(gelu))(jnp.asarray(x, jnp.float32))
  dref = 0.5 * (1 + np.vectorize(math.erf)(x / math.sqrt(2))) + x * np.exp(-x * x / 2) / math.sqrt(2 * math.pi)
  np.testing.assert_allclose(np.asarray(g), dref, atol=2e-6)


def test_dp_c_layout_keeps_horizon_and_rejects_bad_lengths():
  model, variables, fwd, (x, t, c) = _small("dp_c")
  assert fwd(variables, x, t, c).shape == (2, 16, DA)
  # Asymmetric up path (16 -> 8 -> 4 -> 8 -> 16): up blocks take [h; skip] channels.
  p = variables["params"]
  assert p["up_0_block_0"]["conv_block_0"]["conv"]["kernel"].shape == (5, 64, 16)
  assert p["up_1_block_0"]["conv_block_0"]["conv"]["kernel"].shape == (5, 32, 8)
  assert p["up_0_upsample"]["kernel"].shape == (4, 16, 16)
  assert p["down_1_downsample"]["kernel"].shape == (3, 16, 16)
  assert p["down_0_block_0"]["residual_conv"]["kernel"].shape == (1, DA, 8)
  assert "residual_conv" not in p["down_0_block_1"]
  assert p["final_conv"]["kernel"].shape == (1, 8, DA)
  assert p["down_0_block_0"]["cond_film"]["kernel"].shape == (8 + 14, 16)
  with pytest.raises(ValueError):
    jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 10, DA)), jnp.zeros((1,)),
                   c[:1])


def _layer_init(layer, *args):
  return layer.init(jax.random.key(0, impl="unsafe_rbg"), *args)


def test_transformer_layer_init_distribution():
  layer = CondDecoderLayer("film", n_head=4, d_ff=256, dropout=0.3)
  x, g = jnp.zeros((1, 10, 64)), jnp.zeros((1, 100))
  p = _layer_init(layer, x, g)["params"]
  for w in (p["linear1"]["kernel"], p["linear2"]["kernel"], p["self_attn"]["q_proj"]["kernel"],
            p["self_attn"]["out_proj"]["kernel"], p["cond_film_sa"]["kernel"]):
    assert abs(float(jnp.std(w)) / 0.02 - 1) < 0.08 and abs(float(jnp.mean(w))) < 0.002
  for b in (p["linear1"]["bias"], p["self_attn"]["v_proj"]["bias"], p["cond_film_ffn"]["bias"]):
    assert not np.any(np.asarray(b))
  np.testing.assert_array_equal(np.asarray(p["norm1"]["scale"]), 1.0)
  np.testing.assert_array_equal(np.asarray(p["norm2"]["bias"]), 0.0)


ZERO_LEAVES = {
    "adaln_zero": [("cond_adaln_modulation", w) for w in ("kernel", "bias")],
    "additive": [(m, w) for m in ("cond_proj_sa", "cond_proj_ff") for w in ("kernel", "bias")],
    "lora_cond": [(m, w) for m in ("cond_lora_up_q", "cond_lora_up_v") for w in ("kernel", "bias")],
}


@pytest.mark.parametrize("method", sorted(ZERO_LEAVES) + ["adaln"])
def test_zero_inits_make_conditioning_inert_at_init(method):
  layer = CondDecoderLayer(method, n_head=4, d_ff=64, dropout=0.3)
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(2, 10, 16)), jnp.float32)
  g = jnp.asarray(rng.normal(size=(2, 30)), jnp.float32)
  v = _layer_init(layer, x, g)
  fwd = jax.jit(layer.apply)
  out, out_g = fwd(v, x, g), fwd(v, x, 3.0 * g + 1.0)
  if method == "adaln":  # control: standard init, the condition acts from step one
    assert not np.allclose(np.asarray(out), np.asarray(out_g))
    return
  for mod, leaf in ZERO_LEAVES[method]:
    assert not np.any(np.asarray(v["params"][mod][leaf])), (mod, leaf)
  np.testing.assert_allclose(np.asarray(out), np.asarray(out_g), atol=1e-6)
  if method == "adaln_zero":  # gates are zero: the whole block is the identity
    np.testing.assert_array_equal(np.asarray(out), np.asarray(x))
    assert set(v["params"]) == {"self_attn", "linear1", "linear2", "cond_adaln_modulation"}
  else:
    assert not np.allclose(np.asarray(out), np.asarray(x))
  if method == "lora_cond":  # lora_down is N(0, 0.02) with zero bias, not zero
    down = v["params"]["cond_lora_down"]
    assert np.any(np.asarray(down["kernel"])) and not np.any(np.asarray(down["bias"]))


@pytest.mark.parametrize("name", ["dp_t", "dp_t_film", "unified_prefix", "unified_film",
                                  "unified_adaln_zero", "unified_lora_cond"])
def test_causal_self_attention(name):
  """Changing action token k leaves outputs < k unchanged (dropout off) and changes k."""
  model, variables, fwd, (x, t, c) = _small(name)
  out = np.asarray(fwd(variables, x, t, c))
  k = 6
  out2 = np.asarray(fwd(variables, x.at[:, k].add(1.0), t, c))
  np.testing.assert_allclose(out[:, :k], out2[:, :k], atol=1e-6)
  assert np.abs(out[:, k] - out2[:, k]).max() > 1e-4


def test_dp_t_memory_mask_hides_later_observations():
  model, variables, fwd, (x, t, c) = _small("dp_t")
  out = np.asarray(fwd(variables, x, t, c))
  # Condition tokens [time, obs0, obs1]: obs1 is token s = 2, visible to action tokens t >= 1.
  out2 = np.asarray(fwd(variables, x, t, c.at[:, 1].add(10.0)))
  np.testing.assert_allclose(out[:, :1], out2[:, :1], atol=1e-6)
  assert np.abs(out[:, 1:] - out2[:, 1:]).max() > 1e-4
  # The time token is visible to every action token.
  out3 = np.asarray(fwd(variables, x, t + 11.0, c))
  assert np.abs(out3[:, 0] - out[:, 0]).max() > 1e-4


def test_dp_t_film_unused_modules_do_not_affect_output():
  model, variables, fwd, (x, t, c) = _small("dp_t_film")
  out = np.asarray(fwd(variables, x, t, c))
  p = jax.tree_util.tree_map(lambda a: a, variables["params"])  # shallow copy of the dicts
  for i in range(2):
    layer = dict(p[f"layer_{i}"])
    layer["cond_film_self_attn"] = jax.tree_util.tree_map(lambda a: a + 1.0,
                                                          layer["cond_film_self_attn"])
    layer["cross_attn"] = jax.tree_util.tree_map(lambda a: a * 3.0 + 1.0, layer["cross_attn"])
    p[f"layer_{i}"] = layer
  np.testing.assert_array_equal(out, np.asarray(fwd({"params": p}, x, t, c)))
  layer = dict(p["layer_1"])
  layer["cond_film_ffn"] = jax.tree_util.tree_map(lambda a: a + 1.0, layer["cond_film_ffn"])
  p["layer_1"] = layer
  assert not np.allclose(out, np.asarray(fwd({"params": p}, x, t, c)))


def _set(tree, path, value):
  """Functional update of a nested dict at a '/'-path."""
  key, _, rest = path.partition("/")
  new = dict(tree)
  new[key] = _set(tree[key], rest, value) if rest else value
  return new


def test_film_is_scale_times_h_plus_bias():
  """FiLM is gamma*h + beta (not (1 + gamma)*h): with gamma = 0 the modulated features are
  replaced by beta."""
  from decoupled_jax.backbones.mlp_film import FiLMMLPBlock
  from decoupled_jax.backbones.unet1d import ConditionalResidualBlock1D
  rng = np.random.default_rng(0)
  g = jnp.asarray(rng.normal(size=(2, 12)), jnp.float32)
  key = jax.random.key(0, impl="unsafe_rbg")

  # DP-C residual block: gamma = 0 -> block(x) - residual_conv(x) does not depend on x.
  blk = ConditionalResidualBlock1D(16, kernel_size=5, n_groups=8)
  x1 = jnp.asarray(rng.normal(size=(2, 8, 4)), jnp.float32)
  x2 = jnp.asarray(rng.normal(size=(2, 8, 4)), jnp.float32)
  p = blk.init(key, x1, g)["params"]
  beta = jnp.asarray(rng.normal(size=(16,)), jnp.float32)
  p = _set(p, "cond_film/kernel", jnp.zeros_like(p["cond_film"]["kernel"]))
  p = _set(p, "cond_film/bias", jnp.concatenate([jnp.zeros(16), beta]))
  res = lambda x: x @ p["residual_conv"]["kernel"][0] + p["residual_conv"]["bias"]  # noqa: E731
  d1 = blk.apply({"params": p}, x1, g) - res(x1)
  d2 = blk.apply({"params": p}, x2, g) - res(x2)
  np.testing.assert_allclose(np.asarray(d1), np.asarray(d2), atol=1e-5)

  # DP-MLP block: gamma = beta = 0 -> LayerNorm(x + linear2.bias).
  mlp = FiLMMLPBlock(d_ff=32, dropout=0.1)
  p = mlp.init(key, x1, g)["params"]
  p = _set(p, "cond_film/kernel", jnp.zeros_like(p["cond_film"]["kernel"]))
  p = _set(p, "cond_film/bias", jnp.zeros_like(p["cond_film"]["bias"]))
  y = x1 + p["linear2"]["bias"]
  mu, var = y.mean(-1, keepdims=True), y.var(-1, keepdims=True)
  ref = (y - mu) / jnp.sqrt(var + 1e-5) * p["norm"]["scale"] + p["norm"]["bias"]
  np.testing.assert_allclose(np.asarray(mlp.apply({"params": p}, x1, g)), np.asarray(ref),
                             atol=1e-5)

  # Unified film layer: gamma = beta = 0 on both sub-layers -> the identity.
  layer = CondDecoderLayer("film", n_head=2, d_ff=16, dropout=0.3)
  x = jnp.asarray(rng.normal(size=(2, 5, 8)), jnp.float32)
  p = layer.init(key, x, g)["params"]
  for name in ("cond_film_sa", "cond_film_ffn"):
    p = _set(p, f"{name}/bias", jnp.zeros_like(p[name]["bias"]))
    p = _set(p, f"{name}/kernel", jnp.zeros_like(p[name]["kernel"]))
  np.testing.assert_array_equal(np.asarray(layer.apply({"params": p}, x, g)), np.asarray(x))
