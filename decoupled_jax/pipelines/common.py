"""Output helpers every pipeline uses: atomic JSON, config serialisation. (Logging set-up
lives in `decoupled_jax/runtime.py`; re-exported here.)"""
from __future__ import annotations

import json

import ml_collections

from decoupled_jax import util
from decoupled_jax.runtime import log_devices, setup_logging  # noqa: F401


def write_json(path: str, obj) -> None:
  """Atomic JSON write (temp file + rename; `decoupled_jax/util.py`)."""
  util.write_json(path, obj, indent=2, default=_json_default)


def _json_default(o):
  if hasattr(o, "tolist"):
    return o.tolist()
  if isinstance(o, ml_collections.ConfigDict):
    return o.to_dict()
  return str(o)


def config_to_dict(config) -> dict:
  return json.loads(json.dumps(config.to_dict(), default=_json_default))
