"""What every binary in `experiments/` shares: the process environment, logging, multi-host
start-up, and turning user errors into one line on stderr.

    from decoupled_jax import cli
    cli.prelude()                 # before jax / mujoco are imported
    ...
    if __name__ == "__main__":
      cli.run(main)

Flags every binary gets: `--verbose`, `--distributed` (+ `--coordinator_address`,
`--num_processes`, `--process_id`), `--[no]compilation_cache`, `--compilation_cache_dir`.

A user error (`decoupled_jax.errors.UserError`, a bad dataset, a refused overwrite, a missing
file, a write that failed for lack of space however deeply wrapped) ends the process with
`error: <one line>` on stderr and exit status 2; `--verbose` shows the traceback. Anything
else is a bug and keeps its traceback.
"""
from __future__ import annotations

import os
import sys


def prelude() -> None:
  from decoupled_jax.runtime import configure_environment
  configure_environment()


def enable_compilation_cache(directory: str) -> None:
  """JAX's persistent compilation cache (programs that took >= 1 s to compile)."""
  import jax
  os.makedirs(directory, exist_ok=True)
  jax.config.update("jax_compilation_cache_dir", directory)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


def initialize_distributed(coordinator_address=None, num_processes=None, process_id=None):
  """jax.distributed.initialize; on CPU hosts the cross-process collectives use gloo."""
  import jax
  if jax.config.jax_platforms in (None, "", "cpu") and not _has_accelerator():
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address=coordinator_address,
                             num_processes=num_processes, process_id=process_id)


def _has_accelerator() -> bool:
  import importlib.util
  return any(importlib.util.find_spec(m) is not None
             for m in ("jax_cuda12_plugin", "jax_cuda13_plugin", "libtpu", "jax_rocm60_plugin"))


def _user_errors() -> tuple[type, ...]:
  from decoupled_jax.data.robomimic_hdf5 import DatasetError
  from decoupled_jax.errors import UserError
  from decoupled_jax.inference import ObservationError
  return (UserError, DatasetError, ObservationError, FileExistsError, FileNotFoundError)


def run(main) -> None:
  from absl import app, flags
  if "verbose" not in flags.FLAGS:
    flags.DEFINE_bool("verbose", False, "Show tracebacks of user errors.")
  if "distributed" not in flags.FLAGS:
    flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() (multi-host; "
                      "docs/pods.md). Without the three flags below JAX detects the cluster "
                      "(TPU pods, SLURM, ...).")
    flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (--distributed).")
    flags.DEFINE_integer("num_processes", None, "Number of processes (--distributed).")
    flags.DEFINE_integer("process_id", None, "This process's index (--distributed).")

  if "compilation_cache" not in flags.FLAGS:
    flags.DEFINE_bool("compilation_cache", True, "Keep compiled XLA programs in "
                      "--compilation_cache_dir so reruns and resumes skip most compilation.")
    flags.DEFINE_string("compilation_cache_dir", os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "decoupled_jax",
        "xla"), "Persistent compilation cache directory.")

  def wrapped(argv):
    from decoupled_jax.runtime import setup_logging
    setup_logging()
    if flags.FLAGS.compilation_cache:
      enable_compilation_cache(flags.FLAGS.compilation_cache_dir)
    if flags.FLAGS.distributed:
      initialize_distributed(flags.FLAGS.coordinator_address, flags.FLAGS.num_processes,
                             flags.FLAGS.process_id)
    try:
      return main(argv)
    except Exception as e:  # noqa: BLE001 -- anything but a user error is re-raised
      if isinstance(e, _user_errors()):
        user_error = e
      else:   # a full disk, however deeply wrapped (training names its step itself)
        from decoupled_jax.training.workdir import disk_full
        user_error = disk_full(e)
      if user_error is None or flags.FLAGS.verbose:
        raise
      msg = " ".join(str(user_error).split()) or type(user_error).__name__
      print(f"error: {msg}", file=sys.stderr, flush=True)
      sys.exit(2)

  try:
    app.run(wrapped)
  except (AttributeError, KeyError) as e:   # raised while absl parsed --config.<key>=value
    msg = None if "--verbose" in sys.argv else unknown_config_override(sys.argv)
    if msg is None:
      raise
    print(f"error: {msg}", file=sys.stderr, flush=True)
    sys.exit(2)


def unknown_config_override(argv) -> str | None:
  """The one-line message for a `--config.<a.b.c>=value` naming a key the config file does not
  have (ml_collections raises a bare AttributeError for it while absl parses the flags), or
  None when every override names a key."""
  from decoupled_jax import config_lib
  value = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
  if value is None:
    return None
  path, _, arg = value.partition(":")
  try:
    cfg = config_lib.from_file(path, arg or None)
  except Exception:   # noqa: BLE001 -- the config file's own error is reported elsewhere
    return None
  for a in argv:
    if not a.startswith("--config."):
      continue
    key = a[len("--config."):].split("=", 1)[0]
    node, seen = cfg, "config"
    for part in key.split("."):
      if not isinstance(node, config_lib.ConfigDict) or part not in node:
        keys = sorted(node.keys()) if isinstance(node, config_lib.ConfigDict) else []
        return (f"--config.{key}: {seen} has no key {part!r}"
                + (f" (its keys: {', '.join(keys)})" if keys else ""))
      node, seen = node[part], f"{seen}.{part}"
  return None
