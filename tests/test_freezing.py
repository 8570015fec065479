"""Stage-2 freezing through the real train step, per backbone (spec §2.1).

Static part: on full-size policies (shape-traced, nothing allocated) the training partition
freezes exactly the spec's backbone set and trains the conditioning pathway and the whole
observation encoder. Dynamic part: on small versions of every backbone, several stage-2 steps
from a stage-1 load leave every frozen leaf bitwise unchanged while every conditioning leaf
moves and has a non-zero gradient (gradients reach it *through* the frozen backbone).
"""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from decoupled_jax import backbones, config_lib
from decoupled_jax.encoders import ObservationEncoder
from decoupled_jax.heads import make_head
from decoupled_jax.training import partition, trainer
from decoupled_jax.training.policy import Policy, init_policy, make_denoise_fn
from decoupled_jax.training.train_state import make_train_step

IMAGE_KEYS = ("agentview_image", "robot0_eye_in_hand_image")
LOWDIM = {"robot0_eef_pos": 3, "robot0_eef_quat": 4, "robot0_gripper_qpos": 2}  # 128 + 9 = 137
ENCODER_PARAMS = 2 * 11_197_088                                                  # spec §4.1

# (registry name, overrides) -> (frozen backbone params, trainable backbone params,
# trainable backbone leaves) in the paper's stage-2 MimicGen setting (spec §2.1, §3).
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
  frozen = partition.frozen_paths(params, mode="backbone",
                                  conditioning_patterns=type(backbone).CONDITIONING_PATTERNS)
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
  assert partition.frozen_paths(params, mode="none", conditioning_patterns=()) == frozenset()


SMALL = {"dp_c": dict(down_dims=(16, 32, 64), diffusion_step_embed_dim=16),
         "dp_mlp": dict(n_layer=2, n_emb=32),
         "dp_t": dict(n_layer=2, n_head=2, n_emb=32),
         "dp_t_film": dict(n_layer=2, n_head=2, n_emb=32),
         "unified": dict(n_layer=2, n_head=2, n_emb=32)}


# DP-T-FiLM builds a FiLM for self-attention that its config leaves unused (spec §3.4): it is in
# the trainable set but never receives a gradient (only AdamW's weight decay moves its kernel;
# PyTorch skips grad-less tensors entirely, a difference without effect on the outputs).
UNUSED = {"dp_t_film": "cond_film_self_attn"}


def _config(mode):
  return ml_collections.ConfigDict(dict(
      seed=0, freeze=config_lib.freeze_config(mode), ema=config_lib.ema_config(),
      optimizer=dict(config_lib.optimizer_config("dp_mlp", "finetune").to_dict(),
                     learning_rate=1e-3, warmup_steps=0)))


@pytest.mark.parametrize("key", list(EXPECTED), ids=lambda k: "-".join((k[0],) + k[1]))
def test_stage2_steps_freeze_backbone_and_train_conditioning(key):
  name, cond = key
  backbone = _backbone(name, cond, **SMALL[name])
  horizon = 16 if name in ("dp_c", "dp_mlp") else 10
  policy = Policy(ObservationEncoder(lowdim_keys=("state",)), backbone)
  head = make_head(config_lib.head_config("diffusion"))
  rng = np.random.default_rng(0)
  batch = {"obs": {"state": jnp.asarray(rng.uniform(-1, 1, (8, 2, 9)), jnp.float32)},
           "actions": jnp.asarray(rng.uniform(-1, 1, (8, horizon, 10)), jnp.float32)}
  # "Stage 1": the same backbone trained on another condition width (8-D x horizon frames).
  stage1 = init_policy(Policy(ObservationEncoder(lowdim_keys=("state",)), backbone),
                       jax.random.key(7), {"state": jnp.zeros((1, horizon, 8))}, (horizon, 10))
  cfg = _config("backbone")
  state, tx, _ = trainer.build_initial_state(cfg, policy, batch["obs"], (horizon, 10),
                                             type(backbone).CONDITIONING_PATTERNS, 10)
  params, copied = partition.copy_by_path(state.params, stage1,
                                          skip_patterns=type(backbone).CONDITIONING_PATTERNS)
  assert copied
  state = state.replace(params=params)
  before = partition.flatten(state.params)
  step = jax.jit(make_train_step(policy, head, tx))
  key_ = jax.random.key(0)
  for _ in range(4):
    state, metrics = step(state, batch, key_)
  after = partition.flatten(state.params)
  assert set(after) == set(before)
  unused = lambda path: name in UNUSED and UNUSED[name] in path
  for path in before:
    unchanged = bool(jnp.array_equal(before[path], after[path]))
    if unused(path):
      continue
    assert unchanged == (path in state.frozen), (path, "frozen" if path in state.frozen else "trainable")
  # Gradients of every conditioning leaf, at the current params, through the frozen backbone.
  trainable, frozen = partition.split(state.params, state.frozen)
  def loss(tr):
    p = partition.merge(tr, jax.lax.stop_gradient(frozen))
    c = policy.apply({"params": p}, batch["obs"], method=Policy.encode)
    fn = make_denoise_fn(policy, p, c, train=False)
    return head.loss(fn, batch["actions"], jax.random.key(3))
  grads = jax.grad(loss)(trainable)
  assert set(grads) == set(trainable) and len(grads) > 0
  for path, g in grads.items():
    assert path.startswith("backbone/"), path
    assert (float(jnp.abs(g).max()) > 0) != unused(path), path
