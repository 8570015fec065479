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
    Machines differ: only ratios measured side by side mean anything (docs/performance.md);
  * each train step's achieved FLOP/s (XLA's cost analysis of the compiled step / step time)
    as a fraction of the fp32 GEMM rate a large jitted matmul reaches in this process;
  * --profile: per-op time of each train step (jax.profiler trace, XLA thunks by name);
  * --compile_cache: DP-C train-step compile time with an empty vs a filled persistent
    compilation cache (two fresh processes sharing one cache directory);
  * --checkpoint_stall: how long saving the DP-C TrainState blocks training, synchronous vs
    orbax's asynchronous save (the trainer's `config.train.async_checkpoints`).
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
from decoupled_jax.training.train_state import apply_gradients, make_train_step  # noqa: E402

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
flags.DEFINE_bool("profile", False, "Also trace each train step and report per-op times.")
flags.DEFINE_bool("compile_cache", False, "Also time DP-C compilation, cold vs from the "
                  "persistent compilation cache (two subprocesses).")
flags.DEFINE_bool("checkpoint_stall", False, "Also time how long saving the DP-C TrainState "
                  "blocks the training loop, synchronous vs asynchronous.")
flags.DEFINE_string("compile_probe", "", "(internal) compile the DP-C train step with this "
                    "cache directory, print its timings as JSON and exit.")
# Off here (on for the training binaries, decoupled_jax/cli.py): the table's compile times are
# cold compiles; --compile_cache measures what the cache saves.
flags.DEFINE_bool("compilation_cache", False, "Use JAX's persistent compilation cache.")
flags.DEFINE_string("compilation_cache_dir", os.path.expanduser("~/.cache/decoupled_jax/xla"),
                    "Persistent compilation cache directory.")
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


def best_time(fn, reps):
  """Fastest of `reps` timed calls of `fn` after one warm-up (for peak rates; `timed` gives
  the mean)."""
  jax.block_until_ready(fn())
  best = float("inf")
  for _ in range(reps):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    best = min(best, time.perf_counter() - t0)
  return best


def build_train_step(arch, mode, batch):
  """(config, policy, state, jitted step, batch data, key, init seconds, optimizer) at the
  stage-2 shapes."""
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
  # The trainer's key (config.rng_impl): dropout bits as training draws them.
  return cfg, policy, state, step, batch_data, trainer.run_key(cfg), init_s, tx


def step_flops(compiled) -> float:
  """FLOPs of one call of a compiled XLA program (XLA's cost analysis)."""
  ca = compiled.cost_analysis()
  if isinstance(ca, (list, tuple)):
    ca = ca[0] if ca else {}
  return float((ca or {}).get("flops", float("nan")))


def gemm_rate(n: int = 2048, reps: int = 5) -> float:
  """FLOP/s of a jitted fp32 n x n x n matmul in this process (best of `reps`): the peak the
  train steps' achieved FLOP/s are compared with."""
  a = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (n, n)), jnp.float32)
  f = jax.jit(lambda x, y: x @ y)
  return 2.0 * n ** 3 / best_time(lambda: f(a, a), reps)


def _hlo_op_kinds(hlo_text: str) -> dict:
  """{instruction name: kind} for the instructions of a compiled HLO module: 'matmul' where
  the instruction is or fuses a dot/convolution (XLA:CPU fuses epilogues into them), else
  'rng', 'reduce', 'copy/transpose' or 'elementwise' by what its computation contains."""
  import re
  comps, cur = {}, None
  for line in hlo_text.splitlines():
    m = re.match(r"^(?:ENTRY )?%?([\w.\-]+) .*\{\s*$", line)
    if m and not line.startswith(" "):
      cur = comps.setdefault(m.group(1), [])
    elif cur is not None and line.startswith("  "):
      cur.append(line)

  def body(name, seen=()):
    lines = list(comps.get(name, ()))
    for ln in comps.get(name, ()):
      for callee in re.findall(r"(?:calls|to_apply)=%([\w.\-]+)", ln):
        if callee not in seen:
          lines += body(callee, seen + (name,))
    return lines

  def kind(lines):
    text = "\n".join(lines)
    if re.search(r" (dot|convolution)\(", text):
      return "matmul"
    if "rng" in text:
      return "rng"
    if re.search(r" reduce(-window)?\(", text):
      return "reduce"
    if all(re.search(r" (parameter|copy|transpose|bitcast|reshape|broadcast|constant|slice|"
                     r"concatenate|dynamic-slice|dynamic-update-slice|tuple|"
                     r"get-tuple-element)\(", ln) for ln in lines):
      return "copy/transpose"
    return "elementwise"

  out = {}
  for comp_lines in comps.values():
    for ln in comp_lines:
      m = re.match(r"\s*(?:ROOT )?%([\w.\-]+) = .*", ln)
      if not m:
        continue
      callees = re.findall(r"calls=%([\w.\-]+)", ln)
      out[m.group(1)] = kind([ln] + sum((body(c) for c in callees), []))
  return out


