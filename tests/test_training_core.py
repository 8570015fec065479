"""The one training loop on a small model: path-based freezing, optimizer state only for
trainable leaves, EMA schedule, the stage-1 weight loader, resume, and 8-device data
parallelism."""
import json
import os
import subprocess
import sys
import textwrap

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from decoupled_jax import config_lib
from decoupled_jax.backbones.base import ActionExpert
from decoupled_jax.heads import make_head
from decoupled_jax.training import checkpoint, ema, partition, trainer
from decoupled_jax.training.partition import FreezeRule
from decoupled_jax.training.policy import Policy
from decoupled_jax.training.stage import Stage
from decoupled_jax.training.weight_loaders import FreshInit, Stage1Backbone, copy_backbone


class ToyEncoder(nn.Module):
  @nn.compact
  def __call__(self, obs, *, train=False):
    return nn.Dense(16, name="proj")(obs["state"])


class ToyBackbone(ActionExpert):
  """FiLM-conditioned MLP: 'cond_film' is the conditioning pathway."""
  CONDITIONING_PATTERNS = (r"(^|/)cond_film/",)
  width: int = 32

  @nn.compact
  def __call__(self, x, t, cond, *, train=False):
    g = jnp.concatenate([cond.reshape(cond.shape[0], -1), jnp.sin(t)[:, None]], -1)
    h = nn.gelu(nn.Dense(self.width, name="inp")(x))
    film = nn.Dense(2 * self.width, name="cond_film")(g)
    h = h * film[:, None, :self.width] + film[:, None, self.width:]
    h = nn.LayerNorm(name="norm")(nn.gelu(nn.Dense(self.width, name="hidden")(h)))
    return nn.Dense(x.shape[-1], name="out")(h)


def make_config(steps=6, batch=8):
  c = config_lib.finetune_config("normal")
  c.train.update(num_steps=steps, batch_size=batch, log_every=2, checkpoint_every=3)
  c.progress = False
  return c


def batch_for_step(step, batch=8):
  r = np.random.default_rng(1000 + step)   # deterministic per step, so resume is exact
  return {"obs": {"state": r.normal(size=(batch, 2, 5)).astype(np.float32)},
          "actions": np.clip(r.normal(size=(batch, 16, 10)), -1, 1).astype(np.float32)}


def host_batches(start, batch=8):
  step = start
  while True:
    yield batch_for_step(step, batch)
    step += 1


def toy_stage(mode="none", weights=FreshInit(), batch=8):
  return Stage(name="toy", policy=Policy(ToyEncoder(), ToyBackbone()),
               head=make_head(config_lib.head_config()), example_obs=batch_for_step(0)["obs"],
               action_shape=(16, 10), meta={"test": True},
               freeze=FreezeRule(mode, ToyBackbone.CONDITIONING_PATTERNS), weights=weights,
               host_batches=lambda start: host_batches(start, batch))


def run(workdir, cfg, mode="none", weights=FreshInit(), **kw):
  return trainer.train(cfg, str(workdir), toy_stage(mode, weights, int(cfg.train.batch_size)),
                       **kw)


def test_ema_decay_matches_reference_schedule():
  decays = [float(ema.ema_decay(n)) for n in range(5)]
  # n updates already done: the first two updates copy (decay 0), then 1 - (1+k)^-0.75.
  np.testing.assert_allclose(decays, [0, 0, 1 - 2 ** -0.75, 1 - 3 ** -0.75, 1 - 4 ** -0.75],
                             rtol=1e-6)
  assert float(ema.ema_decay(10 ** 9)) == pytest.approx(0.9999)


