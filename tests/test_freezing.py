"""Stage-2 freezing through the real train step, per backbone (docs/method.md §2.1).

Static part: on full-size policies (shape-traced, nothing allocated) the training partition
freezes exactly the reference's backbone set and trains the conditioning pathway and the whole
observation encoder. Dynamic part: on small versions of every backbone, several stage-2 steps
from a stage-1 load leave every frozen leaf bitwise unchanged while every conditioning leaf
moves and has a non-zero gradient (gradients reach it *through* the frozen backbone).
"""
import dataclasses
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from decoupled_jax import backbones, config_lib
from decoupled_jax.backbones import expert_interface
from decoupled_jax.encoders import ObservationEncoder
from decoupled_jax.heads import make_head
from decoupled_jax.pipelines.finetune import random_frozen_rule
from decoupled_jax.training import partition, trainer
from decoupled_jax.training.partition import FreezeRule
from decoupled_jax.training.policy import Policy, init_policy
from decoupled_jax.training.stage import Stage
from decoupled_jax.training.train_state import make_loss_fn, make_train_step
from decoupled_jax.training.weight_loaders import copy_backbone

IMAGE_KEYS = ("agentview_image", "robot0_eye_in_hand_image")
LOWDIM = {"robot0_eef_pos": 3, "robot0_eef_quat": 4, "robot0_gripper_qpos": 2}  # 128 + 9 = 137
ENCODER_PARAMS = 2 * 11_197_088                                                  # docs/method.md §4.1

# (registry name, overrides) -> (frozen backbone params, trainable backbone params,
# trainable backbone leaves) in the paper's stage-2 MimicGen setting (docs/method.md §2.1, §3).
EXPECTED = {
    ("dp_c", ()): (244_057_226, 11_554_816, 24),
    ("dp_mlp", ()): (4_782_346, 8_699_904, 16),
    ("dp_t", ()): (8_433_418, 564_224, 8),
    ("dp_t_film", ()): (8_954_890, 4_352_512, 33),
    ("unified", ("adaln_zero",)): (6_841_354, 6_524_928 + 2_560, 17),
    ("unified", ("adaln",)): (6_841_354, 4_349_952 + 2_560, 17),
    ("unified", ("ada_rms_norm",)): (6_841_354, 4_349_952 + 2_560, 17),
    ("unified", ("film",)): (6_849_546, 4_349_952 + 2_560, 33),
    ("unified", ("additive",)): (6_849_546, 2_174_976 + 2_560, 33),
    ("unified", ("lora_cond",)): (6_849_546, 205_568 + 2_560, 49),
    ("unified", ("cross_attn",)): (8_433_418, 564_224, 8),
    ("unified", ("prefix",)): (6_323_978, 564_224, 8),
}


def _backbone(name, cond, **kw):
  return backbones.make_backbone(name, **(dict(conditioning=cond[0]) if cond else {}), **kw)


def _shapes(policy, obs, horizon):
  x = jax.ShapeDtypeStruct((2, horizon, 10), jnp.float32)
  t = jax.ShapeDtypeStruct((2,), jnp.float32)
  return jax.eval_shape(lambda o, x, t: policy.init(
      {"params": jax.random.key(0), "crop": jax.random.key(1)}, o, x, t)["params"], obs, x, t)


