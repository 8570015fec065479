"""Action-expert backbones (docs/method.md §3) and the registry.

Every backbone is a ``flax.linen.Module`` called as ``model(x, t, cond, train=False)`` with
x (B, H, Da), t (B,) float, cond (B, To, Dc) -> (B, H, Da); dropout uses the ``'dropout'``
rng stream. Each subclasses ``base.ActionExpert`` and declares its stage-2 pathway and weight-decay
groups there (read through ``expert_interface``; docs/method.md §2.1): every path segment
starting with ``cond_`` plus, for the transformers, ``pos_emb``.

Registry names: ``dp_c`` (MimicGen U-Net, 244 M), ``dp_c_droid`` (the LIBERO/DROID U-Net
preset), ``dp_mlp``, ``dp_t``, ``dp_t_film``, ``unified`` (needs ``conditioning=``), and
``unified_<method>`` shorthands.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn

from decoupled_jax.backbones.base import ActionExpert, ExpertInterface, expert_interface
from decoupled_jax.backbones.mlp_film import FiLMMLPBlock, MLPForDiffusion
from decoupled_jax.backbones.paths import count_params, matches_any
from decoupled_jax.backbones.transformer import (TransformerForDiffusion,
                                                 TransformerForDiffusionFiLM, memory_mask,
                                                 prefix_mask)
from decoupled_jax.backbones.unet1d import DP_C_DROID, DP_C_MIMICGEN, ConditionalUnet1D
from decoupled_jax.backbones.unified import (CONDITIONING_METHODS, GLOBAL_VECTOR_METHODS,
                                             TOKEN_METHODS, UnifiedTransformer)

__all__ = [
    "BACKBONES", "make_backbone", "backbone_names",
    "ConditionalUnet1D", "MLPForDiffusion", "FiLMMLPBlock", "TransformerForDiffusion",
    "TransformerForDiffusionFiLM", "UnifiedTransformer", "CONDITIONING_METHODS",
    "TOKEN_METHODS", "GLOBAL_VECTOR_METHODS", "DP_C_MIMICGEN", "DP_C_DROID",
    "count_params", "matches_any", "memory_mask", "prefix_mask", "ActionExpert", "ExpertInterface",
    "expert_interface",
]

# name -> (class, default kwargs). Defaults are the paper's settings.
BACKBONES: dict[str, tuple[type[nn.Module], dict[str, Any]]] = {
    "dp_c": (ConditionalUnet1D, dict(DP_C_MIMICGEN)),
    "dp_c_droid": (ConditionalUnet1D, dict(DP_C_DROID)),
    "dp_mlp": (MLPForDiffusion, dict(n_layer=8, n_emb=256, dropout=0.1, emb_dropout=0.0)),
    "dp_t": (TransformerForDiffusion, dict(n_layer=8, n_head=4, n_emb=256, dropout=0.3,
                                           emb_dropout=0.0, causal_attn=True)),
    "dp_t_film": (TransformerForDiffusionFiLM, dict(n_layer=8, n_head=4, n_emb=256, dropout=0.3,
                                                    emb_dropout=0.0, causal_attn=True,
                                                    enable_film_self_attn=False,
                                                    enable_film_ffn=True)),
    "unified": (UnifiedTransformer, dict(n_layer=8, n_head=4, n_emb=256, dropout=0.3,
                                         emb_dropout=0.0, causal_attn=True, lora_rank=16)),
}
for _m in CONDITIONING_METHODS:
  BACKBONES[f"unified_{_m}"] = (UnifiedTransformer, dict(BACKBONES["unified"][1], conditioning=_m))
del _m


def backbone_names() -> list[str]:
  return sorted(BACKBONES)


def make_backbone(name: str, **overrides: Any) -> nn.Module:
  """Instantiate a registered backbone with its defaults updated by ``overrides``.

  ``make_backbone('unified', conditioning='adaln_zero')``; ``'unified'`` without
  ``conditioning`` raises (the ablation has no sensible default).
  """
  if name not in BACKBONES:
    raise KeyError(f"unknown backbone {name!r}; known: {backbone_names()}")
  cls, defaults = BACKBONES[name]
  kwargs = {**defaults, **overrides}
  if name == "unified" and "conditioning" not in kwargs:
    raise ValueError(f"make_backbone('unified') needs conditioning= one of {CONDITIONING_METHODS}")
  return cls(**kwargs)

