"""The train step's contract on a small model: path-based freezing, optimizer state only for
trainable leaves, EMA schedule, stage-1 loading by path, resume, and 8-device data parallelism."""
import json
import os
import subprocess
import sys
import textwrap

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from decoupled_jax import config_lib
from decoupled_jax.heads import make_head
from decoupled_jax.training import checkpoint, ema, partition, trainer
from decoupled_jax.training.policy import Policy


class ToyEncoder(nn.Module):
  @nn.compact
  def __call__(self, obs, *, train=False):
    return nn.Dense(16, name="proj")(obs["state"])


class ToyBackbone(nn.Module):
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


def make_config(mode="none", init_from="", steps=6, batch=8):
  return ml_collections.ConfigDict(dict(
      seed=0, freeze=config_lib.freeze_config(mode, init_from),
      optimizer=config_lib.optimizer_config("dp_mlp", "finetune"), ema=config_lib.ema_config(),
      train=dict(num_steps=steps, batch_size=batch, log_every=2, checkpoint_every=3,
                 eval_every=0)))


def batch_for_step(step, batch=8):
  r = np.random.default_rng(1000 + step)   # deterministic per step, so resume is exact
  return {"obs": {"state": r.normal(size=(batch, 2, 5)).astype(np.float32)},
          "actions": np.clip(r.normal(size=(batch, 16, 10)), -1, 1).astype(np.float32)}


def host_batches(start, batch=8):
  step = start
  while True:
    yield batch_for_step(step, batch)
    step += 1


def run(workdir, cfg, **kw):
  batch = int(cfg.train.batch_size)
  return trainer.train(
      cfg, str(workdir), policy=Policy(ToyEncoder(), ToyBackbone()),
      head=make_head(config_lib.head_config()), example_obs=batch_for_step(0)["obs"],
      action_shape=(16, 10), conditioning_patterns=ToyBackbone.CONDITIONING_PATTERNS,
      meta={"test": True}, host_batches=lambda start: host_batches(start, batch),
      progress=False, **kw)


def test_ema_decay_matches_reference_schedule():
  decays = [float(ema.ema_decay(n)) for n in range(5)]
  # n updates already done: the first two updates copy (decay 0), then 1 - (1+k)^-0.75.
  np.testing.assert_allclose(decays, [0, 0, 1 - 2 ** -0.75, 1 - 3 ** -0.75, 1 - 4 ** -0.75],
                             rtol=1e-6)
  assert float(ema.ema_decay(10 ** 9)) == pytest.approx(0.9999)


def test_frozen_paths_by_mode():
  params = {"backbone": {"cond_film": {"kernel": 0, "bias": 0}, "inp": {"kernel": 0}},
            "encoder": {"proj": {"kernel": 0}}}
  pats = ToyBackbone.CONDITIONING_PATTERNS
  assert partition.frozen_paths(params, mode="none", conditioning_patterns=pats) == frozenset()
  assert partition.frozen_paths(params, mode="backbone", conditioning_patterns=pats) == {
      "backbone/inp/kernel"}
  assert partition.frozen_paths(params, mode="backbone", conditioning_patterns=pats,
                                extra_trainable=(r"inp",)) == frozenset()
  with pytest.raises(ValueError, match="config.freeze.mode"):
    partition.frozen_paths(params, mode="stage2", conditioning_patterns=pats)


def test_decoupled_training_freezes_exactly_the_backbone(tmp_path):
  res = run(tmp_path / "run", make_config("backbone"))
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
  init = trainer.build_initial_state(make_config("backbone"), Policy(ToyEncoder(), ToyBackbone()),
                                     batch_for_step(0)["obs"], (16, 10),
                                     ToyBackbone.CONDITIONING_PATTERNS, 6)[0]
  f0, f1 = partition.flatten(init.params), partition.flatten(state.params)
  for path in f0:
    same = bool(jnp.array_equal(f0[path], f1[path]))
    assert same == (path in state.frozen), path


def test_gradients_reach_conditioning_through_frozen_backbone():
  cfg = make_config("backbone")
  policy, head = Policy(ToyEncoder(), ToyBackbone()), make_head(config_lib.head_config())
  state, tx, _ = trainer.build_initial_state(cfg, policy, batch_for_step(0)["obs"], (16, 10),
                                             ToyBackbone.CONDITIONING_PATTERNS, 6)
  from decoupled_jax.training.train_state import make_train_step
  step = jax.jit(make_train_step(policy, head, tx))
  _, metrics = step(state, jax.tree.map(jnp.asarray, batch_for_step(0)), jax.random.PRNGKey(0))
  assert float(metrics["grad_norm"]) > 0
  # Encoder gradients exist only through the frozen backbone's activations.
  trainable, frozen = partition.split(state.params, state.frozen)
  def loss(tr):
    params = partition.merge(tr, jax.lax.stop_gradient(frozen))
    cond = policy.apply({"params": params}, batch_for_step(0)["obs"], method=Policy.encode)
    out = policy.apply({"params": params}, jnp.zeros((8, 16, 10)), jnp.zeros(8), cond,
                       method=Policy.denoise)
    return jnp.sum(out ** 2)
  grads = jax.grad(loss)(trainable)
  for path, g in grads.items():
    assert float(jnp.abs(g).max()) > 0, path


def test_resume_continues_exactly(tmp_path):
  straight = run(tmp_path / "a", make_config(steps=6))
  run(tmp_path / "b", make_config(steps=6), stop_at=3)   # "interrupted" after step 3
  with pytest.raises(FileExistsError, match="--resume"):
    run(tmp_path / "b", make_config(steps=6))
  resumed = run(tmp_path / "b", make_config(steps=6), resume=True)
  assert int(resumed.state.step) == 6
  a, b = partition.flatten(straight.state.params), partition.flatten(resumed.state.params)
  for k in a:
    np.testing.assert_allclose(np.asarray(a[k]), np.asarray(b[k]), rtol=1e-6, atol=1e-7)


def test_stage1_load_copies_backbone_and_names_mismatch(tmp_path):
  src = run(tmp_path / "stage1", make_config(steps=3))
  ckpt_dir = str(tmp_path / "stage1" / "checkpoints")
  stage1_params, meta = checkpoint.load_inference_params(ckpt_dir)
  assert meta["test"] is True and meta["step"] == 3
  res = run(tmp_path / "stage2", make_config("backbone", init_from=ckpt_dir, steps=2))
  s1, s2 = partition.flatten(stage1_params), partition.flatten(res.state.params)
  for path in res.state.frozen:
    np.testing.assert_array_equal(np.asarray(s1[path]), np.asarray(s2[path]))
  # Another architecture: the error names the first mismatching path and both shapes.
  wide = {"backbone": dict(stage1_params["backbone"])}
  wide["backbone"]["hidden"] = {"kernel": np.zeros((32, 7), np.float32),
                                "bias": np.zeros((7,), np.float32)}
  with pytest.raises(ValueError, match=r"backbone/hidden/.*\(32, 7\).*\(32, 32\)|"
                                       r"backbone/hidden/bias.*\(7,\).*\(32,\)"):
    partition.copy_by_path(src.state.params, wide, skip_patterns=ToyBackbone.CONDITIONING_PATTERNS)


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
      res = t.run({tmp!r} + f"/d{{n}}", t.make_config(steps=4, batch=16), devices=jax.devices()[:n])
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