@pytest.mark.parametrize("key", list(EXPECTED), ids=lambda k: "-".join((k[0],) + k[1]))
def test_stage2_partition_counts_full_size(key):
  name, cond = key
  backbone = _backbone(name, cond)
  horizon = 16 if name in ("dp_c", "dp_mlp") else 10
  policy = Policy(ObservationEncoder(image_keys=IMAGE_KEYS, lowdim_keys=tuple(LOWDIM)), backbone)
  obs = {k: jax.ShapeDtypeStruct((2, 2, 84, 84, 3), jnp.uint8) for k in IMAGE_KEYS}
  obs.update({k: jax.ShapeDtypeStruct((2, 2, d), jnp.float32) for k, d in LOWDIM.items()})
  params = _shapes(policy, obs, horizon)
  expert = expert_interface(backbone)
  frozen = FreezeRule("backbone", expert.conditioning_patterns).frozen_paths(params)
  trainable, frozen_part = partition.split(params, frozen)
  count = lambda d: sum(int(np.prod(v.shape)) for v in d.values())
  enc = {k: v for k, v in trainable.items() if k.startswith("encoder/")}
  bb_train = {k: v for k, v in trainable.items() if k.startswith("backbone/")}
  want_frozen, want_train, want_leaves = EXPECTED[key]
  assert count(frozen_part) == want_frozen
  assert all(k.startswith("backbone/") for k in frozen_part)
  assert count(bb_train) == want_train and len(bb_train) == want_leaves
  assert count(enc) == ENCODER_PARAMS
  # Normal training freezes nothing.
  assert FreezeRule("none", expert.conditioning_patterns).frozen_paths(params) == frozenset()


SMALL = {"dp_c": dict(down_dims=(16, 32), diffusion_step_embed_dim=16),
         "dp_mlp": dict(n_layer=2, n_emb=32),
         "dp_t": dict(n_layer=2, n_head=2, n_emb=32),
         "dp_t_film": dict(n_layer=2, n_head=2, n_emb=32),
         "unified": dict(n_layer=2, n_head=2, n_emb=32)}


# DP-T-FiLM builds a FiLM for self-attention that its config leaves unused (§3.4): it is in
# the trainable set but never receives a gradient.
UNUSED = {"dp_t_film": "cond_film_self_attn"}


# Which backbone leaves keep their fresh init when stage 1 (condition 8-D x H frames) is loaded
# into stage 2 (9-D x 2 frames here): the conditioning leaves whose shape depends on the
# condition width, plus the LoRA conditioning the reference re-initialises (§2.1). Every
# other backbone leaf is copied -- conditioning biases, pos_emb and DP-T's condition MLP too.
SHAPE_DEPENDENT = {
    "dp_c": r"(^|/)cond_film/kernel$", "dp_mlp": r"(^|/)cond_film/kernel$",
    "dp_t": r"^(cond_obs_emb/kernel|cond_pos_emb)$",
    "dp_t_film": r"(^|/)cond_film_(ffn|self_attn)/kernel$",
    "cross_attn": r"^(cond_obs_emb/kernel|cond_pos_emb)$",
    "prefix": r"^(cond_obs_emb/kernel|cond_pos_emb)$",
    "film": r"(^|/)cond_film_(sa|ffn)/kernel$", "adaln_zero": r"(^|/)cond_adaln_modulation/kernel$",
    "adaln": r"(^|/)cond_adaln_modulation/kernel$",
    "ada_rms_norm": r"(^|/)cond_adarmsnorm_modulation/kernel$",
    "additive": r"(^|/)cond_proj_(sa|ff)/kernel$", "lora_cond": r"(^|/)cond_lora_down/kernel$",
}
REINIT = {"lora_cond": r"(^|/)cond_lora_"}


def _variant(key):
  return key[1][0] if key[1] else key[0]


@pytest.mark.parametrize("key", list(EXPECTED), ids=lambda k: "-".join((k[0],) + k[1]))
def test_random_frozen_trains_only_shape_dependent_conditioning(key):
  """§1.3: frozen = every backbone leaf whose name and shape match a random stage-1 model."""
  name, cond = key
  backbone = _backbone(name, cond, **SMALL[name])
  horizon = 16 if name in ("dp_c", "dp_mlp") else 10
  policy = Policy(ObservationEncoder(lowdim_keys=("state",)), backbone)
  obs = {"state": jnp.zeros((1, 2, 9), jnp.float32)}
  rule = random_frozen_rule(FreezeRule("backbone", expert_interface(backbone).conditioning_patterns),
                            policy, obs, horizon)
  params = _shapes(policy, {"state": jax.ShapeDtypeStruct((2, 2, 9), jnp.float32)}, horizon)
  trainable = {p[len("backbone/"):] for p in partition.flatten(params)
               if p.startswith("backbone/") and not rule.is_frozen(p)}
  want = {p for p in (k[len("backbone/"):] for k in partition.flatten(params)
                      if k.startswith("backbone/")) if re.search(SHAPE_DEPENDENT[_variant(key)], p)}
  assert trainable == want and want


