"""Training and sampling speed of every backbone, normal vs decoupled, in this process
(`experiments/benchmark.py`; what the figures mean and the runs so far: docs/performance.md,
raw output of those runs: docs/results/benchmarks/).

`run(Options(...), output)` prints a table and writes JSON:
  * train steps/s and samples/s per backbone in normal and decoupled mode (stage-2 shapes:
    condition 2 x 137 per sample as in the paper's MimicGen setting, H = 16 for DP-C/DP-MLP and
    10 for the transformers), compile time separately; timed with jax.block_until_ready after
    one warm-up step;
  * sampling latency for one observation: DDPM-100, DDIM-10, flow-10;
  * window-loader throughput (low-dim and 84x84 two-camera image windows) and the fraction of
    a DP-MLP train step spent waiting for them through the prefetch thread (target: ~0);
  * with `torch_reference` (an interpreter with torch + einops), the paper's own PyTorch
    heads timed by the project's torch_reference_bench.py tool in the same job, and the ratios.
    Machines differ: only ratios measured side by side mean anything (docs/performance.md);
  * each train step's achieved FLOP/s (XLA's cost analysis of the compiled step / step time)
    as a fraction of the fp32 GEMM rate a large jitted matmul reaches in this process;
  * `profile`: per-op time of each train step (jax.profiler trace, XLA thunks by name);
  * `compile_cache`: DP-C train-step compile time with an empty vs a filled persistent
    compilation cache (two fresh processes sharing one cache directory);
  * `checkpoint_stall`: how long saving the DP-C TrainState blocks training, synchronous vs
    orbax's asynchronous save (the trainer's `config.train.async_checkpoints`).
Call `decoupled_jax.cli.prelude()` before jax is imported (the binary does).
"""
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from decoupled_jax import cli, config_lib, util
from decoupled_jax.backbones import count_params, expert_interface
from decoupled_jax.data.episodes import EpisodeData
from decoupled_jax.data.windows import WindowSampler
from decoupled_jax.heads import make_head
from decoupled_jax.perf import xla
from decoupled_jax.perf.timing import timed
from decoupled_jax.training import trainer
from decoupled_jax.training.partition import FreezeRule
from decoupled_jax.training.policy import make_sample_fn, policy_from_config
from decoupled_jax.training.stage import Stage
from decoupled_jax.training.train_state import apply_gradients, make_train_step

COND_DIM, N_OBS = 137, 2
TORCH_NAMES = {"dp_mlp": "mlp", "dp_c": "dpc"}


@dataclasses.dataclass(frozen=True)
class Options:
  """What to time (the binary's flags of the same names)."""
  backbones: Sequence[str] = ("dp_mlp", "dp_c", "dp_t", "dp_t_film", "unified")
  conditioning: str = "adaln_zero"   # of the unified transformer
  modes: Sequence[str] = ("normal", "decoupled")
  batch: int = 64                    # the paper's stage-2 batch
  dpc_batch: int = 16                # DP-C (the 244 M U-Net) on CPU
  steps: int = 10                    # timed train steps per configuration (after warm-up)
  sample_reps: int = 5               # timed sampling calls per configuration
  sampling: bool = True
  loader: bool = True
  profile: bool = False
  compile_cache: bool = False
  checkpoint_stall: bool = False
  torch_reference: str = ""          # a Python with torch + einops, or "" for none
  torch_reference_tool: str = ""     # the project's shared torch_reference_bench.py


def torch_reference(opts: Options) -> dict:
  """{(arch, batch, mode): step seconds} of the paper's PyTorch heads, timed now."""
  if not opts.torch_reference:
    return {}
  models = [TORCH_NAMES[a] for a in opts.backbones if a in TORCH_NAMES]
  if not models:
    return {}
  with tempfile.TemporaryDirectory() as tmp:
    out = os.path.join(tmp, "torch.json")
    subprocess.run([opts.torch_reference, opts.torch_reference_tool, "--models",
                    ",".join(models), "--mlp_batch", str(opts.batch), "--dpc_batch",
                    str(opts.dpc_batch), "--json", out], check=True)
    rows = json.load(open(out))["rows"]
  inv = {v: k for k, v in TORCH_NAMES.items()}
  ref = {}
  for r in rows:
    if "train_step_ms" in r:
      ref[(inv[r["model"]], r["batch"], r["mode"])] = r["train_step_ms"] / 1e3
    else:
      ref[(inv[r["model"]], 1, r["mode"])] = r["latency_ms"] / 1e3
  return ref


