"""Where a run's initial weights come from (docs/method.md §2.1), kept apart from what is
frozen (`training/partition.py`), as openpi keeps `weight_loaders.py` apart from its freeze
filter.

* `FreshInit`: the model's own init (stage 1, normal training, the random-frozen control).
* `Stage1Backbone`: the paper's stage-2 load (from a stage-1 checkpoints directory or a
  shipped expert, `pretrained:<name>`). Every backbone leaf whose path exists in the
  stage-1 checkpoint with the same shape is copied, conditioning layers included (their
  input widths differ between stages, so in practice their kernels stay fresh while biases,
  `pos_emb` and DP-T's condition MLP are copied); leaves matching the backbone's
  `REINIT_ON_LOAD_PATTERNS` keep their fresh init. A non-conditioning leaf that is missing or
  has another shape means the architectures differ: that is an error naming the path.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Any, Mapping, Protocol

from decoupled_jax import pretrained
from decoupled_jax.backbones.paths import matches_any
from decoupled_jax.training import checkpoint as ckpt_lib
from decoupled_jax.training.partition import BACKBONE, flatten, unflatten

log = logging.getLogger(__name__)


class WeightLoader(Protocol):

  def load(self, params: Mapping) -> tuple[dict, dict]:
    """Returns (params, report); report lists what was copied / kept fresh."""


@dataclasses.dataclass(frozen=True)
class FreshInit:

  def load(self, params):
    return dict(params), {"source": None, "copied": [], "fresh": sorted(flatten(params))}


@dataclasses.dataclass(frozen=True)
class Stage1Backbone:
  checkpoint_dir: str
  conditioning_patterns: tuple[str, ...]
  reinit_patterns: tuple[str, ...] = ()

  def load(self, params):
    return _load_backbone(params, self.checkpoint_dir, self.conditioning_patterns,
                          self.reinit_patterns, "stage-1")


@dataclasses.dataclass(frozen=True)
class TaskBackbone:
  """The oracle diagnosis (docs/results/decoupled_gap.md): the backbone of a *stage-2* run
  trained end to end on the task, with its whole conditioning pathway kept at the fresh init —
  what stage 2 would get from a stage 1 that had learned the task's own action prior."""
  checkpoint_dir: str
  conditioning_patterns: tuple[str, ...]

  def load(self, params):
    return _load_backbone(params, self.checkpoint_dir, self.conditioning_patterns,
                          self.conditioning_patterns, "oracle")


def _load_backbone(params, ref: str, conditioning, reinit, kind: str):
  """copy_backbone from a checkpoints directory or a shipped expert (`pretrained:<name>`)."""
  if pretrained.is_ref(ref):
    source = pretrained.load_params(ref)
  else:
    source, _ = ckpt_lib.load_inference_params(ref)
  out, report = copy_backbone(params, source, conditioning_patterns=conditioning,
                              reinit_patterns=reinit, source_name=f"{kind} checkpoint {ref}")
  log.info("%s load from %s: %d backbone leaves copied, %d kept fresh", kind, ref,
           len(report["copied"]), len(report["fresh"]))
  return out, dict(report, source=ref)


def copy_backbone(target: Mapping, source: Mapping, *, conditioning_patterns=(),
                  reinit_patterns=(), source_name: str = "source checkpoint"
                  ) -> tuple[dict, dict[str, Any]]:
  """Copies backbone leaves of `source` into `target` by path and shape (see module doc)."""
  prefix = BACKBONE + "/"
  tgt, src = flatten(target), flatten(source)
  copied, fresh = [], []
  for path, value in tgt.items():
    if not path.startswith(prefix):
      continue
    rel = path[len(prefix):]
    conditioning = matches_any(rel, conditioning_patterns)
    if conditioning and matches_any(rel, reinit_patterns):
      fresh.append(path)
      continue
    same = path in src and tuple(src[path].shape) == tuple(value.shape)
    if same:
      tgt[path] = src[path]
      copied.append(path)
    elif conditioning:
      fresh.append(path)
    elif path not in src:
      raise ValueError(
          f"{source_name} has no parameter '{path}' (target shape {tuple(value.shape)}); the "
          f"stage-1 and stage-2 backbones differ. First source paths: "
          f"{sorted(k for k in src if k.startswith(prefix))[:5]}")
    else:
      raise ValueError(
          f"shape mismatch at '{path}': {source_name} has {tuple(src[path].shape)}, the model "
          f"expects {tuple(value.shape)}; the backbones differ (check backbone name/sizes and "
          f"horizon between stage 1 and stage 2).")
  extra = sorted(k for k in src if k.startswith(prefix) and k not in tgt)
  if extra:
    raise ValueError(f"{source_name} has backbone parameter '{extra[0]}' that the model "
                     f"lacks ({len(extra)} in all); the backbones differ.")
  return unflatten(tgt), {"copied": copied, "fresh": fresh}