@dataclasses.dataclass(frozen=True)
class InMemoryStage1:
  """The stage-1 loader's copy rule applied to params held in memory (no checkpoint I/O)."""
  source: dict
  conditioning_patterns: tuple
  reinit_patterns: tuple

  def load(self, params):
    return copy_backbone(params, self.source, conditioning_patterns=self.conditioning_patterns,
                         reinit_patterns=self.reinit_patterns)


# The train-step test runs every backbone family; four global-vector variants of the unified
# transformer (same code path as adaln_zero) are behind the `slow` marker. Their load
# reports are checked without training by the shape-only test below.
SLOW_DYNAMIC = {("unified", ("adaln",)), ("unified", ("ada_rms_norm",)), ("unified", ("film",)),
                ("unified", ("additive",))}


@pytest.mark.parametrize("key", list(EXPECTED), ids=lambda k: "-".join((k[0],) + k[1]))
def test_stage1_load_report_per_backbone(key):
  """Which leaves are copied from stage 1 and which keep their fresh init (§2.1), shapes only."""
  name, cond = key
  backbone = _backbone(name, cond, **SMALL[name])
  expert = expert_interface(backbone)
  horizon = 16 if name in ("dp_c", "dp_mlp") else 10
  stage2 = _shapes(Policy(ObservationEncoder(lowdim_keys=("state",)), backbone),
                   {"state": jax.ShapeDtypeStruct((2, 2, 9), jnp.float32)}, horizon)
  stage1 = _shapes(Policy(ObservationEncoder(lowdim_keys=("state",)), backbone),
                   {"state": jax.ShapeDtypeStruct((2, horizon, 8), jnp.float32)}, horizon)
  _, report = copy_backbone(stage2, stage1, conditioning_patterns=expert.conditioning_patterns,
                            reinit_patterns=expert.reinit_on_load_patterns)
  variant = _variant(key)
  pattern = SHAPE_DEPENDENT[variant] + ("|" + REINIT[variant] if variant in REINIT else "")
  bb_paths = [p for p in partition.flatten(stage2) if p.startswith("backbone/")]
  assert set(report["fresh"]) == {p for p in bb_paths
                                  if re.search(pattern, p[len("backbone/"):])}
  assert set(report["copied"]) == set(bb_paths) - set(report["fresh"])


@pytest.mark.parametrize("key", [pytest.param(k, marks=pytest.mark.slow) if k in SLOW_DYNAMIC
                                 else k for k in EXPECTED],
                         ids=lambda k: "-".join((k[0],) + k[1]))
