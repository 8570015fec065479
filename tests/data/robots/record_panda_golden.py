"""Records the Panda stage-1 generator's output (tests/data/robots/panda_windows_golden.npz).

Run ONCE, with the code *before* the generic-robot change (issue 21), to freeze what the Panda
path produced; tests/test_robots.py checks the current code still gives the same bits:

  . .venv/bin/activate && python tests/data/robots/record_panda_golden.py

Re-running it with newer code only re-records the newer code's output. The file's `jax`,
`backend` and `cpu` fields say what produced it: the test compares bit for bit under the same
jax on the same backend and CPU model, to 1e-6 elsewhere (XLA may round differently). (The
`backend` and `cpu` fields were added to the recorded file afterwards; its arrays are the
originals.)
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))))
from decoupled_jax.runtime import configure_environment  # noqa: E402

configure_environment()

import jax  # noqa: E402
import numpy as np  # noqa: E402

from decoupled_jax import config_lib  # noqa: E402
from decoupled_jax.kinematics import trajectories  # noqa: E402

CASES = {   # name -> (FKWindowConfig overrides, batch)
    "jp16": (dict(horizon=16, signal="jp"), 16),
    "eepose10_hand": (dict(horizon=10, signal="eepose", site="hand"), 8),
    "none10_nobox": (dict(horizon=10, signal="none", workspace_box=()), 8),
    "jp16_mjx": (dict(horizon=16, signal="jp", fk_backend="mjx", via_candidates=4), 4),
}


def cpu_model() -> str:
  """What the exact comparison is tied to besides the jax version (XLA:CPU codegen)."""
  import platform
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def record(out_path):
  out = {"jax": np.array(jax.__version__), "backend": np.array(jax.default_backend()),
         "cpu": np.array(cpu_model())}
  for name, (overrides, b) in CASES.items():
    s = trajectories.make_fk_window_sampler(overrides)
    cond, target, qpos, grip = s(jax.random.PRNGKey(7), b, return_joints=True)
    for k, v in (("cond", cond), ("target", target), ("qpos", qpos), ("gripper", grip)):
      out[f"{name}/{k}"] = np.asarray(v)
  # The stage's normalised device batch (fk config from the pretrain config, normaliser).
  from decoupled_jax.pipelines import pretrain
  c = config_lib.from_file(os.path.join(os.path.dirname(__file__), "..", "..", "..", "configs",
                                        "pretrain.py"), "debug")
  stage = pretrain.make_stage(c)
  batch = jax.jit(stage.device_batch_fn)(jax.random.PRNGKey(3))
  out["stage/cond"] = np.asarray(batch["obs"]["cond"])
  out["stage/actions"] = np.asarray(batch["actions"])
  import json
  out["stage/normalizer"] = np.array(json.dumps(stage.meta["normalizer"], sort_keys=True))
  np.savez_compressed(out_path, **out)
  return out


if __name__ == "__main__":
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "panda_windows_golden.npz")
  record(path)
  print("wrote", path, os.path.getsize(path), "bytes")
