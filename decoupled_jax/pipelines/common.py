"""Pieces every pipeline builds the same way from a config: backbone, head, policy."""
from __future__ import annotations

import json
import logging
import os

import jax
import ml_collections

from decoupled_jax import backbones
from decoupled_jax.encoders import ObservationEncoder
from decoupled_jax.heads import make_head
from decoupled_jax.training.policy import Policy

ACTION_DIM = 10


def make_backbone(config):
  kwargs = dict(config.backbone.get("kwargs", {}))
  return backbones.make_backbone(config.backbone.name, **kwargs)


def conditioning_patterns(backbone) -> tuple[str, ...]:
  return tuple(type(backbone).CONDITIONING_PATTERNS)


def backbone_no_decay(backbone) -> tuple[str, ...]:
  """The backbone's own no-weight-decay regexes (spec §5), over backbone-relative paths."""
  return tuple(getattr(type(backbone), "NO_WEIGHT_DECAY_PATTERNS", ()))


def make_policy(config, image_keys=(), lowdim_keys=()) -> tuple[Policy, object]:
  encoder = ObservationEncoder(image_keys=tuple(image_keys), lowdim_keys=tuple(lowdim_keys))
  backbone = make_backbone(config)
  return Policy(encoder=encoder, backbone=backbone), backbone


def head_from_config(config):
  return make_head(config.head)


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
