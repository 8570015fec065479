"""What every binary in `experiments/` shares: the process environment, logging, multi-host
start-up, and turning user errors into one line on stderr.

    from decoupled_jax import cli
    cli.prelude()                 # before jax / mujoco are imported
    ...
    if __name__ == "__main__":
      cli.run(main)

A user error (`decoupled_jax.errors.UserError`, a bad dataset, a refused overwrite, a missing
file) ends the process with `error: <one line>` on stderr and exit status 2; `--verbose`
shows the traceback. Anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import sys


def prelude() -> None:
  from decoupled_jax.runtime import configure_environment
  configure_environment()


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
    flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() (multi-host).")

  def wrapped(argv):
    from decoupled_jax.pipelines.common import setup_logging
    setup_logging()
    if flags.FLAGS.distributed:
      import jax
      jax.distributed.initialize()
    try:
      return main(argv)
    except _user_errors() as e:
      if flags.FLAGS.verbose:
        raise
      msg = " ".join(str(e).split()) or type(e).__name__
      print(f"error: {msg}", file=sys.stderr, flush=True)
      sys.exit(2)

  app.run(wrapped)
