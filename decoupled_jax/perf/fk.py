"""Panda FK: MJX vs plain-JAX tree FK vs a C `mj_kinematics` loop; the stage-1 window
generator (`experiments/benchmark_fk.py`; figures: decoupled_jax/kinematics/panda.py and
docs/performance.md, "XLA:CPU", on why MJX needs the XLA flag `cli.prelude()` sets).

`run(...)` prints a table and writes JSON: compile time and poses/s per batch size for each FK,
generator windows/s per batch size and the first-batch latency of a fresh sampler (build +
compile + run).
"""
import os
import platform
import time
from typing import Sequence

import jax
import jax.numpy as jnp
import mujoco
import numpy as np

from decoupled_jax import util
from decoupled_jax.kinematics import panda, trajectories
from decoupled_jax.perf.timing import compile_timed, time_for


def run(batch_sizes: Sequence[int], gen_batch_sizes: Sequence[int], horizon: int,
        min_seconds: float, mjx_generator: bool, out_path: str) -> dict:
  """FK rows per batch size, then generator rows per FK backend and batch size; writes
  `out_path` (JSON) and returns what it wrote."""
  res = {"device": str(jax.devices()[0]), "jax": jax.__version__, "mujoco": mujoco.__version__,
         "cpu_count": os.cpu_count(), "machine": platform.machine(),
         "load_avg_start": os.getloadavg(), "xla_flags": os.environ.get("XLA_FLAGS", ""),
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
  for b in map(int, batch_sizes):
    q = rng.uniform(info.joint_lower, info.joint_upper, size=(b, 7))
    qj = jnp.asarray(q, jnp.float32)
    row = {"batch": b}
    c_loop = time_for(lambda: panda.fk_cpu(model, q, data=data), min_seconds)
    row["c_loop_poses_per_s"] = b / c_loop
    for name, fn, params in (("mjx", fk_mjx, mjx_model), ("tree", fk_tree, tree)):
      compiled, ct = compile_timed(fn, params, qj)
      sec = time_for(lambda: compiled(params, qj), min_seconds)
      row[f"{name}_compile_s"] = ct
      row[f"{name}_poses_per_s"] = b / sec
    res["fk"].append(row)
    print(f"FK B={b:6d}: C loop {row['c_loop_poses_per_s']:10.0f} poses/s | "
          f"MJX {row['mjx_poses_per_s']:10.0f} poses/s (compile {row['mjx_compile_s']:.1f} s) | "
          f"tree {row['tree_poses_per_s']:10.0f} poses/s (compile {row['tree_compile_s']:.1f} s)",
          flush=True)

  backends = ["tree"] + (["mjx"] if mjx_generator else [])
  for backend in backends:
    cfg = dict(horizon=horizon, fk_backend=backend)
    for b in map(int, gen_batch_sizes):
      t0 = time.perf_counter()
      sampler = trajectories.make_fk_window_sampler(cfg)
      out = sampler(jax.random.PRNGKey(0), b)
      jax.block_until_ready(out)
      first = time.perf_counter() - t0
      keys = iter(jax.random.split(jax.random.PRNGKey(1), 100000))
      sec = time_for(lambda: sampler(next(keys), b), min_seconds)
      # C-loop baseline for the FK part of the same batch (B*H poses), numpy sampling excluded.
      qs = np.asarray(out[0])[..., :7].reshape(-1, 7)
      c_sec = time_for(lambda: panda.fk_cpu(model, qs, data=data), min_seconds / 2)
      row = {"backend": backend, "batch": b, "horizon": horizon,
             "first_batch_s": first, "windows_per_s": b / sec, "ms_per_batch": 1e3 * sec,
             "c_loop_fk_only_windows_per_s": b / c_sec}
      res["generator"].append(row)
      print(f"generator[{backend}] B={b:5d} H={horizon}: first batch {first:5.1f} s, "
            f"{row['windows_per_s']:9.0f} windows/s ({row['ms_per_batch']:.1f} ms/batch); "
            f"C loop FK alone {row['c_loop_fk_only_windows_per_s']:9.0f} windows/s", flush=True)
  res["load_avg_end"] = os.getloadavg()
  util.write_json(out_path, res, indent=1, makedirs=True)
  print(f"wrote {out_path}; load average start {res['load_avg_start']}, end {res['load_avg_end']}")
  return res
