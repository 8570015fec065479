"""Benchmark Panda FK: MJX vs plain-JAX tree FK vs a C `mj_kinematics` loop; stage-1 generator.

  python experiments/benchmark_fk.py --out=/tmp/benchmark_fk.json

Prints a table and writes JSON: compile time and poses/s per batch size for each FK, generator
windows/s per batch size and the first-batch latency of a fresh sampler (build + compile + run).
"""
import os

from decoupled_jax import cli

cli.prelude()  # before jax / mujoco are imported

import json  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402

from absl import flags  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import mujoco  # noqa: E402
import numpy as np  # noqa: E402

from decoupled_jax.kinematics import panda, trajectories  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_list("batch_sizes", ["256", "4096", "16384"], "FK batch sizes.")
flags.DEFINE_list("gen_batch_sizes", ["256", "1024"], "Generator batch sizes (windows).")
flags.DEFINE_integer("horizon", 16, "Generator window length.")
flags.DEFINE_float("min_seconds", 1.0, "Minimum timed duration per measurement.")
flags.DEFINE_bool("mjx_generator", True, "Also time the generator with the 'mjx' FK backend.")
flags.DEFINE_string("out", "benchmark_fk.json", "Where to write the JSON results.")


def _timeit(fn, min_seconds):
  """Seconds per call (after one warm call), repeated until min_seconds have passed."""
  jax.block_until_ready(fn())
  n, t0 = 0, time.perf_counter()
  while True:
    jax.block_until_ready(fn())
    n += 1
    dt = time.perf_counter() - t0
    if dt >= min_seconds and n >= 3:
      return dt / n


def _compile(jitted, *args):
  t0 = time.perf_counter()
  compiled = jitted.lower(*args).compile()
  return compiled, time.perf_counter() - t0


def main(argv):
  del argv
  res = {"device": str(jax.devices()[0]), "jax": jax.__version__, "mujoco": mujoco.__version__,
         "cpu_count": os.cpu_count(), "machine": platform.machine(),
         "load_avg_start": os.getloadavg(), "xla_flags": os.environ["XLA_FLAGS"],
         "fk": [], "generator": []}
  model, info = panda.load_panda_kinematics()
  res["model_source"] = info.source
  t0 = time.perf_counter()
  mjx_model = panda.put_mjx_model(model)
  res["mjx_put_model_s"] = time.perf_counter() - t0
  tree = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), panda.kinematics_tree(model))
  rng = np.random.default_rng(0)
  data = mujoco.MjData(model)
  fk_mjx = jax.jit(panda.fk_mjx_matrix)
  fk_tree = jax.jit(panda.fk_tree_matrix)
  for b in map(int, FLAGS.batch_sizes):
    q = rng.uniform(info.joint_lower, info.joint_upper, size=(b, 7))
    qj = jnp.asarray(q, jnp.float32)
    row = {"batch": b}
    c_loop = _timeit(lambda: panda.fk_cpu(model, q, data=data), FLAGS.min_seconds)
    row["c_loop_poses_per_s"] = b / c_loop
    for name, fn, params in (("mjx", fk_mjx, mjx_model), ("tree", fk_tree, tree)):
      compiled, ct = _compile(fn, params, qj)
      sec = _timeit(lambda: compiled(params, qj), FLAGS.min_seconds)
      row[f"{name}_compile_s"] = ct
      row[f"{name}_poses_per_s"] = b / sec
    res["fk"].append(row)
    print(f"FK B={b:6d}: C loop {row['c_loop_poses_per_s']:10.0f} poses/s | "
          f"MJX {row['mjx_poses_per_s']:10.0f} poses/s (compile {row['mjx_compile_s']:.1f} s) | "
          f"tree {row['tree_poses_per_s']:10.0f} poses/s (compile {row['tree_compile_s']:.1f} s)",
          flush=True)

  backends = ["tree"] + (["mjx"] if FLAGS.mjx_generator else [])
  for backend in backends:
    cfg = dict(horizon=FLAGS.horizon, fk_backend=backend)
    for b in map(int, FLAGS.gen_batch_sizes):
      t0 = time.perf_counter()
      sampler = trajectories.make_fk_window_sampler(cfg)
      out = sampler(jax.random.PRNGKey(0), b)
      jax.block_until_ready(out)
      first = time.perf_counter() - t0
      keys = iter(jax.random.split(jax.random.PRNGKey(1), 100000))
      sec = _timeit(lambda: sampler(next(keys), b), FLAGS.min_seconds)
      # C-loop baseline for the FK part of the same batch (B*H poses), numpy sampling excluded.
      qs = np.asarray(out[0])[..., :7].reshape(-1, 7)
      c_sec = _timeit(lambda: panda.fk_cpu(model, qs, data=data), FLAGS.min_seconds / 2)
      row = {"backend": backend, "batch": b, "horizon": FLAGS.horizon,
             "first_batch_s": first, "windows_per_s": b / sec, "ms_per_batch": 1e3 * sec,
             "c_loop_fk_only_windows_per_s": b / c_sec}
      res["generator"].append(row)
      print(f"generator[{backend}] B={b:5d} H={FLAGS.horizon}: first batch {first:5.1f} s, "
            f"{row['windows_per_s']:9.0f} windows/s ({row['ms_per_batch']:.1f} ms/batch); "
            f"C loop FK alone {row['c_loop_fk_only_windows_per_s']:9.0f} windows/s", flush=True)
  res["load_avg_end"] = os.getloadavg()
  out_path = FLAGS.out
  if os.path.dirname(out_path):
    os.makedirs(os.path.dirname(out_path), exist_ok=True)
  with open(out_path, "w") as f:
    json.dump(res, f, indent=1)
  print(f"wrote {out_path}; load average start {res['load_avg_start']}, end {res['load_avg_end']}")


if __name__ == "__main__":
  cli.run(main)