def make_config(arch, mode, conditioning="adaln_zero"):
  c = config_lib.finetune_config("decoupled" if mode == "decoupled" else "normal", arch,
                                 conditioning)
  c.train.num_steps = 1000
  return c


def build_train_step(arch, mode, batch, conditioning="adaln_zero"):
  """(config, policy, state, jitted step, batch data, key, init seconds, optimizer) at the
  stage-2 shapes."""
  cfg = make_config(arch, mode, conditioning)
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
  # The trainer's key (config.rng_impl): dropout bits as training draws them.
  return cfg, policy, state, step, batch_data, trainer.run_key(cfg), init_s, tx


def optimizer_ms(cfg, state, tx, reps: int = 5) -> float:
  """Milliseconds of the train step's parameter update alone (`train_state.apply_gradients`:
  AdamW on the trainable leaves and the EMA), with stand-in gradients."""
  from decoupled_jax.training import partition

  def update(state):
    grads = jax.tree.map(lambda p: p * 1e-3, partition.split(state.params, state.frozen)[0])
    return apply_gradients(state, grads, tx, ema_power=cfg.ema.power,
                           ema_max_decay=cfg.ema.max_decay, ema_enabled=cfg.ema.enabled)

  f = jax.jit(update)
  return 1000 * timed(lambda: f(state), reps)


def bench_train(arch, mode, batch, peak, opts: Options, reference: dict):
  """(the table row of one train step, (policy, state, config) for the sampling rows)."""
  cfg, policy, state, step, batch_data, key, init_s, tx = build_train_step(
      arch, mode, batch, opts.conditioning)
  horizon = config_lib.default_horizon(arch)
  t0 = time.perf_counter()
  compiled = step.lower(state, batch_data, key).compile()
  compile_s = time.perf_counter() - t0
  flops = xla.step_flops(compiled)
  state, m = compiled(state, batch_data, key)          # warm-up
  jax.block_until_ready(state)
  t0 = time.perf_counter()
  for _ in range(opts.steps):
    state, m = compiled(state, batch_data, key)
  jax.block_until_ready(state)
  step_s = (time.perf_counter() - t0) / opts.steps
  ops = None
  if opts.profile:
    def run():
      nonlocal state
      for _ in range(3):
        state, _ = compiled(state, batch_data, key)
        jax.block_until_ready(state)
    ops = xla.op_profile(run, compiled.as_text())
  n_params = count_params(state.params)
  n_train = count_params(state.ema)
  opt_ms = optimizer_ms(cfg, state, tx)
  ref = reference.get((arch, batch, mode))
  return {"backbone": arch, "mode": mode, "batch": batch, "horizon": horizon,
          "step_ms": 1000 * step_s, "steps_per_s": 1 / step_s, "samples_per_s": batch / step_s,
          "compile_s": compile_s, "init_s": init_s, "params": n_params, "trainable": n_train,
          "gflop_per_step": flops / 1e9, "gflops": flops / step_s / 1e9,
          "peak_fraction": flops / step_s / peak, "profile": ops, "optimizer_ms": opt_ms,
          "pytorch_step_ms": None if ref is None else 1000 * ref,
          "speedup_vs_pytorch": None if ref is None else ref / step_s}, (policy, state, cfg)


def compile_probe(cache_dir: str, dpc_batch: int) -> dict:
  """Lower + compile the DP-C normal train step with `cache_dir` as the persistent cache."""
  cli.enable_compilation_cache(cache_dir)
  _, _, state, step, batch_data, key, _, _ = build_train_step("dp_c", "normal", dpc_batch)
  t0 = time.perf_counter()
  lowered = step.lower(state, batch_data, key)
  t1 = time.perf_counter()
  lowered.compile()
  t2 = time.perf_counter()
  return {"lower_s": t1 - t0, "compile_s": t2 - t1}


def bench_compile_cache(dpc_batch: int) -> dict:
  """DP-C compile: an empty cache directory (first run), then the same directory again, each
  in a fresh process (`compile_probe.py`)."""
  out = {}
  with tempfile.TemporaryDirectory() as cache:
    for name in ("cold", "cached"):
      res = subprocess.run([sys.executable, "-m", "decoupled_jax.perf.compile_probe", cache,
                            str(dpc_batch)], check=True, capture_output=True, text=True)
      out[name] = json.loads(res.stdout.strip().splitlines()[-1])
    out["cache_mb"] = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(cache)
                          for f in fs) / 2 ** 20
  return out


