"""Unified transformer with 8 conditioning mechanisms (docs/method.md §3.6, §IV-E ablation)."""
from __future__ import annotations

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from decoupled_jax.backbones.base import ActionExpert
from decoupled_jax.backbones.common import (COND_PREFIX_PATTERN, POS_EMB_PATTERN, StepEncoder,
                                            broadcast_timesteps, global_condition)
from decoupled_jax.backbones.transformer import (TRANSFORMER_NO_WEIGHT_DECAY_PATTERNS,
                                                 TransformerEncoderLayer, _ffn, action_tokens,
                                                 condition_tokens, cross_attn_forward, output_head,
                                                 prefix_mask)
from decoupled_jax.nn import (Dropout, LayerNorm, MultiHeadAttention, RMSNorm, causal_mask, mish,
                              normal_linear, zero_linear)
from decoupled_jax.nn import initializers as inits
from decoupled_jax.nn.layers import TorchLinear

__all__ = ["CONDITIONING_METHODS", "TOKEN_METHODS", "GLOBAL_VECTOR_METHODS", "CondDecoderLayer",
           "UnifiedTransformer"]

TOKEN_METHODS = ("cross_attn", "prefix")
GLOBAL_VECTOR_METHODS = ("film", "adaln_zero", "adaln", "ada_rms_norm", "additive", "lora_cond")
CONDITIONING_METHODS = TOKEN_METHODS + GLOBAL_VECTOR_METHODS


class CondDecoderLayer(nn.Module):
  """One pre-norm self-attention block conditioned on a global vector g (docs/method.md §3.6).

  Standard block: x += Drop(SA(LN1 x)); x += Drop(FFN(LN2 x)). Per ``conditioning``:
  * film: x += gamma_sa*Drop(SA(LN1 x)) + beta_sa; x += gamma_ff*Drop(FFN(LN2 x)) + beta_ff;
    [gamma, beta] = ``cond_film_sa`` / ``cond_film_ffn``(Mish g), N(0, 0.02).
  * adaln_zero: LN without affine; (g1, b1, a1, g2, b2, a2) = ``cond_adaln_modulation``(Mish g)
    (zero weight and bias); x += a1*Drop(SA((1+g1) LN x + b1)); x += a2*Drop(FFN((1+g2) LN x + b2)).
  * adaln: as adaln_zero without the gates (4E outputs, N(0, 0.02)), plain residual.
  * ada_rms_norm: as adaln with RMSNorm (no affine, eps = f32 eps); ``cond_adarmsnorm_modulation``.
  * additive: x += Drop(SA(LN1 x)) + ``cond_proj_sa``(Mish g); x += Drop(FFN(LN2 x)) +
    ``cond_proj_ff``(Mish g); both projections zero-initialised (weight and bias).
  * lora_cond: r = ``cond_lora_down``(g) (no Mish; N(0, 0.02), bias 0), split (r_q, r_v);
    q_bias = ``cond_lora_up_q``(r_q), v_bias = ``cond_lora_up_v``(r_v) (zero weights, zero bias);
    SA on Q = LN1 x + q_bias, K = LN1 x, V = LN1 x + v_bias.
  Shared params: ``self_attn``, ``linear1``, ``linear2``, ``norm1``, ``norm2`` (the last two
  parameter-free for adaln_zero / adaln / ada_rms_norm).
  """
  conditioning: str
  n_head: int
  d_ff: int
  dropout: float
  lora_rank: int = 16

  @nn.compact
  def __call__(self, x, g, mask=None, *, train: bool = False):
    det = not train
    e = x.shape[-1]
    m = self.conditioning
    drop = lambda h: Dropout(self.dropout)(h, deterministic=det)  # noqa: E731
    attn = MultiHeadAttention(self.n_head, self.dropout, name="self_attn")

    def sa(q, k=None, v=None):
      k = q if k is None else k
      v = q if v is None else v
      return drop(attn(q, k, v, mask, deterministic=det))

    def ff(h):
      return drop(_ffn(h, self.d_ff, self.dropout, det))

    if m == "film":
      gb_sa = normal_linear(2 * e, name="cond_film_sa")(mish(g))[:, None, :]
      gb_ff = normal_linear(2 * e, name="cond_film_ffn")(mish(g))[:, None, :]
      x = x + gb_sa[..., :e] * sa(LayerNorm(name="norm1")(x)) + gb_sa[..., e:]
      return x + gb_ff[..., :e] * ff(LayerNorm(name="norm2")(x)) + gb_ff[..., e:]

    if m in ("adaln_zero", "adaln", "ada_rms_norm"):
      n_mod = 6 if m == "adaln_zero" else 4
      if m == "adaln_zero":
        mod_layer = zero_linear(n_mod * e, name="cond_adaln_modulation")
      elif m == "adaln":
        mod_layer = normal_linear(n_mod * e, name="cond_adaln_modulation")
      else:
        mod_layer = normal_linear(n_mod * e, name="cond_adarmsnorm_modulation")
      mod = jnp.split(mod_layer(mish(g))[:, None, :], n_mod, axis=-1)
      if m == "adaln_zero":
        g1, b1, a1, g2, b2, a2 = mod
      else:
        (g1, b1, g2, b2), a1, a2 = mod, 1.0, 1.0
      if m == "ada_rms_norm":
        norm1, norm2 = RMSNorm(name="norm1"), RMSNorm(name="norm2")
      else:
        norm1, norm2 = LayerNorm(affine=False, name="norm1"), LayerNorm(affine=False, name="norm2")
      x = x + a1 * sa((1 + g1) * norm1(x) + b1)
      return x + a2 * ff((1 + g2) * norm2(x) + b2)

    if m == "additive":
      bias_sa = zero_linear(e, name="cond_proj_sa")(mish(g))[:, None, :]
      bias_ff = zero_linear(e, name="cond_proj_ff")(mish(g))[:, None, :]
      x = x + sa(LayerNorm(name="norm1")(x)) + bias_sa
      return x + ff(LayerNorm(name="norm2")(x)) + bias_ff

    if m == "lora_cond":
      r = normal_linear(2 * self.lora_rank, name="cond_lora_down")(g)
      r_q, r_v = r[..., : self.lora_rank], r[..., self.lora_rank:]
      up = dict(kernel_init=inits.zeros, bias_init=inits.zeros)
      q_bias = TorchLinear(e, name="cond_lora_up_q", **up)(r_q)[:, None, :]
      v_bias = TorchLinear(e, name="cond_lora_up_v", **up)(r_v)[:, None, :]
      h = LayerNorm(name="norm1")(x)
      x = x + sa(h + q_bias, h, h + v_bias)
      return x + ff(LayerNorm(name="norm2")(x))

    raise ValueError(f"unknown global-vector conditioning {m!r}")


