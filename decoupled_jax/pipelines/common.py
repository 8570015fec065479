"""Output helpers every pipeline uses: atomic JSON, config serialisation, logging setup."""
from __future__ import annotations

import json
import logging
import os

import jax
import ml_collections


def write_json(path: str, obj) -> None:
  """Atomic JSON write (temp file + rename)."""
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=2, default=_json_default)
  os.replace(tmp, path)


def _json_default(o):
  if hasattr(o, "tolist"):
    return o.tolist()
  if isinstance(o, ml_collections.ConfigDict):
    return o.to_dict()
  return str(o)


def config_to_dict(config) -> dict:
  return json.loads(json.dumps(config.to_dict(), default=_json_default))


class _DropLibraryChatter(logging.Filter):
  """Orbax logs every checkpoint step at INFO through absl; keep its warnings only."""

  def filter(self, record):
    return record.levelno >= logging.WARNING or "/orbax/" not in record.pathname


def setup_logging():
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
  for handler in logging.getLogger().handlers + logging.getLogger("absl").handlers:
    handler.addFilter(_DropLibraryChatter())


def log_devices():
  logging.info("JAX %s on %d device(s): %s", jax.__version__, jax.device_count(), jax.devices())
