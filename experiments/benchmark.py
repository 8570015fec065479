"""Training and sampling speed of every backbone, normal vs decoupled, on this machine.

  python experiments/benchmark.py [--backbones=dp_mlp,dp_c] [--steps=10] [--output=bench.json]

Prints a table and writes JSON:
  * train steps/s and samples/s per backbone in normal and decoupled mode (stage-2 shapes:
    condition 2 x 137 per sample as in the paper's MimicGen setting, H = 16 for DP-C/DP-MLP and
    10 for the transformers), compile time separately; timed with jax.block_until_ready after
    one warm-up step;
  * sampling latency for one observation: DDPM-100, DDIM-10, flow-10;
  * window-loader throughput (low-dim and 84x84 two-camera image windows) and the fraction of
    a DP-MLP train step spent waiting for them through the prefetch thread (target: ~0);
  * with --torch_reference=PYTHON (an interpreter with torch + einops), the paper's own PyTorch
    heads timed by the project's torch_reference_bench.py tool in the same job, and the ratios.
    Machines differ: only ratios measured side by side mean anything (docs/performance.md).
Batch: 64 (the paper's), DP-C 16 by default on CPU (--dpc_batch).
"""
import os

from decoupled_jax import cli

cli.prelude()  # before jax / mujoco are imported

import json  # noqa: E402
import time  # noqa: E402

from absl import flags  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from decoupled_jax import config_lib  # noqa: E402
from decoupled_jax.data.episodes import EpisodeData  # noqa: E402
from decoupled_jax.data.windows import WindowSampler  # noqa: E402
from decoupled_jax.heads import make_head  # noqa: E402
from decoupled_jax.backbones import count_params, expert_interface  # noqa: E402
from decoupled_jax.training import trainer  # noqa: E402
from decoupled_jax.training.partition import FreezeRule  # noqa: E402
from decoupled_jax.training.policy import make_sample_fn, policy_from_config  # noqa: E402
from decoupled_jax.training.stage import Stage  # noqa: E402
from decoupled_jax.training.train_state import make_train_step  # noqa: E402

flags.DEFINE_list("backbones", ["dp_mlp", "dp_c", "dp_t", "dp_t_film", "unified"],
                  "Backbones to time (unified uses --conditioning).")
flags.DEFINE_string("conditioning", "adaln_zero", "Conditioning of the unified transformer.")
flags.DEFINE_list("modes", ["normal", "decoupled"], "Training modes to time.")
flags.DEFINE_integer("batch", 64, "Batch size (the paper's stage-2 batch).")
flags.DEFINE_integer("dpc_batch", 16, "Batch size for DP-C (the 244 M U-Net) on CPU.")
flags.DEFINE_integer("steps", 10, "Timed train steps per configuration (after warm-up).")
flags.DEFINE_integer("sample_reps", 5, "Timed sampling calls per configuration.")
flags.DEFINE_bool("sampling", True, "Also time single-observation sampling.")
flags.DEFINE_bool("loader", True, "Also time the window loader.")
flags.DEFINE_string("output", "benchmark.json", "Where to write the JSON results.")
FLAGS = flags.FLAGS

flags.DEFINE_string("torch_reference", "", "Python interpreter with torch + einops: also time "
                    "the paper's PyTorch heads in this job and report speed ratios.")
flags.DEFINE_string("torch_reference_tool", os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "tools",
    "torch_reference_bench.py"), "The reference timing tool (the project's shared tooling).")

COND_DIM, N_OBS = 137, 2
TORCH_NAMES = {"dp_mlp": "mlp", "dp_c": "dpc"}


