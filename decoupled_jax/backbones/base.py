"""The interface every action expert declares (docs/method.md §2.1, §5).

A backbone is a ``flax.linen`` module called as ``model(x, t, cond, train=False)``. Besides
that call, the training code needs three facts about it, and reads them from here only:

* ``CONDITIONING_PATTERNS``: regexes (``re.search``) over '/'-joined param paths relative to
  the backbone, selecting the conditioning pathway, i.e. what trains in stage 2;
* ``NO_WEIGHT_DECAY_PATTERNS``: the leaves the reference's AdamW does not decay;
* ``REINIT_ON_LOAD_PATTERNS``: conditioning leaves that keep their fresh stage-2 init when a
  stage-1 checkpoint is loaded even where name and shape match (the LoRA conditioning).

They are class attributes (a backbone's pathway does not depend on its sizes), reached
through :func:`expert_interface` so that a module which does not declare them fails loudly.
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar

import flax.linen as nn


class ActionExpert(nn.Module):
  """Base class of every backbone: declares the stage-2 pathway and weight-decay groups."""
  CONDITIONING_PATTERNS: ClassVar[tuple[str, ...]] = ()
  NO_WEIGHT_DECAY_PATTERNS: ClassVar[tuple[str, ...]] = ()
  REINIT_ON_LOAD_PATTERNS: ClassVar[tuple[str, ...]] = ()


@dataclasses.dataclass(frozen=True)
class ExpertInterface:
  conditioning_patterns: tuple[str, ...]
  no_weight_decay_patterns: tuple[str, ...]
  reinit_on_load_patterns: tuple[str, ...]


def expert_interface(backbone: nn.Module) -> ExpertInterface:
  if not isinstance(backbone, ActionExpert):
    raise TypeError(f"{type(backbone).__name__} is not an ActionExpert: a backbone must "
                    f"subclass decoupled_jax.backbones.base.ActionExpert and declare its "
                    f"CONDITIONING_PATTERNS")
  cls = type(backbone)
  if not cls.CONDITIONING_PATTERNS:
    raise TypeError(f"{cls.__name__} declares no CONDITIONING_PATTERNS")
  return ExpertInterface(tuple(cls.CONDITIONING_PATTERNS), tuple(cls.NO_WEIGHT_DECAY_PATTERNS),
                         tuple(cls.REINIT_ON_LOAD_PATTERNS))