def bench_checkpoint_stall(state, reps: int = 2) -> dict:
  """Seconds `Checkpointer.save` blocks the caller for this TrainState (+ its inference
  params and a meta item, as the trainer saves them): synchronous, then asynchronous (the
  caller is released once the arrays are on the host; the files are written in the
  background, `wait` is the rest)."""
  from decoupled_jax.training.checkpoint import Checkpointer
  out = {"params": count_params(state.params)}
  for mode in ("sync", "async"):
    stalls, totals = [], []
    with tempfile.TemporaryDirectory() as tmp:
      ck = Checkpointer(tmp, max_to_keep=1, async_save=mode == "async")
      for i in range(reps):
        t0 = time.perf_counter()
        ck.save(i + 1, state, state.inference_params(True), {"step": i + 1})
        t1 = time.perf_counter()
        ck.wait()
        stalls.append(t1 - t0)
        totals.append(time.perf_counter() - t0)
      ck.close()
    out[mode] = {"stall_s": float(np.median(stalls)), "total_s": float(np.median(totals))}
  return out


def bench_sampling(arch, policy, params, reps):
  horizon = config_lib.default_horizon(arch)
  obs = {"features": jnp.zeros((1, N_OBS, COND_DIM), jnp.float32)}
  out = {}
  for name, head_cfg in (("ddpm100", dict(type="diffusion", diffusion=dict(
                             sampler="ddpm", num_inference_steps=100))),
                         ("ddim10", dict(type="diffusion", diffusion=dict(
                             sampler="ddim", num_inference_steps=10))),
                         ("flow10", dict(type="flow", flow=dict(num_steps=10)))):
    head = make_head(head_cfg)
    sample = jax.jit(make_sample_fn(policy, head, (horizon, 10)))
    t0 = time.perf_counter()
    jax.block_until_ready(sample(params, obs, jax.random.PRNGKey(0)))
    compile_s = time.perf_counter() - t0
    lat = timed(lambda: sample(params, obs, jax.random.PRNGKey(1)), reps)
    out[name] = {"latency_ms": 1000 * lat, "compile_s": compile_s}
  return out


def bench_loader(batch, steps):
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
                 "data_wait_frac": data_wait_fraction(sampler, keys, batch, steps)}
  return out


def data_wait_fraction(sampler, keys, batch, steps):
  """The fraction of a DP-MLP train step's wall time the loop waits for host batches when
  they come through the trainer's prefetch thread (`training/prefetch.py`)."""
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
                host_batches=util.seeded_batches(len(sampler), batch, 0, sampler.get_batch,
                                                 sharding.process_rows(batch)))
  state, tx, _, _ = trainer.build_initial_state(cfg, stage)
  mesh = sharding.make_mesh()
  step = jax.jit(make_train_step(policy, stage.head, tx), donate_argnums=(0,))
  batches = Prefetcher(stage.host_batches(0), lambda b: sharding.shard_batch(b, mesh), 2)
  key = jax.random.PRNGKey(0)
  state, _ = step(state, next(batches), key)          # compile
  jax.block_until_ready(state)
  wait, t0 = 0.0, time.perf_counter()
  for _ in range(steps):
    tw = time.perf_counter()
    b = next(batches)
    wait += time.perf_counter() - tw
    state, _ = step(state, b, key)
  jax.block_until_ready(state)
  batches.close()
  return wait / (time.perf_counter() - t0)


