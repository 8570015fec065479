"""decoupled_jax/perf (what the experiments/benchmark*.py binaries run): the HLO op
classifier and timers, thin binaries, and smoke runs of benchmark_fk.py / benchmark_serve.py
at tiny sizes (benchmark.py: test_binaries.py; perf's place in the layers:
test_architecture.py)."""
import json
import os

import jax
import jax.numpy as jnp
import pytest

from decoupled_jax.perf import timing, xla
from helpers import REPO, run_binary


def test_hlo_op_kinds_names_the_matmul_and_the_rest():
  f = jax.jit(lambda x, y: jnp.tanh(x @ y).sum())
  x = jnp.ones((32, 32), jnp.float32)
  compiled = f.lower(x, x).compile()
  kinds = xla.hlo_op_kinds(compiled.as_text())
  assert "matmul" in kinds.values() and set(kinds.values()) - {"matmul"}, kinds
  assert xla.step_flops(compiled) >= 2 * 32 ** 3
  assert timing.timed(lambda: f(x, x), 2) > 0 and timing.best_time(lambda: f(x, x), 2) > 0


def test_experiment_binaries_are_thin():
  """Every experiments/*.py is flags + config + a call into the library."""
  folder = os.path.join(REPO, "experiments")
  long = {f: n for f in sorted(os.listdir(folder)) if f.endswith(".py")
          for n in [len(open(os.path.join(folder, f)).read().splitlines())] if n >= 100}
  assert not long, long


@pytest.mark.slow
def test_benchmark_fk_binary_smoke(tmp_path):
  out = tmp_path / "fk.json"
  run_binary("benchmark_fk.py", "--batch_sizes=8", "--gen_batch_sizes=4", "--horizon=4",
             "--min_seconds=0.01", "--nomjx_generator", f"--out={out}")
  r = json.load(open(out))
  row, = r["fk"]
  assert row["batch"] == 8 and all(row[f"{k}_poses_per_s"] > 0 for k in ("mjx", "tree", "c_loop"))
  gen, = r["generator"]
  assert gen["backend"] == "tree" and gen["windows_per_s"] > 0
  assert "xla_cpu_use_fusion_emitters" in r["xla_flags"]


@pytest.mark.slow
def test_benchmark_serve_binary_smoke(tmp_path):
  out = tmp_path / "serve.json"
  run_binary("benchmark_serve.py", "--heads=ddim", "--inference_steps=2", "--batch_sizes=1",
             "--clients=1", "--requests=3", "--warmup_requests=1", f"--output={out}")
  r = json.load(open(out))
  row, = r["rows"]
  assert row["head"] == "ddim-2" and row["in_process"]["n"] == 3
  served = row["served"]["1"]
  assert served["n"] == 3 and served["requests_per_s"] > 0 and r["table"]