def torch_reference() -> dict:
  """{(arch, batch, mode): step seconds} of the paper's PyTorch heads, timed now."""
  import subprocess
  import tempfile
  if not FLAGS.torch_reference:
    return {}
  models = [TORCH_NAMES[a] for a in FLAGS.backbones if a in TORCH_NAMES]
  if not models:
    return {}
  with tempfile.TemporaryDirectory() as tmp:
    out = os.path.join(tmp, "torch.json")
    subprocess.run([FLAGS.torch_reference, FLAGS.torch_reference_tool, "--models",
                    ",".join(models), "--mlp_batch", str(FLAGS.batch), "--dpc_batch",
                    str(FLAGS.dpc_batch), "--json", out], check=True)
    rows = json.load(open(out))["rows"]
  inv = {v: k for k, v in TORCH_NAMES.items()}
  ref = {}
  for r in rows:
    if "train_step_ms" in r:
      ref[(inv[r["model"]], r["batch"], r["mode"])] = r["train_step_ms"] / 1e3
    else:
      ref[(inv[r["model"]], 1, r["mode"])] = r["latency_ms"] / 1e3
  return ref


def make_config(arch, mode):
  c = config_lib.finetune_config("decoupled" if mode == "decoupled" else "normal", arch,
                                 FLAGS.conditioning)
  c.train.num_steps = 1000
  return c


def timed(fn, reps):
  out = fn()                     # warm-up (compiles)
  jax.block_until_ready(out)
  t0 = time.perf_counter()
  for _ in range(reps):
    out = fn()
  jax.block_until_ready(out)
  return (time.perf_counter() - t0) / reps


def bench_train(arch, mode, batch):
  cfg = make_config(arch, mode)
  horizon = config_lib.default_horizon(arch)
  policy = policy_from_config(cfg, lowdim_keys=("features",))
  expert = expert_interface(policy.backbone)
  head = make_head(cfg.head)
  obs = {"features": jnp.zeros((batch, N_OBS, COND_DIM), jnp.float32)}
  stage = Stage(name="finetune", policy=policy, head=head, example_obs=obs,
                action_shape=(horizon, 10), meta={},
                freeze=FreezeRule("backbone" if mode == "decoupled" else "none",
                                  expert.conditioning_patterns),
                no_weight_decay=expert.no_weight_decay_patterns,
                host_batches=lambda start: iter(()))
  t0 = time.perf_counter()
  state, tx, _, _ = trainer.build_initial_state(cfg, stage)
  init_s = time.perf_counter() - t0
  step = jax.jit(make_train_step(policy, head, tx), donate_argnums=(0,))
  rng = np.random.default_rng(0)
  batch_data = {"obs": {"features": jnp.asarray(rng.uniform(-1, 1, (batch, N_OBS, COND_DIM)),
                                                jnp.float32)},
                "actions": jnp.asarray(rng.uniform(-1, 1, (batch, horizon, 10)), jnp.float32)}
  key = jax.random.PRNGKey(0)
  t0 = time.perf_counter()
  compiled = step.lower(state, batch_data, key).compile()
  compile_s = time.perf_counter() - t0
  state, m = compiled(state, batch_data, key)          # warm-up
  jax.block_until_ready(state)
  t0 = time.perf_counter()
  for _ in range(FLAGS.steps):
    state, m = compiled(state, batch_data, key)
  jax.block_until_ready(state)
  step_s = (time.perf_counter() - t0) / FLAGS.steps
  n_params = count_params(state.params)
  n_train = count_params(state.ema)
  ref = REFERENCE.get((arch, batch, mode))
  return {"backbone": arch, "mode": mode, "batch": batch, "horizon": horizon,
          "step_ms": 1000 * step_s, "steps_per_s": 1 / step_s, "samples_per_s": batch / step_s,
          "compile_s": compile_s, "init_s": init_s, "params": n_params, "trainable": n_train,
          "pytorch_step_ms": None if ref is None else 1000 * ref,
          "speedup_vs_pytorch": None if ref is None else ref / step_s}, (policy, state, cfg)


