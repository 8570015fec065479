"""What a training stage hands the one training loop (`trainer.train`).

A stage (stage-1 FK pretraining, stage-2 decoupled / normal / random-frozen, or a new one)
is built by a `make_stage(config)` function in `decoupled_jax/pipelines/` and differs from
the others only in this object: its policy and head, where its weights come from, what is
frozen, its batches, what its checkpoints' `meta` records, and how it is evaluated. The
loop itself (init, sharding, jitted step, logging, checkpoints, resume) never branches on
the stage.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterator, Optional

import jax

from decoupled_jax.training.partition import FreezeRule
from decoupled_jax.training.policy import Policy
from decoupled_jax.training.weight_loaders import FreshInit, WeightLoader


@dataclasses.dataclass
class Stage:
  name: str                                   # meta['stage']: 'pretrain' | 'finetune' | ...
  policy: Policy
  head: Any
  example_obs: dict                           # one observation batch (B=1) for init
  action_shape: tuple[int, int]               # (H, Da)
  meta: dict                                  # saved with every checkpoint (JSON)
  freeze: FreezeRule = FreezeRule()
  weights: WeightLoader = FreshInit()
  no_weight_decay: tuple[str, ...] = ()       # backbone-relative regexes (the expert's own)
  # Exactly one batch source: host batches (numpy, normalised; the iterator starts at the
  # given step so a resumed run sees the same data) or a batch built inside the jitted step.
  host_batches: Optional[Callable[[int], Iterator[dict]]] = None
  device_batch_fn: Optional[Callable[[jax.Array], dict]] = None
  # Periodic evaluation every config.train.eval_every steps: (inference params, step) -> scalars.
  evaluate: Optional[Callable[[dict, int], dict]] = None
  # After training: (inference params, workdir, step) -> the 'eval' section of summary.json.
  final_evaluate: Optional[Callable[[dict, str, int], dict]] = None
  # The run's length when the stage derives it from its data (an epoch budget); None:
  # config.train.num_steps.
  num_steps: Optional[int] = None

  def __post_init__(self):
    if (self.host_batches is None) == (self.device_batch_fn is None):
      raise ValueError(f"stage {self.name!r}: give exactly one of host_batches and "
                       f"device_batch_fn")