class UnifiedTransformer(ActionExpert):
  """Unified transformer backbone, docs/method.md §3.6 (the conditioning-mechanism ablation).

  Shared: n_layer 8, n_head 4, n_emb 256, FFN 1024, dropout 0.3, pre-norm, causal
  self-attention over the H action tokens (input_emb(x) + ``pos_emb``), ln_f + head, N(0, 0.02)
  init, then the method's zero-inits. ``conditioning``:
  * ``cross_attn``: exactly DP-T (docs/method.md §3.3; same param paths as ``TransformerForDiffusion``).
  * ``prefix``: condition tokens [sinusoid(t); cond_obs_emb(obs)] + cond_pos_emb -> cond_encoder
    MLP are prepended; ``n_layer`` TransformerEncoderLayers over [prefix; actions] with the
    prefix mask (prefix sees prefix only; actions see all prefix + causal actions); prefix
    outputs are dropped.
  * global-vector methods (film, adaln_zero, adaln, ada_rms_norm, additive, lora_cond):
    g = concat[step_encoder(t), flatten(cond)] feeds ``CondDecoderLayer``s (``layer_{i}``).
  Stage-2 trainable (docs/method.md §2.1): every ``cond_*`` module (the modulation / FiLM / additive /
  LoRA Linears, or cond_obs_emb + cond_pos_emb + cond_encoder for the token methods) plus
  ``pos_emb``. For ``lora_cond`` the reference also *re-initialises* the LoRA params in stage 2:
  take them from a fresh ``init`` (down N(0, 0.02), bias 0; ups zero).
  """
  conditioning: str = "adaln_zero"
  n_layer: int = 8
  n_head: int = 4
  n_emb: int = 256
  dropout: float = 0.3
  emb_dropout: float = 0.0
  causal_attn: bool = True
  lora_rank: int = 16

  CONDITIONING_PATTERNS = (COND_PREFIX_PATTERN, POS_EMB_PATTERN)
  NO_WEIGHT_DECAY_PATTERNS = TRANSFORMER_NO_WEIGHT_DECAY_PATTERNS
  # The reference re-initialises every LoRA conditioning param in stage 2 (down N(0, 0.02),
  # ups and biases zero) even where stage 1's shapes match (docs/method.md §2.1).
  REINIT_ON_LOAD_PATTERNS = (r"(^|/)cond_lora_",)

  @nn.compact
  def __call__(self, x: jax.Array, t: jax.Array, cond: Optional[jax.Array] = None, *,
               train: bool = False) -> jax.Array:
    m = self.conditioning
    if m not in CONDITIONING_METHODS:
      raise ValueError(f"conditioning must be one of {CONDITIONING_METHODS}, got {m!r}")
    if m == "cross_attn":
      return cross_attn_forward(self, x, t, cond, train=train)

    b, horizon, da = x.shape
    t = broadcast_timesteps(t, b)
    if m == "prefix":
      prefix = condition_tokens(self, t, cond, self.n_emb, self.emb_dropout, train)
      h = action_tokens(self, x, self.n_emb, self.emb_dropout, train)
      n_prefix = prefix.shape[1]
      h = jnp.concatenate([prefix, h], axis=1)
      mask = prefix_mask(n_prefix, horizon, causal=self.causal_attn)
      for i in range(self.n_layer):
        h = TransformerEncoderLayer(self.n_head, 4 * self.n_emb, self.dropout,
                                    name=f"layer_{i}")(h, mask, train=train)
      return output_head(h[:, n_prefix:], da)

    g = global_condition(StepEncoder(self.n_emb, normal_init=True, name="step_encoder")(t), cond)
    h = action_tokens(self, x, self.n_emb, self.emb_dropout, train)
    mask = causal_mask(horizon) if self.causal_attn else None
    for i in range(self.n_layer):
      h = CondDecoderLayer(m, self.n_head, 4 * self.n_emb, self.dropout, self.lora_rank,
                           name=f"layer_{i}")(h, g, mask, train=train)
    return output_head(h, da)