def bench_sampling(arch, policy, params):
  horizon = config_lib.default_horizon(arch)
  obs = {"features": jnp.zeros((1, N_OBS, COND_DIM), jnp.float32)}
  out = {}
  for name, head_cfg in (("ddpm100", dict(type="diffusion", sampler="ddpm", num_inference_steps=100)),
                         ("ddim10", dict(type="diffusion", sampler="ddim", num_inference_steps=10)),
                         ("flow10", dict(type="flow", flow_num_steps=10))):
    head = make_head(head_cfg)
    sample = jax.jit(make_sample_fn(policy, head, (horizon, 10)))
    t0 = time.perf_counter()
    jax.block_until_ready(sample(params, obs, jax.random.PRNGKey(0)))
    compile_s = time.perf_counter() - t0
    lat = timed(lambda: sample(params, obs, jax.random.PRNGKey(1)), FLAGS.sample_reps)
    out[name] = {"latency_ms": 1000 * lat, "compile_s": compile_s}
  return out


def bench_loader(batch):
  """Window batches/s from in-memory episodes (100 demos x 150 frames)."""
  rng = np.random.default_rng(0)
  n_eps, length = 100, 150
  ends = np.arange(1, n_eps + 1) * length
  n = int(ends[-1])
  lowdim = EpisodeData({"actions": rng.normal(size=(n, 10)).astype(np.float32),
                        "robot0_eef_pos": rng.normal(size=(n, 3)).astype(np.float32),
                        "object": rng.normal(size=(n, 10)).astype(np.float32)}, ends)
  images = EpisodeData({"actions": lowdim.fields["actions"],
                        "agentview_image": rng.integers(0, 255, (n, 84, 84, 3), dtype=np.uint8),
                        "robot0_eye_in_hand_image": rng.integers(0, 255, (n, 84, 84, 3),
                                                                 dtype=np.uint8)}, ends)
  out = {}
  for name, data, keys in (("lowdim", lowdim, ("robot0_eef_pos", "object")),
                           ("image", images, ("agentview_image", "robot0_eye_in_hand_image"))):
    sampler = WindowSampler(data, n_obs_steps=2, horizon=16, n_action_steps=8, obs_keys=keys)
    sampler.sample(np.random.default_rng(0), batch)
    reps = 50
    t0 = time.perf_counter()
    for i in range(reps):
      sampler.sample(np.random.default_rng(i), batch)
    dt = (time.perf_counter() - t0) / reps
    out[name] = {"batch": batch, "batch_ms": 1000 * dt, "batches_per_s": 1 / dt,
                 "data_wait_frac": data_wait_fraction(sampler, keys, batch)}
  return out


def data_wait_fraction(sampler, keys, batch):
  """The fraction of a DP-MLP train step's wall time the loop waits for host batches when
  they come through the trainer's prefetch thread (`training/prefetch.py`)."""
  from decoupled_jax.pipelines.finetune import _uniform_batches
  from decoupled_jax.training import sharding
  from decoupled_jax.training.prefetch import Prefetcher
  image_keys = tuple(k for k in keys if k.endswith("_image"))
  cfg = config_lib.finetune_config("normal", "dp_mlp")
  cfg.train.num_steps = 1000
  policy = policy_from_config(cfg, image_keys, tuple(k for k in keys if k not in image_keys))
  expert = expert_interface(policy.backbone)
  example = sampler.sample(np.random.default_rng(0), 1)["obs"]
  stage = Stage(name="finetune", policy=policy, head=make_head(cfg.head), example_obs=example,
                action_shape=(16, 10), meta={}, freeze=FreezeRule("none"),
                no_weight_decay=expert.no_weight_decay_patterns,
                host_batches=_uniform_batches(sampler, batch, 0))
  state, tx, _, _ = trainer.build_initial_state(cfg, stage)
  mesh = sharding.make_mesh()
  step = jax.jit(make_train_step(policy, stage.head, tx), donate_argnums=(0,))
  batches = Prefetcher(stage.host_batches(0), lambda b: sharding.shard_batch(b, mesh), 2)
  key = jax.random.PRNGKey(0)
  state, _ = step(state, next(batches), key)          # compile
  jax.block_until_ready(state)
  wait, t0 = 0.0, time.perf_counter()
  for _ in range(FLAGS.steps):
    tw = time.perf_counter()
    b = next(batches)
    wait += time.perf_counter() - tw
    state, _ = step(state, b, key)
  jax.block_until_ready(state)
  batches.close()
  return wait / (time.perf_counter() - t0)


