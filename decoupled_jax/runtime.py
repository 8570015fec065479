"""Process environment every entry point sets *before* jax or mujoco is imported.

XLA:CPU runs MJX 50-400x slower with its default fusion emitters
(docs/performance.md); the flag does not slow ordinary training. Headless rendering
uses EGL unless the caller chose another MUJOCO_GL. Idempotent; this module imports nothing
heavy, so `import decoupled_jax.runtime` is safe at the top of a binary. Also the binaries'
logging set-up (`setup_logging`, `log_devices`).
"""
import logging
import os

XLA_CPU_FLAG = "--xla_cpu_use_fusion_emitters=false"


def configure_environment() -> None:
  flags = os.environ.get("XLA_FLAGS", "")
  if "xla_cpu_use_fusion_emitters" not in flags:
    os.environ["XLA_FLAGS"] = (flags + " " + XLA_CPU_FLAG).strip()
  os.environ.setdefault("MUJOCO_GL", "egl")


class _DropLibraryChatter(logging.Filter):
  """Orbax logs every checkpoint step at INFO through absl; keep its warnings only."""

  def filter(self, record):
    return record.levelno >= logging.WARNING or "/orbax/" not in record.pathname


def setup_logging() -> None:
  """INFO logging with timestamps for a binary (`cli.run` calls it), orbax's chatter dropped."""
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
  for handler in logging.getLogger().handlers + logging.getLogger("absl").handlers:
    handler.addFilter(_DropLibraryChatter())


def log_devices() -> None:
  """Logs the JAX version and devices (imports jax: call it after `configure_environment`)."""
  import jax
  logging.info("JAX %s on %d device(s): %s", jax.__version__, jax.device_count(), jax.devices())