def run(opts: Options, output: str) -> dict:
  """Every measurement `opts` asks for: prints the table, writes `output` (JSON), returns it."""
  reference = torch_reference(opts)
  print(f"JAX {jax.__version__}, {jax.device_count()} x {jax.devices()[0].platform}; "
        f"{opts.steps} timed steps per row, compile excluded")
  peak, stream = xla.gemm_rate(), xla.stream_rate()
  print(f"fp32 GEMM rate (jitted 2048^3 matmul, this process): {peak / 1e9:.1f} GFLOP/s; "
        f"memory bandwidth of an elementwise pass: {stream / 1e9:.1f} GB/s")
  results = {"train": [], "sampling": {}, "loader": None, "device": str(jax.devices()[0]),
             "gemm_gflops": peak / 1e9, "stream_gbps": stream / 1e9}
  header = (f"{'backbone':<10} {'mode':<10} {'B':>3} {'step ms':>9} {'steps/s':>8} "
            f"{'samples/s':>10} {'compile s':>9} {'trainable/total':>22} {'GFLOP/s':>8} "
            f"{'of peak':>7} {'optim ms':>8} {'PyTorch ms':>10} {'speedup':>8}")
  print(header)
  print("-" * len(header))
  dpc_state = None   # the DP-C normal state, kept for checkpoint_stall
  for arch in opts.backbones:
    batch = opts.dpc_batch if arch == "dp_c" else opts.batch
    normal_model = None
    for mode in opts.modes:
      row, model = bench_train(arch, mode, batch, peak, opts, reference)
      if mode == "normal":
        normal_model = model
      results["train"].append(row)
      ref = f"{row['pytorch_step_ms']:.0f}" if row["pytorch_step_ms"] else "-"
      sp = f"{row['speedup_vs_pytorch']:.2f}x" if row["speedup_vs_pytorch"] else "-"
      print(f"{arch:<10} {mode:<10} {batch:>3} {row['step_ms']:>9.1f} {row['steps_per_s']:>8.2f} "
            f"{row['samples_per_s']:>10.1f} {row['compile_s']:>9.1f} "
            f"{row['trainable']:>10,}/{row['params']:<11,} {row['gflops']:>8.1f} "
            f"{100 * row['peak_fraction']:>6.0f}% {row['optimizer_ms']:>8.1f} {ref:>10} {sp:>8}",
            flush=True)
      if row["profile"]:
        print("    op time by kind: " + ", ".join(
            f"{k} {100 * v:.0f} %" for k, v in row["profile"]["by_kind"].items()), flush=True)
    if opts.sampling:
      policy, state, cfg = normal_model or model
      results["sampling"][arch] = bench_sampling(arch, policy, state.inference_params(),
                                                 opts.sample_reps)
    if arch == "dp_c" and normal_model is not None and opts.checkpoint_stall:
      dpc_state = normal_model[1]
  if opts.sampling:
    print("\nsampling latency, one observation (ms): " + "  ".join(
        f"{a}: " + ", ".join(f"{k} {v['latency_ms']:.1f}" for k, v in s.items())
        for a, s in results["sampling"].items()))
    for a, s in results["sampling"].items():
      for ours, calls in (("ddim10", 10), ("ddpm100", 100)):
        ref = reference.get((a, 1, f"sample_{calls}_calls"))
        if ref is not None and ours in s:
          s[ours]["pytorch_ms"] = 1000 * ref
          print(f"  {a} {ours}: PyTorch {calls} denoiser calls {1000 * ref:.1f} ms -> "
                f"{1000 * ref / s[ours]['latency_ms']:.2f}x")
  results["torch_reference"] = {"|".join(map(str, k)): v for k, v in reference.items()}
  if opts.loader:
    results["loader"] = bench_loader(opts.batch, opts.steps)
    fastest = max(r["steps_per_s"] for r in results["train"])
    print("loader (B=%d): " % opts.batch + ", ".join(
        f"{k} {v['batches_per_s']:.0f} batches/s (train loop waits {100 * v['data_wait_frac']:.1f} % "
        f"of the time)" for k, v in results["loader"].items())
          + f"; the fastest train step consumes {fastest:.1f} batches/s")
  if opts.checkpoint_stall:
    if dpc_state is None:
      dpc_state = build_train_step("dp_c", "normal", opts.dpc_batch, opts.conditioning)[2]
    st = results["checkpoint_stall"] = bench_checkpoint_stall(dpc_state)
    dpc_state = None
    print(f"checkpoint of the DP-C TrainState ({st['params']:,} params + optimizer state + EMA): "
          f"synchronous save blocks {st['sync']['stall_s']:.2f} s; asynchronous blocks "
          f"{st['async']['stall_s']:.2f} s (written in the background, "
          f"{st['async']['total_s']:.2f} s until done)", flush=True)
  if opts.compile_cache:
    cc = results["compile_cache"] = bench_compile_cache(opts.dpc_batch)
    print(f"DP-C train step (B={opts.dpc_batch}) in a fresh process: compile "
          f"{cc['cold']['compile_s']:.1f} s with an empty persistent cache, "
          f"{cc['cached']['compile_s']:.1f} s from the cache ({cc['cache_mb']:.0f} MB); "
          f"tracing + lowering {cc['cold']['lower_s']:.1f} s / {cc['cached']['lower_s']:.1f} s")
  util.write_json(output, results, indent=2, makedirs=True)
  print(f"wrote {output}")
  return results