def test_freeze_rule_by_mode():
  params = {"backbone": {"cond_film": {"kernel": 0, "bias": 0}, "inp": {"kernel": 0}},
            "encoder": {"proj": {"kernel": 0}}}
  pats = ToyBackbone.CONDITIONING_PATTERNS
  assert FreezeRule("none", pats).frozen_paths(params) == frozenset()
  assert FreezeRule("backbone", pats).frozen_paths(params) == {"backbone/inp/kernel"}
  assert FreezeRule("backbone", pats, extra_trainable=(r"inp",)).frozen_paths(params) == set()
  assert FreezeRule("backbone", pats, also_frozen=frozenset({"backbone/cond_film/bias"})
                    ).frozen_paths(params) == {"backbone/inp/kernel", "backbone/cond_film/bias"}
  with pytest.raises(ValueError, match="freeze mode"):
    FreezeRule("stage2", pats)


def test_decoupled_training_freezes_exactly_the_backbone(tmp_path):
  res = run(tmp_path / "run", make_config(), mode="backbone")
  state = res.state
  assert state.frozen == {"backbone/inp/kernel", "backbone/inp/bias", "backbone/hidden/kernel",
                          "backbone/hidden/bias", "backbone/norm/scale", "backbone/norm/bias",
                          "backbone/out/kernel", "backbone/out/bias"}
  # Optimizer state exists only for trainable leaves: two Adam moments per trainable leaf.
  moments = [x for x in jax.tree.leaves(state.opt_state) if getattr(x, "ndim", 0) > 0]
  trainable = state.trainable_params()
  assert len(moments) == 2 * len(trainable) == 2 * 4
  assert set(state.ema) == set(trainable)
  # Frozen leaves bitwise equal to the initial params, trainable ones moved.
  init = trainer.build_initial_state(make_config(), toy_stage("backbone"))[0]
  f0, f1 = partition.flatten(init.params), partition.flatten(state.params)
  for path in f0:
    same = bool(jnp.array_equal(f0[path], f1[path]))
    assert same == (path in state.frozen), path


def test_resume_continues_exactly(tmp_path):
  straight = run(tmp_path / "a", make_config(steps=6))
  run(tmp_path / "b", make_config(steps=6), stop_at=3)   # "interrupted" after step 3
  with pytest.raises(FileExistsError, match="--resume"):
    run(tmp_path / "b", make_config(steps=6))
  resumed = run(tmp_path / "b", make_config(steps=6), resume=True)
  assert int(resumed.state.step) == 6
  a, b = partition.flatten(straight.state.params), partition.flatten(resumed.state.params)
  for k in a:
    np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]), err_msg=k)


def test_prefetch_and_async_checkpoints_change_nothing(tmp_path):
  plain = make_config(steps=6)
  plain.train.update(prefetch=0, async_checkpoints=False)
  a = run(tmp_path / "plain", plain)
  b = run(tmp_path / "fast", make_config(steps=6))        # prefetch 2, async checkpoints
  fa, fb = partition.flatten(a.state.params), partition.flatten(b.state.params)
  for k in fa:
    np.testing.assert_array_equal(np.asarray(fa[k]), np.asarray(fb[k]), err_msg=k)
  pa, _ = checkpoint.load_inference_params(str(tmp_path / "plain" / "checkpoints"))
  pb, mb = checkpoint.load_inference_params(str(tmp_path / "fast" / "checkpoints"))
  assert mb["step"] == 6
  for k, v in partition.flatten(pa).items():
    np.testing.assert_array_equal(np.asarray(v), np.asarray(partition.flatten(pb)[k]))