def stream_rate(n: int = 1 << 26, reps: int = 5) -> float:
  """Bytes/s of a jitted a * s + b over float32 arrays of n elements (two reads, one write):
  the memory bandwidth an elementwise pass over parameters gets in this process."""
  a = jnp.ones((n,), jnp.float32)
  b = jnp.ones((n,), jnp.float32)
  f = jax.jit(lambda x, y: x * 1.0001 + y)
  return 3 * 4 * n / best_time(lambda: f(a, b), reps)


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


def op_profile(run, hlo_text: str, top: int = 10) -> dict:
  """Per-op time of `run()` (a few train steps) from a jax.profiler trace: the XLA:CPU
  thunk events summed by instruction name, with each instruction's kind (`_hlo_op_kinds`),
  and the totals per kind. Shares are of the summed op time (ops can overlap on 2 cores)."""
  import glob
  import tempfile
  from jax.profiler import ProfileData
  kinds = _hlo_op_kinds(hlo_text)
  with tempfile.TemporaryDirectory() as tmp:
    jax.profiler.start_trace(tmp)
    try:
      run()
    finally:
      jax.profiler.stop_trace()
    path = glob.glob(os.path.join(tmp, "**", "*.xplane.pb"), recursive=True)[0]
    data = ProfileData.from_file(path)
  per_op = {}
  for plane in data.planes:
    for line in plane.lines:
      if not line.name.startswith("tf_XLA"):
        continue
      for ev in line.events:
        name = ev.name.split(":")[0]
        if name in kinds and ev.duration_ns > 0:
          per_op[name] = per_op.get(name, 0.0) + ev.duration_ns
  total = max(sum(per_op.values()), 1.0)
  by_kind = {}
  for k, v in per_op.items():
    by_kind[kinds[k]] = by_kind.get(kinds[k], 0.0) + v
  rows = sorted(per_op.items(), key=lambda kv: -kv[1])[:top]
  return {"by_kind": {k: v / total for k, v in sorted(by_kind.items(), key=lambda kv: -kv[1])},
          "top": [{"op": k, "kind": kinds[k], "share": v / total} for k, v in rows],
          "traced_op_ms": total / 1e6}


def bench_train(arch, mode, batch, peak):
  cfg, policy, state, step, batch_data, key, init_s, tx = build_train_step(arch, mode, batch)
  horizon = config_lib.default_horizon(arch)
  t0 = time.perf_counter()
  compiled = step.lower(state, batch_data, key).compile()
  compile_s = time.perf_counter() - t0
  flops = step_flops(compiled)
  state, m = compiled(state, batch_data, key)          # warm-up
  jax.block_until_ready(state)
  t0 = time.perf_counter()
  for _ in range(FLAGS.steps):
    state, m = compiled(state, batch_data, key)
  jax.block_until_ready(state)
  step_s = (time.perf_counter() - t0) / FLAGS.steps
  ops = None
  if FLAGS.profile:
    def run():
      nonlocal state
      for _ in range(3):
        state, _ = compiled(state, batch_data, key)
        jax.block_until_ready(state)
    ops = op_profile(run, compiled.as_text())
  n_params = count_params(state.params)
  n_train = count_params(state.ema)
  opt_ms = optimizer_ms(cfg, state, tx)
  ref = REFERENCE.get((arch, batch, mode))
  return {"backbone": arch, "mode": mode, "batch": batch, "horizon": horizon,
          "step_ms": 1000 * step_s, "steps_per_s": 1 / step_s, "samples_per_s": batch / step_s,
          "compile_s": compile_s, "init_s": init_s, "params": n_params, "trainable": n_train,
          "gflop_per_step": flops / 1e9, "gflops": flops / step_s / 1e9,
          "peak_fraction": flops / step_s / peak, "profile": ops, "optimizer_ms": opt_ms,
          "pytorch_step_ms": None if ref is None else 1000 * ref,
          "speedup_vs_pytorch": None if ref is None else ref / step_s}, (policy, state, cfg)


