"""Errors a user can fix. The binaries print them as one line on stderr and exit with status
2 (`decoupled_jax/cli.py`); anything else is a bug and keeps its traceback."""


class UserError(Exception):
  """Bad input (config, data, checkpoint, workdir) that the user can fix."""


class ConfigError(UserError, ValueError):
  """A config value is invalid; the message names the field."""


class CheckpointError(UserError, RuntimeError):
  """A checkpoint is missing, damaged, or of the wrong kind for this use."""


class WorkdirLockedError(UserError, RuntimeError):
  """Another process holds the run's working directory."""


class DiskFullError(UserError):
  """A write failed for lack of space (or quota): `path` is what was being written, `step`
  the newest intact checkpoint step (None: none yet). Built by `training.workdir.disk_full`."""

  def __init__(self, message: str, path=None, step=None):
    super().__init__(message)
    self.path, self.step = path, step
