"""Process environment every entry point sets *before* jax or mujoco is imported.

XLA:CPU runs MJX 50-400x slower with its default fusion emitters
(docs/performance.md); the flag does not slow ordinary training. Headless rendering
uses EGL unless the caller chose another MUJOCO_GL. Idempotent; this module imports nothing
heavy, so `import decoupled_jax.runtime` is safe at the top of a binary.
"""
import os

XLA_CPU_FLAG = "--xla_cpu_use_fusion_emitters=false"


def configure_environment() -> None:
  flags = os.environ.get("XLA_FLAGS", "")
  if "xla_cpu_use_fusion_emitters" not in flags:
    os.environ["XLA_FLAGS"] = (flags + " " + XLA_CPU_FLAG).strip()
  os.environ.setdefault("MUJOCO_GL", "egl")
