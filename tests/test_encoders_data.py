"""Encoders (crops, ResNet-18/GN, spatial softmax, obs encoder), limits normaliser, window sampler."""
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from decoupled_jax import config_lib
from decoupled_jax.data import rotation
from decoupled_jax.data.episodes import EpisodeData
from decoupled_jax.data.normalizer import (ABCDEFGH_POS_MAX, ABCDEFGH_POS_MIN, FieldStats,
                                           LimitsNormalizer)
from decoupled_jax.data.windows import WindowSampler, prepare_policy_dataset
from decoupled_jax.benchmarks.robosuite import policy_normalizer
from decoupled_jax.backbones.paths import count_params
from decoupled_jax.encoders import (IMAGE_ENCODER_PARAMS, ObservationEncoder, ResNet18Conv,
                                    center_crop, random_crop, spatial_soft_argmax)


# ----------------------------------------------------------------------------- crops
def _coord_images(b, t, h, w):
  """uint8 (b, t, h, w, 3): channel 0 = row, channel 1 = column, channel 2 = b*t index."""
  rows = np.broadcast_to(np.arange(h)[:, None], (h, w))
  cols = np.broadcast_to(np.arange(w)[None, :], (h, w))
  img = np.zeros((b, t, h, w, 3), np.uint8)
  img[..., 0], img[..., 1] = rows, cols
  img[..., 2] = np.arange(b * t).reshape(b, t, 1, 1)
  return jnp.asarray(img)


def test_random_crop_shapes_and_independence():
  img = _coord_images(4, 3, 20, 20)
  out = random_crop(img, jax.random.key(0), 16)
  assert out.shape == (4, 3, 16, 16, 3) and out.dtype == jnp.uint8
  tops, lefts = np.asarray(out[..., 0, 0, 0]), np.asarray(out[..., 0, 0, 1])
  assert tops.min() >= 0 and tops.max() <= 4 and lefts.min() >= 0 and lefts.max() <= 4
  # Each crop is a contiguous window of its own image.
  np.testing.assert_array_equal(np.asarray(out[..., 2]), np.asarray(img[..., :16, :16, 2]))
  np.testing.assert_array_equal(np.asarray(out[..., :, 0, 0]), tops[..., None] + np.arange(16))
  np.testing.assert_array_equal(np.asarray(out[..., 0, :, 1]), lefts[..., None] + np.arange(16))
  off = tops * 5 + lefts                                         # (4, 3) offset codes
  assert any(len(set(off[b])) > 1 for b in range(4))             # differ across timesteps
  assert any(len(set(off[:, t])) > 1 for t in range(3))          # differ across samples
  # Different rng -> different crops; same rng -> same crops.
  np.testing.assert_array_equal(np.asarray(random_crop(img, jax.random.key(0), 16)), np.asarray(out))
  assert not np.array_equal(np.asarray(random_crop(img, jax.random.key(1), 16)), np.asarray(out))


def test_center_crop_deterministic():
  img = _coord_images(2, 2, 84, 84)
  out = center_crop(img, 76)
  assert out.shape == (2, 2, 76, 76, 3)
  assert np.all(np.asarray(out[..., 0, 0, 0]) == 4) and np.all(np.asarray(out[..., 0, 0, 1]) == 4)
  with pytest.raises(ValueError):
    center_crop(img, 90)


