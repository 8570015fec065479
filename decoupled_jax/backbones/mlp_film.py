"""DP-MLP: MLPForDiffusion with FiLM MLP blocks (docs/method.md §3.5)."""
from __future__ import annotations

from typing import Optional

import flax.linen as nn
import jax

from decoupled_jax.backbones.base import ActionExpert
from decoupled_jax.backbones.common import (COND_PREFIX_PATTERN, StepEncoder, broadcast_timesteps,
                                            global_condition)
from decoupled_jax.nn import Dropout, LayerNorm, ParallelLinear, TorchLinear, gelu, mish

__all__ = ["FiLMMLPBlock", "MLPForDiffusion"]


class FiLMMLPBlock(nn.Module):
  """Token-wise post-norm FiLM MLP block (docs/method.md §3.5).

  h = Dropout(GELU(linear1(x))); [gamma, beta] = cond_film(Mish(g)); h = gamma*h + beta;
  h = Dropout(linear2(h)); x = LayerNorm(x + h). Torch-default init.
  Params: ``linear1``, ``cond_film``, ``linear2``, ``norm``.
  """
  d_ff: int = 1024
  dropout: float = 0.1

  @nn.compact
  def __call__(self, x: jax.Array, g: jax.Array, *, train: bool = False) -> jax.Array:
    det = not train
    d_model = x.shape[-1]
    h = gelu(TorchLinear(self.d_ff, name="linear1")(x))
    h = Dropout(self.dropout)(h, deterministic=det)
    embed = TorchLinear(2 * self.d_ff, name="cond_film")(mish(g))[:, None, :]
    h = embed[..., : self.d_ff] * h + embed[..., self.d_ff:]
    h = TorchLinear(d_model, name="linear2")(h)
    h = Dropout(self.dropout)(h, deterministic=det)
    return LayerNorm(name="norm")(x + h)


class MLPForDiffusion(ActionExpert):
  """DP-MLP, docs/method.md §3.5 (the "4M/5M" backbone; 4,782,346 params without FiLM at H=16).

  input_emb: a separate affine map per horizon index, W (H, Da, n_emb), b (H, n_emb), both
  N(0, 1) (``parallel_input_emb: true``; no positional embedding). Global vector
  g = concat[step_encoder(t) (Sinusoidal(n_emb) -> n_emb*4 -> Mish -> n_emb),
  flatten(cond)]. ``n_layer`` FiLMMLPBlocks (``block_{i}``), then ln_f -> head.
  Init: PyTorch defaults for every Linear. Stage-2 trainable (docs/method.md §2.1): the 8
  ``block_{i}/cond_film`` Linears.
  """
  n_layer: int = 8
  n_emb: int = 256
  dropout: float = 0.1       # p_drop_attn
  emb_dropout: float = 0.0   # p_drop_emb

  CONDITIONING_PATTERNS = (COND_PREFIX_PATTERN,)
  # Spec §3.5: `.film.` params, biases and LayerNorms are not decayed.
  NO_WEIGHT_DECAY_PATTERNS = (COND_PREFIX_PATTERN, r"(^|/)bias$", r"(^|/)(norm|ln_f)/")

  @nn.compact
  def __call__(self, x: jax.Array, t: jax.Array, cond: Optional[jax.Array] = None, *,
               train: bool = False) -> jax.Array:
    b, _, da = x.shape
    t = broadcast_timesteps(t, b)
    g = global_condition(StepEncoder(self.n_emb, name="step_encoder")(t), cond)
    h = ParallelLinear(self.n_emb, name="input_emb")(x)
    h = Dropout(self.emb_dropout)(h, deterministic=not train)
    for i in range(self.n_layer):
      h = FiLMMLPBlock(4 * self.n_emb, self.dropout, name=f"block_{i}")(h, g, train=train)
    h = LayerNorm(name="ln_f")(h)
    return TorchLinear(da, name="head")(h)