REFERENCE = {}


def main(argv):
  del argv
  REFERENCE.update(torch_reference())
  print(f"JAX {jax.__version__}, {jax.device_count()} x {jax.devices()[0].platform}; "
        f"{FLAGS.steps} timed steps per row, compile excluded")
  results = {"train": [], "sampling": {}, "loader": None, "device": str(jax.devices()[0])}
  header = (f"{'backbone':<10} {'mode':<10} {'B':>3} {'step ms':>9} {'steps/s':>8} "
            f"{'samples/s':>10} {'compile s':>9} {'trainable/total':>22} {'PyTorch ms':>10} {'speedup':>8}")
  print(header)
  print("-" * len(header))
  for arch in FLAGS.backbones:
    batch = FLAGS.dpc_batch if arch == "dp_c" else FLAGS.batch
    normal_model = None
    for mode in FLAGS.modes:
      row, model = bench_train(arch, mode, batch)
      if mode == "normal":
        normal_model = model
      results["train"].append(row)
      ref = f"{row['pytorch_step_ms']:.0f}" if row["pytorch_step_ms"] else "-"
      sp = f"{row['speedup_vs_pytorch']:.2f}x" if row["speedup_vs_pytorch"] else "-"
      print(f"{arch:<10} {mode:<10} {batch:>3} {row['step_ms']:>9.1f} {row['steps_per_s']:>8.2f} "
            f"{row['samples_per_s']:>10.1f} {row['compile_s']:>9.1f} "
            f"{row['trainable']:>10,}/{row['params']:<11,} {ref:>10} {sp:>8}", flush=True)
    if FLAGS.sampling:
      policy, state, cfg = normal_model or model
      results["sampling"][arch] = bench_sampling(arch, policy, state.inference_params())
  if FLAGS.sampling:
    print("\nsampling latency, one observation (ms): " + "  ".join(
        f"{a}: " + ", ".join(f"{k} {v['latency_ms']:.1f}" for k, v in s.items())
        for a, s in results["sampling"].items()))
    for a, s in results["sampling"].items():
      for ours, calls in (("ddim10", 10), ("ddpm100", 100)):
        ref = REFERENCE.get((a, 1, f"sample_{calls}_calls"))
        if ref is not None and ours in s:
          s[ours]["pytorch_ms"] = 1000 * ref
          print(f"  {a} {ours}: PyTorch {calls} denoiser calls {1000 * ref:.1f} ms -> "
                f"{1000 * ref / s[ours]['latency_ms']:.2f}x")
  results["torch_reference"] = {"|".join(map(str, k)): v for k, v in REFERENCE.items()}
  if FLAGS.loader:
    results["loader"] = bench_loader(FLAGS.batch)
    fastest = max(r["steps_per_s"] for r in results["train"])
    print("loader (B=%d): " % FLAGS.batch + ", ".join(
        f"{k} {v['batches_per_s']:.0f} batches/s (train loop waits {100 * v['data_wait_frac']:.1f} % "
        f"of the time)" for k, v in results["loader"].items())
          + f"; the fastest train step consumes {fastest:.1f} batches/s")
  os.makedirs(os.path.dirname(os.path.abspath(FLAGS.output)), exist_ok=True)
  with open(FLAGS.output, "w") as f:
    json.dump(results, f, indent=2)
  print(f"wrote {FLAGS.output}")


if __name__ == "__main__":
  cli.run(main)