# ----------------------------------------------------------------------------- ResNet / softmax
def test_resnet_group_norm_and_feature_map():
  seen = []

  def record(next_fun, args, kwargs, context):
    if isinstance(context.module, nn.GroupNorm) and context.method_name == "__call__":
      seen.append((context.module.num_groups, args[0].shape[-1], context.module.epsilon))
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(record):
    out = jax.eval_shape(lambda x: ResNet18Conv().init_with_output(jax.random.key(0), x)[0],
                         jax.ShapeDtypeStruct((2, 76, 76, 3), jnp.float32))
  assert out.shape == (2, 3, 3, 512)
  assert len(seen) == 20                                         # stem + 16 in blocks + 3 shortcuts
  assert all(g == c // 16 for g, c, _ in seen) and all(eps == 1e-5 for *_, eps in seen)
  assert {c for _, c, _ in seen} == {64, 128, 256, 512}


def test_spatial_soft_argmax_single_peak():
  h, w, k = 5, 7, 3
  lin_x, lin_y = np.linspace(-1, 1, w), np.linspace(-1, 1, h)
  peaks = [(0, 6), (2, 3), (4, 1)]                               # (row, col) per keypoint
  feat = np.full((2, h, w, k), -1e4, np.float32)
  for j, (r, c) in enumerate(peaks):
    feat[:, r, c, j] = 50.0
  out = np.asarray(spatial_soft_argmax(jnp.asarray(feat)))
  assert out.shape == (2, 2 * k)
  expected = np.concatenate([[lin_x[c], lin_y[r]] for r, c in peaks])   # [x0, y0, x1, y1, ...]
  np.testing.assert_allclose(out[0], expected, atol=1e-5)
  # Uniform map -> centre of the grid.
  np.testing.assert_allclose(np.asarray(spatial_soft_argmax(jnp.zeros((1, h, w, k)))), 0.0, atol=1e-6)


def test_encoder_param_count_exact():
  enc = ObservationEncoder(image_keys=("agentview_image", "robot0_eye_in_hand_image"),
                           lowdim_keys=("robot0_eef_pos",))
  obs = {"agentview_image": jax.ShapeDtypeStruct((1, 2, 84, 84, 3), jnp.uint8),
         "robot0_eye_in_hand_image": jax.ShapeDtypeStruct((1, 2, 84, 84, 3), jnp.uint8),
         "robot0_eef_pos": jax.ShapeDtypeStruct((1, 2, 3), jnp.float32)}
  variables, out = jax.eval_shape(
      lambda o: enc.init_with_output({"params": jax.random.key(0)}, o, train=False)[::-1], obs)
  params = variables["params"]
  assert set(params) == {"rgb_agentview_image", "rgb_robot0_eye_in_hand_image"}
  assert set(params["rgb_agentview_image"]) == {"backbone", "pool", "fc"}
  per_cam = count_params(params["rgb_agentview_image"])
  assert per_cam == IMAGE_ENCODER_PARAMS == 11_197_088            # docs/method.md §4.1: 11.20 M per camera
  assert count_params(params) == 2 * 11_197_088                   # 22.39 M for both
  assert out.shape == (1, 2, 64 + 64 + 3)


def _random_params(module, *args, **kwargs):
  """Params of the right shapes filled with numpy noise: avoids compiling the random init
  (threefry init of a ResNet-18 takes 30-60 s to compile on our 2-core CPUs)."""
  shapes = jax.eval_shape(lambda: module.init({"params": jax.random.key(0)}, *args, **kwargs))
  rng = np.random.default_rng(0)
  return jax.tree_util.tree_map(lambda s: jnp.asarray(rng.normal(0, 0.05, s.shape), s.dtype), shapes)


def test_encoder_forward_crops_and_concat_order():
  # 44 -> crop 40 gives a 2x2 final feature map (a 1x1 map makes the keypoints constant).
  enc = ObservationEncoder(image_keys=("cam_a", "cam_b"), lowdim_keys=("p", "q"), crop_size=40)
  rng = np.random.default_rng(0)
  obs = {"cam_a": jnp.asarray(rng.integers(0, 256, (2, 2, 44, 44, 3), dtype=np.uint8)),
         "cam_b": jnp.asarray(rng.integers(0, 256, (2, 2, 44, 44, 3), dtype=np.uint8)),
         "p": jnp.asarray(rng.normal(size=(2, 2, 3)), jnp.float32),
         "q": jnp.asarray(rng.normal(size=(2, 2, 4)), jnp.float32)}
  params = _random_params(enc, obs, train=False)

  @jax.jit
  def run(params, obs):   # one compile: eval + training with two crop rngs (vmapped)
    ev = enc.apply(params, obs, train=False)
    tr = jax.vmap(lambda k: enc.apply(params, obs, train=True, rngs={"crop": k}))(
        jax.random.split(jax.random.key(1)))
    return ev, tr[0], tr[1]

  ev, tr1, tr2 = (np.asarray(a) for a in run(params, obs))
  assert ev.shape == tr1.shape == (2, 2, 64 + 64 + 3 + 4)
  np.testing.assert_array_equal(ev[..., 128:131], np.asarray(obs["p"]))   # order: cams, then p, q
  np.testing.assert_array_equal(ev[..., 131:], np.asarray(obs["q"]))
  np.testing.assert_array_equal(tr1[..., 128:], ev[..., 128:])
  assert np.all(ev[..., :128] >= 0) and np.any(ev[..., :128] > 0)         # ReLU features
  assert not np.allclose(tr1[..., :128], tr2[..., :128])                  # random crops differ
  assert not np.allclose(ev[..., :64], ev[..., 64:128])                   # separate camera weights
  with pytest.raises(KeyError, match="cam_b"):
    jax.eval_shape(lambda p: enc.apply(p, {k: v for k, v in obs.items() if k != "cam_b"}, train=False), params)


def test_encoder_lowdim_only_has_no_params():
  enc = ObservationEncoder(lowdim_keys=("jp",))
  obs = {"jp": jnp.ones((3, 16, 8))}
  variables = enc.init({"params": jax.random.key(0)}, obs, train=True)
  assert count_params(variables) == 0
  np.testing.assert_array_equal(np.asarray(enc.apply(variables, obs, train=True)), np.ones((3, 16, 8)))


# ----------------------------------------------------------------------------- normaliser
def test_normalizer_roundtrip_masked_dims_and_degenerate():
  rng = np.random.default_rng(0)
  act = rng.uniform(-3, 5, size=(50, 10)).astype(np.float32)
  qpos = rng.uniform(0.0, 0.04, size=(50, 2)).astype(np.float32)
  const = np.full((50, 2), 0.7, np.float32)
  data = {"actions": act, "robot0_gripper_qpos": qpos, "const": const, "img": np.zeros((50, 2), np.uint8)}
  norm = LimitsNormalizer.fit(data, {"actions": slice(0, 3), "robot0_gripper_qpos": None, "const": None})
  y = norm.normalize(data)
  assert y["img"] is data["img"]                                  # unlisted fields pass through
  np.testing.assert_array_equal(y["actions"][:, 3:], act[:, 3:])  # unselected dims bit-exact
  np.testing.assert_allclose(y["actions"][:, :3].min(0), -1, atol=1e-6)
  np.testing.assert_allclose(y["actions"][:, :3].max(0), 1, atol=1e-6)
  np.testing.assert_allclose(y["robot0_gripper_qpos"].min(0), -1, atol=1e-5)
  # Degenerate range (< 1e-7) replaced by 2 (reference): y = x - min - 1.
  np.testing.assert_allclose(y["const"], -1.0, atol=1e-7)
  np.testing.assert_allclose(norm.normalize_field("const", np.array([[1.7, 0.7]], np.float32)),
                             [[0.0, -1.0]], atol=1e-6)
  back = norm.unnormalize(y)
  for k in ("actions", "robot0_gripper_qpos", "const"):
    np.testing.assert_allclose(back[k], data[k], atol=1e-5)
  assert isinstance(back["actions"], np.ndarray)
  # Same result under jit with the normaliser as a pytree argument and jax inputs.
  yj = jax.jit(lambda n, d: n.normalize(d))(norm, {k: jnp.asarray(v) for k, v in data.items()})
  np.testing.assert_allclose(np.asarray(yj["actions"]), y["actions"], atol=1e-6)
  # Bool mask / index list give the same dims as a slice; batched (B, H, D) inputs work.
  mask = np.zeros(10, bool)
  mask[:3] = True
  assert FieldStats.create([0, 0, 0], [1, 1, 1], mask).dims == (0, 1, 2)
  yb = norm.normalize_field("actions", act.reshape(5, 10, 10))
  np.testing.assert_allclose(yb.reshape(50, 10), y["actions"], atol=1e-6)


def test_normalizer_json_and_errors(tmp_path):
  data = {"actions": np.random.default_rng(1).normal(size=(20, 10)).astype(np.float32),
          "robot0_eef_pos": np.zeros((20, 3), np.float32),
          "robot0_gripper_qpos": np.random.default_rng(2).normal(size=(20, 2)).astype(np.float32)}
  norm = policy_normalizer(EpisodeData(data, [8, 20]), ("robot0_eef_pos", "robot0_gripper_qpos"),
                           config_lib.default_position_box())
  assert norm.stats["actions"].dims == (0, 1, 2)
  np.testing.assert_array_equal(norm.stats["robot0_eef_pos"].min, ABCDEFGH_POS_MIN)
  path = tmp_path / "norm_stats.json"
  norm.to_json(path)
  again = LimitsNormalizer.from_json(path)
  assert LimitsNormalizer.from_json(norm.to_json()).fields == norm.fields
  for k, st in norm.stats.items():
    np.testing.assert_array_equal(again.stats[k].min, st.min)
    np.testing.assert_array_equal(again.stats[k].max, st.max)
    assert again.stats[k].dims == st.dims
  assert json.loads(path.read_text())["fields"]["actions"]["dims"] == [0, 1, 2]
  np.testing.assert_array_equal(again.normalize(data)["actions"], norm.normalize(data)["actions"])
  with pytest.raises(KeyError, match="robot0_gripper_qpos"):
    norm.normalize({"actions": data["actions"], "robot0_eef_pos": data["robot0_eef_pos"]})
  with pytest.raises(ValueError, match="robot0_eef_pos"):
    norm.normalize({**data, "robot0_eef_pos": np.zeros((20, 4), np.float32)})
  with pytest.raises(ValueError, match="actions"):
    norm.normalize({**data, "actions": np.zeros((20, 2), np.float32)})
  with pytest.raises(KeyError, match="missing_field"):
    LimitsNormalizer.fit(data, {"missing_field": None})
  only = norm.unnormalize({"actions": np.zeros((2, 16, 10), np.float32)}, fields=["actions"])
  np.testing.assert_allclose(only["actions"][..., :3],
                             np.broadcast_to((ABCDEFGH_POS_MIN + ABCDEFGH_POS_MAX) / 2, (2, 16, 3)), atol=1e-6)
  np.testing.assert_array_equal(only["actions"][..., 3:], 0.0)


# ----------------------------------------------------------------------------- windows
def _frame_index_episodes(lengths=(10, 12, 5, 20)):
  n = int(sum(lengths))
  idx = np.arange(n)
  fields = {"frame": idx.astype(np.float32)[:, None],
            "actions": np.repeat(idx.astype(np.float32)[:, None], 10, axis=1),
            "agentview_image": np.broadcast_to((idx % 256).astype(np.uint8)[:, None, None, None],
                                               (n, 4, 4, 3)).copy()}
  return EpisodeData(fields, np.cumsum(lengths))


def _expected_windows(ends, t, to, h):
  e = ends[np.searchsorted(ends, t, side="right")]
  s = 0 if e == ends[0] else ends[np.searchsorted(ends, e) - 1]
  obs = [min(max(t + o, s), e - 1) for o in range(-(to - 1), 1)]
  act = [min(max(t - (to - 1) + i, s), e - 1) for i in range(h)]
  return obs, act


@pytest.mark.parametrize("h,to,ta,drop", [(16, 2, 8, 7), (10, 2, 8, 1)])
def test_window_sampler_valid_starts_and_clamping(h, to, ta, drop):
  eps = _frame_index_episodes()
  ws = WindowSampler(eps, n_obs_steps=to, horizon=h, n_action_steps=ta,
                     obs_keys=("frame", "agentview_image"))
  lengths = np.diff(np.concatenate([[0], eps.episode_ends]))
  assert ws.drop == drop
  np.testing.assert_array_equal(ws.valid_per_episode, np.maximum(lengths - drop, 0))
  # Anchors = all frames but the last `drop` of each episode.
  expected_anchors = np.concatenate([np.arange(s, e - drop) for s, e in
                                     zip(eps.episode_starts, eps.episode_ends) if e - drop > s])
  np.testing.assert_array_equal(ws.anchors, expected_anchors)
  batch = ws.get_batch(np.arange(len(ws)))
  assert batch["obs"]["frame"].shape == (len(ws), to, 1)
  assert batch["actions"].shape == (len(ws), h, 10)
  assert batch["obs"]["agentview_image"].dtype == np.uint8
  for i, t in enumerate(ws.anchors):
    obs, act = _expected_windows(eps.episode_ends, int(t), to, h)
    np.testing.assert_array_equal(batch["obs"]["frame"][i, :, 0], obs)
    np.testing.assert_array_equal(batch["actions"][i, :, 0], act)
    np.testing.assert_array_equal(batch["obs"]["agentview_image"][i, :, 0, 0, 0], np.array(obs) % 256)
  # No window crosses an episode: every frame lies in the anchor's episode.
  ep_obs = np.searchsorted(eps.episode_ends, batch["obs"]["frame"][..., 0], side="right")
  ep_act = np.searchsorted(eps.episode_ends, batch["actions"][..., 0], side="right")
  assert np.all(ep_obs == ws.anchor_episode[:, None]) and np.all(ep_act == ws.anchor_episode[:, None])
  # Episode starts repeat the first frame.
  first = batch["obs"]["frame"][ws.anchors == eps.episode_starts[1], :, 0]
  np.testing.assert_array_equal(first[0], [10, 10])
  np.testing.assert_array_equal(batch["actions"][ws.anchors == eps.episode_starts[1], :3, 0][0], [10, 10, 11])
  # Last anchor of an episode: the action window is clamped at the episode's last frame.
  last = ws.anchors == eps.episode_ends[3] - 1 - drop
  np.testing.assert_array_equal(batch["actions"][last, -1, 0], [min(eps.episode_ends[3] - 1 - drop - (to - 1) + h - 1, eps.episode_ends[3] - 1)])
  if drop >= ta - 1:   # H=16: the executed actions [To-1, To-1+Ta) never need clamping
    executed = batch["actions"][:, to - 1:to - 1 + ta, 0]
    np.testing.assert_array_equal(executed, ws.anchors[:, None] + np.arange(ta))


def test_window_sampler_sample_and_epoch():
  eps = _frame_index_episodes()
  ws = WindowSampler(eps, n_obs_steps=2, horizon=16, n_action_steps=8, obs_keys=("frame",))
  b = ws.sample(0, 6)
  assert b["obs"]["frame"].shape == (6, 2, 1) and b["actions"].shape == (6, 16, 10)
  np.testing.assert_array_equal(ws.sample(np.random.default_rng(3), 6)["actions"],
                                ws.sample(np.random.default_rng(3), 6)["actions"])
  seen = np.concatenate([bb["obs"]["frame"][:, -1, 0] for bb in ws.iterate_epoch(4, 0, drop_last=False)])
  np.testing.assert_array_equal(np.sort(seen), ws.anchors)       # every anchor exactly once
  assert sum(1 for _ in ws.iterate_epoch(4, 0)) == len(ws) // 4
  with pytest.raises(KeyError, match="nope"):
    WindowSampler(eps, n_obs_steps=2, horizon=16, n_action_steps=8, obs_keys=("nope",))


def test_prepare_policy_dataset_converts_actions():
  n = 6
  act7 = np.zeros((n, 7), np.float64)
  act7[:, :3] = np.arange(3 * n).reshape(n, 3)
  act7[:, 6] = 1.0
  act7[3, 3:6] = [0.0, 0.0, np.pi / 2]
  eps = EpisodeData({"actions": act7, "robot0_eef_pos": np.zeros((n, 3)),
                     "agentview_image": np.zeros((n, 4, 4, 3), np.uint8), "unused": np.zeros((n, 1))}, [n])
  out = prepare_policy_dataset(eps, ("agentview_image", "robot0_eef_pos"))
  assert set(out.fields) == {"actions", "robot0_eef_pos", "agentview_image"}
  assert out.fields["actions"].shape == (n, 10) and out.fields["actions"].dtype == np.float32
  assert out.fields["agentview_image"] is eps.fields["agentview_image"]
  np.testing.assert_allclose(out.fields["actions"][0, 3:9], [1, 0, 0, 0, 1, 0], atol=1e-7)
  np.testing.assert_allclose(out.fields["actions"][:, :3], act7[:, :3])
  np.testing.assert_allclose(rotation.model_action_to_env(out.fields["actions"].astype(np.float64)),
                             act7, atol=1e-6)
  norm = LimitsNormalizer.from_stats({"actions": FieldStats.create([0, 1, 2], [15, 16, 17], slice(0, 3))})
  normed = prepare_policy_dataset(eps, ("robot0_eef_pos",), normalizer=norm)
  np.testing.assert_allclose(normed.fields["actions"][[0, -1], :3], [[-1, -1, -1], [1, 1, 1]], atol=1e-6)