def test_stage1_loader_copies_by_path_and_shape_and_names_mismatch(tmp_path):
  src = run(tmp_path / "stage1", make_config(steps=3))
  ckpt_dir = str(tmp_path / "stage1" / "checkpoints")
  stage1_params, meta = checkpoint.load_inference_params(ckpt_dir)
  assert meta["test"] is True and meta["step"] == 3 and meta["stage"] == "toy"
  loader = Stage1Backbone(ckpt_dir, ToyBackbone.CONDITIONING_PATTERNS)
  res = run(tmp_path / "stage2", make_config(steps=2), mode="backbone", weights=loader)
  # Same shapes everywhere here, so every backbone leaf was copied (conditioning included).
  assert sorted(res.load_report["copied"]) == sorted(
      k for k in partition.flatten(stage1_params) if k.startswith("backbone/"))
  s1, s2 = partition.flatten(stage1_params), partition.flatten(res.state.params)
  for path in res.state.frozen:
    np.testing.assert_array_equal(np.asarray(s1[path]), np.asarray(s2[path]))
  # Another architecture: the error names the first mismatching path and both shapes.
  wide = {"backbone": dict(stage1_params["backbone"])}
  wide["backbone"]["hidden"] = {"kernel": np.zeros((32, 7), np.float32),
                                "bias": np.zeros((7,), np.float32)}
  with pytest.raises(ValueError, match=r"backbone/hidden/.*\(32, 7\).*\(32, 32\)|"
                                       r"backbone/hidden/bias.*\(7,\).*\(32,\)"):
    copy_backbone(src.state.params, wide, conditioning_patterns=ToyBackbone.CONDITIONING_PATTERNS)
  # A conditioning leaf of another shape keeps its fresh init; reinit patterns always do.
  narrow = {"backbone": dict(stage1_params["backbone"])}
  narrow["backbone"]["cond_film"] = {"kernel": np.zeros((3, 64), np.float32),
                                     "bias": np.ones((64,), np.float32)}
  out, rep = copy_backbone(src.state.params, narrow,
                           conditioning_patterns=ToyBackbone.CONDITIONING_PATTERNS)
  assert "backbone/cond_film/kernel" in rep["fresh"] and "backbone/cond_film/bias" in rep["copied"]
  _, rep = copy_backbone(src.state.params, narrow, reinit_patterns=(r"cond_film/bias",),
                         conditioning_patterns=ToyBackbone.CONDITIONING_PATTERNS)
  assert "backbone/cond_film/bias" in rep["fresh"]


def test_optimizer_weight_decay_groups():
  cfg = config_lib.optimizer_config("dp_mlp", "finetune")
  from decoupled_jax.training.optimizer import decay_group
  assert decay_group("encoder/rgb/conv/kernel", cfg) == "encoder"
  assert decay_group("backbone/block_0/linear1/bias", cfg, (r"(^|/)bias$",)) == "no_decay"
  assert decay_group("backbone/block_0/linear1/bias", cfg) == "decay"
  assert decay_group("backbone/block_0/linear1/kernel", cfg) == "decay"


EIGHT_DEVICE_SCRIPT = textwrap.dedent("""
    import json, sys
    import jax, numpy as np
    sys.path.insert(0, {tests!r})
    import test_training_core as t
    assert jax.device_count() == 8, jax.devices()
    out = {{}}
    for n in (1, 8):
      cfg = t.make_config(steps=4, batch=16)
      cfg.rng_impl = "threefry2x32"   # bits independent of the partitioning
      res = t.run({tmp!r} + f"/d{{n}}", cfg, devices=jax.devices()[:n])
      out[n] = {{k: np.asarray(v).tolist() for k, v in t.partition.flatten(
          jax.device_get(res.state.params)).items()}}
    json.dump(out, open({tmp!r} + "/out.json", "w"))
""")


def test_eight_devices_match_one_device(tmp_path):
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8")
  script = EIGHT_DEVICE_SCRIPT.format(tests=os.path.dirname(__file__), tmp=str(tmp_path))
  proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                        text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = json.load(open(tmp_path / "out.json"))
  for k, v in out["1"].items():
    np.testing.assert_allclose(np.asarray(out["8"][k]), np.asarray(v), rtol=1e-5, atol=1e-5,
                               err_msg=k)


def _stage1_meta(cfg, norm, **extra):
  """A stage-1 checkpoint's meta for `cfg`'s expert, its actions normalised by `norm`."""
  return dict(extra, stage="pretrain", normalizer=norm.to_dict(),
              config={"backbone": cfg.backbone.to_dict(), "head": {"type": cfg.head.type},
                      "data": {"horizon": int(cfg.data.horizon), "normalization": "ours"}})