def test_stage2_steps_freeze_backbone_and_train_conditioning(key):
  """The real train step, weight decay off: frozen leaves stay bitwise equal, every
  conditioning leaf has a non-zero gradient (through the frozen backbone's activations, which
  a stop_gradient on activations would cut) and moves; the encoder's gradient is non-zero."""
  name, cond = key
  backbone = _backbone(name, cond, **SMALL[name])
  expert = expert_interface(backbone)
  horizon = 16 if name in ("dp_c", "dp_mlp") else 10
  policy = Policy(ObservationEncoder(lowdim_keys=("state",)), backbone)
  rng = np.random.default_rng(0)
  batch = {"obs": {"state": jnp.asarray(rng.uniform(-1, 1, (8, 2, 9)), jnp.float32)},
           "actions": jnp.asarray(rng.uniform(-1, 1, (8, horizon, 10)), jnp.float32)}
  # "Stage 1": the same backbone on another condition width (8-D x horizon frames).
  stage1 = init_policy(Policy(ObservationEncoder(lowdim_keys=("state",)), backbone),
                       jax.random.key(7), {"state": jnp.zeros((1, horizon, 8))}, (horizon, 10))
  cfg = config_lib.finetune_config("decoupled")
  cfg.optimizer.update(learning_rate=1e-3, warmup_steps=0, weight_decay=0.0,
                       encoder_weight_decay=0.0)
  cfg.train.num_steps = 10
  stage = Stage(name="finetune", policy=policy, head=make_head(config_lib.head_config()),
                example_obs=batch["obs"], action_shape=(horizon, 10), meta={},
                freeze=FreezeRule("backbone", expert.conditioning_patterns),
                weights=InMemoryStage1(stage1, expert.conditioning_patterns,
                                       expert.reinit_on_load_patterns),
                no_weight_decay=expert.no_weight_decay_patterns,
                host_batches=lambda start: iter(()))
  state, tx, _, report = trainer.build_initial_state(cfg, stage)
  variant = _variant(key)
  pattern = SHAPE_DEPENDENT[variant] + ("|" + REINIT[variant] if variant in REINIT else "")
  bb_paths = [p for p in partition.flatten(state.params) if p.startswith("backbone/")]
  assert set(report["fresh"]) == {p for p in bb_paths
                                  if re.search(pattern, p[len("backbone/"):])}
  assert set(report["copied"]) == set(bb_paths) - set(report["fresh"])
  frozen_set = state.frozen
  assert frozen_set and all(p.startswith("backbone/") for p in frozen_set)
  assert set(report["copied"]) >= frozen_set      # every frozen leaf comes from stage 1
  before = partition.flatten(state.params)
  step = jax.jit(make_train_step(policy, stage.head, tx))
  for _ in range(3):
    state, _ = step(state, batch, jax.random.key(0))
  after = partition.flatten(state.params)
  unused = lambda path: name in UNUSED and UNUSED[name] in path
  for path in before:
    unchanged = bool(jnp.array_equal(before[path], after[path]))
    if path in frozen_set:
      assert unchanged, (path, "frozen leaf moved")
    else:
      assert unchanged == unused(path), (path, "trainable leaf did not move")
  # Gradients of the train step's own loss at the current params (after a few steps: a
  # zero-initialised LoRA up-projection gives its down-projection no gradient at step 0).
  trainable, frozen = partition.split(state.params, frozen_set)
  grads = jax.jit(jax.grad(make_loss_fn(policy, stage.head)))(trainable, frozen, batch,
                                                              jax.random.key(3))
  assert set(grads) == set(trainable)
  for path, g in grads.items():
    assert path.startswith("backbone/"), path       # the low-dim encoder has no params
    nonzero = float(jnp.abs(g).max()) > 0
    assert nonzero != unused(path), (path, "gradient", nonzero)


def test_encoder_gradient_flows_through_the_frozen_backbone():
  """An image encoder's only path to the loss is the frozen backbone's activations."""
  backbone = _backbone("dp_mlp", (), **SMALL["dp_mlp"])
  expert = expert_interface(backbone)
  enc = ObservationEncoder(image_keys=("agentview_image",), lowdim_keys=(),
                           stage_widths=(8, 8, 8, 8))   # every ResNet stage; narrow compiles fast
  policy = Policy(enc, backbone)
  rng = np.random.default_rng(0)
  batch = {"obs": {"agentview_image": jnp.asarray(rng.integers(0, 255, (2, 2, 84, 84, 3)),
                                                  jnp.uint8)},
           "actions": jnp.asarray(rng.uniform(-1, 1, (2, 16, 10)), jnp.float32)}
  head = make_head(config_lib.head_config())
  cfg = config_lib.finetune_config("random_frozen")
  stage = Stage(name="finetune", policy=policy, head=head, example_obs=batch["obs"],
                action_shape=(16, 10), meta={},
                freeze=FreezeRule("backbone", expert.conditioning_patterns),
                host_batches=lambda start: iter(()))
  state = trainer.build_initial_state(cfg, stage)[0]
  trainable, frozen = partition.split(state.params, state.frozen)
  grads = jax.jit(jax.grad(make_loss_fn(policy, head)))(trainable, frozen, batch,
                                                        jax.random.key(1))
  enc_grads = [float(jnp.abs(g).max()) for p, g in grads.items() if p.startswith("encoder/")]
  assert enc_grads and min(enc_grads) > 0