def compile_probe(cache_dir: str) -> dict:
  """Lower + compile the DP-C normal train step with `cache_dir` as the persistent cache."""
  cli.enable_compilation_cache(cache_dir)
  _, _, state, step, batch_data, key, _, _ = build_train_step("dp_c", "normal", FLAGS.dpc_batch)
  t0 = time.perf_counter()
  lowered = step.lower(state, batch_data, key)
  t1 = time.perf_counter()
  lowered.compile()
  t2 = time.perf_counter()
  return {"lower_s": t1 - t0, "compile_s": t2 - t1}


def bench_compile_cache() -> dict:
  """DP-C compile: an empty cache directory (first run), then the same directory again."""
  import subprocess
  import sys
  import tempfile
  out = {}
  with tempfile.TemporaryDirectory() as cache:
    for name in ("cold", "cached"):
      res = subprocess.run([sys.executable, os.path.abspath(__file__), f"--compile_probe={cache}",
                            f"--dpc_batch={FLAGS.dpc_batch}", "--nocompilation_cache"],
                           check=True, capture_output=True, text=True)
      out[name] = json.loads(res.stdout.strip().splitlines()[-1])
    out["cache_mb"] = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(cache)
                          for f in fs) / 2 ** 20
  return out


def bench_checkpoint_stall(state, reps: int = 2) -> dict:
  """Seconds `Checkpointer.save` blocks the caller for this TrainState (+ its inference
  params and a meta item, as the trainer saves them): synchronous, then asynchronous (the
  caller is released once the arrays are on the host; the files are written in the
  background, `wait` is the rest)."""
  import tempfile
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
  if FLAGS.compile_probe:
    print(json.dumps(compile_probe(FLAGS.compile_probe)))
    return
  REFERENCE.update(torch_reference())
  print(f"JAX {jax.__version__}, {jax.device_count()} x {jax.devices()[0].platform}; "
        f"{FLAGS.steps} timed steps per row, compile excluded")
  peak, stream = gemm_rate(), stream_rate()
  print(f"fp32 GEMM rate (jitted 2048^3 matmul, this process): {peak / 1e9:.1f} GFLOP/s; "
        f"memory bandwidth of an elementwise pass: {stream / 1e9:.1f} GB/s")
  results = {"train": [], "sampling": {}, "loader": None, "device": str(jax.devices()[0]),
             "gemm_gflops": peak / 1e9, "stream_gbps": stream / 1e9}
  header = (f"{'backbone':<10} {'mode':<10} {'B':>3} {'step ms':>9} {'steps/s':>8} "
            f"{'samples/s':>10} {'compile s':>9} {'trainable/total':>22} {'GFLOP/s':>8} "
            f"{'of peak':>7} {'optim ms':>8} {'PyTorch ms':>10} {'speedup':>8}")
  print(header)
  print("-" * len(header))
  dpc_state = None   # the DP-C normal state, kept for --checkpoint_stall
  for arch in FLAGS.backbones:
    batch = FLAGS.dpc_batch if arch == "dp_c" else FLAGS.batch
    normal_model = None
    for mode in FLAGS.modes:
      row, model = bench_train(arch, mode, batch, peak)
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
    if FLAGS.sampling:
      policy, state, cfg = normal_model or model
      results["sampling"][arch] = bench_sampling(arch, policy, state.inference_params())
    if arch == "dp_c" and normal_model is not None and FLAGS.checkpoint_stall:
      dpc_state = normal_model[1]
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
  if FLAGS.checkpoint_stall:
    if dpc_state is None:
      dpc_state = build_train_step("dp_c", "normal", FLAGS.dpc_batch)[2]
    st = results["checkpoint_stall"] = bench_checkpoint_stall(dpc_state)
    dpc_state = None
    print(f"checkpoint of the DP-C TrainState ({st['params']:,} params + optimizer state + EMA): "
          f"synchronous save blocks {st['sync']['stall_s']:.2f} s; asynchronous blocks "
          f"{st['async']['stall_s']:.2f} s (written in the background, "
          f"{st['async']['total_s']:.2f} s until done)", flush=True)
  if FLAGS.compile_cache:
    cc = results["compile_cache"] = bench_compile_cache()
    print(f"DP-C train step (B={FLAGS.dpc_batch}) in a fresh process: compile "
          f"{cc['cold']['compile_s']:.1f} s with an empty persistent cache, "
          f"{cc['cached']['compile_s']:.1f} s from the cache ({cc['cache_mb']:.0f} MB); "
          f"tracing + lowering {cc['cold']['lower_s']:.1f} s / {cc['cached']['lower_s']:.1f} s")
  os.makedirs(os.path.dirname(os.path.abspath(FLAGS.output)), exist_ok=True)
  with open(FLAGS.output, "w") as f:
    json.dump(results, f, indent=2)
  print(f"wrote {FLAGS.output}")


if __name__ == "__main__":
  cli.run(main)