def _ten_d_task(norm, task):
  from decoupled_jax.benchmarks.base import TaskData
  from decoupled_jax.data.episodes import EpisodeData
  return TaskData(EpisodeData({"actions": np.zeros((4, 10), np.float32)}, np.array([4])),
                  norm, task=task)


def test_stage1_check_allows_another_action_scale_only_for_paper_normalization(monkeypatch):
  """A decoupled run refuses a stage 1 whose action normalisation differs from its own,
  unless that stage 1 declared the reference's data-limit scheme (data.normalization='paper',
  docs/method.md §1.1), which differs by design."""
  from decoupled_jax.data.normalizer import FieldStats, LimitsNormalizer
  from decoupled_jax.errors import CheckpointError
  from decoupled_jax.benchmarks import base
  cfg = config_lib.finetune_config("decoupled")
  cfg.stage1_checkpoint = "/stage1/checkpoints"
  lo, hi = (np.asarray(b, np.float32) for b in cfg.data.position_box)
  ours = LimitsNormalizer.from_stats({"actions": FieldStats.create(lo, hi, dims=slice(0, 3))})
  theirs = LimitsNormalizer.from_stats({"actions": FieldStats.create(-np.ones(10), np.ones(10))})
  meta = _stage1_meta(cfg, theirs)
  monkeypatch.setattr(base.ckpt_lib, "load_meta", lambda path: meta)
  data = _ten_d_task(ours, "Lift")
  with pytest.raises(CheckpointError, match="config.data.position_box"):
    base.check_stage1_checkpoint(cfg, data)
  meta["config"]["data"]["normalization"] = "paper"
  assert base.check_stage1_checkpoint(cfg, data) is meta
  meta["config"]["data"]["horizon"] = int(cfg.data.horizon) + 1   # still checked
  with pytest.raises(CheckpointError, match="data.horizon"):
    base.check_stage1_checkpoint(cfg, data)


def test_stage1_check_takes_a_delta_action_fk_expert_only_where_actions_are_deltas(monkeypatch):
  """A generated-FK stage 1 with delta-action targets (data.fk.target='delta') is refused by a
  benchmark of absolute actions (robosuite's) with a line naming the target, and accepted by
  one that takes delta FK experts (LIBERO's) only at the same action normalisation."""
  from decoupled_jax.data.normalizer import FieldStats, LimitsNormalizer
  from decoupled_jax.errors import CheckpointError
  from decoupled_jax.benchmarks import base
  cfg = config_lib.finetune_config("decoupled")
  cfg.stage1_checkpoint = "/stage1/checkpoints"
  unit = LimitsNormalizer.from_stats({"actions": FieldStats.create(-np.ones(3), np.ones(3),
                                                                   dims=slice(0, 3))})
  meta = _stage1_meta(cfg, unit, fk_target="delta")
  monkeypatch.setattr(base.ckpt_lib, "load_meta", lambda path: meta)
  data = _ten_d_task(unit, "libero_spatial")
  with pytest.raises(CheckpointError, match="delta FK targets"):
    base.check_stage1_checkpoint(cfg, data)          # robosuite's rule: absolute targets only
  libero_rule = dict(benchmarks=("libero", "fk"), same_action_scale=("libero",),
                     fk_targets=("absolute", "delta"))
  assert base.check_stage1_checkpoint(cfg, data, **libero_rule) is meta
  lo, hi = (np.asarray(b, np.float32) for b in cfg.data.position_box)
  other = _ten_d_task(LimitsNormalizer.from_stats(
      {"actions": FieldStats.create(lo, hi, dims=slice(0, 3))}), "libero_spatial")
  with pytest.raises(CheckpointError, match="normalised actions"):
    base.check_stage1_checkpoint(cfg, other, **libero_rule)
  meta["fk_target"] = "absolute"   # an absolute-pose FK expert keeps its own scale there
  assert base.check_stage1_checkpoint(cfg, other, **libero_rule) is meta
