"""DP-T (docs/method.md §3.3) and DP-T-FiLM (docs/method.md §3.4), plus the shared transformer blocks.

Common settings: pre-norm (torch ``norm_first=True``) layers, exact GELU, dropout on the
attention weights, after every sub-layer and inside the FFN; every Linear / attention weight
N(0, 0.02) with zero bias, LayerNorm 1/0, ``pos_emb``/``cond_pos_emb`` N(0, 0.02).
"""
from __future__ import annotations

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from decoupled_jax.backbones.base import ActionExpert
from decoupled_jax.backbones.common import (COND_PREFIX_PATTERN, POS_EMB_PATTERN, StepEncoder,
                                            broadcast_timesteps, global_condition)
from decoupled_jax.nn import (Dropout, LayerNorm, MultiHeadAttention, causal_mask, gelu,
                              initializers as inits, mish, normal_linear, sinusoidal_embedding)

__all__ = [
    "TokenMLP", "TransformerDecoderLayer", "TransformerEncoderLayer", "FiLMDecoderLayerT",
    "TransformerForDiffusion", "TransformerForDiffusionFiLM", "memory_mask", "prefix_mask",
    "TRANSFORMER_NO_WEIGHT_DECAY_PATTERNS",
]

# Spec §5/§3.6: biases, LayerNorm weights, pos_emb/cond_pos_emb and the conditioning
# projections get no weight decay in the transformer AdamW group.
TRANSFORMER_NO_WEIGHT_DECAY_PATTERNS = (
    r"(^|/)bias$", r"(^|/)(norm\d?|ln_f)/", r"^pos_emb$", r"^cond_pos_emb$",
    r"(^|/)cond_(film|adaln|adarmsnorm|proj|lora)",
)


# ----------------------------------------------------------------------------------------
# Masks
# ----------------------------------------------------------------------------------------
def memory_mask(horizon: int, n_cond_tokens: int) -> jax.Array:
  """(T, S) boolean: action token t may attend condition token s iff t >= s - 1."""
  t = jnp.arange(horizon)[:, None]
  s = jnp.arange(n_cond_tokens)[None, :]
  return t >= (s - 1)


def prefix_mask(n_prefix: int, horizon: int, causal: bool = True) -> jax.Array:
  """(P+T, P+T) boolean for [prefix; actions]: prefix sees only prefix; actions see every
  prefix token and (causally) the actions."""
  n = n_prefix + horizon
  row = jnp.arange(n)[:, None]
  col = jnp.arange(n)[None, :]
  prefix_rows = (row < n_prefix) & (col < n_prefix)
  action_cols = (col < n_prefix) | (col <= row) if causal else jnp.ones_like(col >= 0)
  action_rows = (row >= n_prefix) & action_cols
  return prefix_rows | action_rows


# ----------------------------------------------------------------------------------------
# Blocks
# ----------------------------------------------------------------------------------------
class TokenMLP(nn.Module):
  """Token-wise Linear(E, 4E) -> Mish -> Linear(4E, E), N(0, 0.02) init (DP-T's condition
  ``encoder`` with n_cond_layers = 0). Params: ``linear_0``, ``linear_1``."""
  hidden_mult: int = 4

  @nn.compact
  def __call__(self, x):
    e = x.shape[-1]
    h = normal_linear(self.hidden_mult * e, name="linear_0")(x)
    return normal_linear(e, name="linear_1")(mish(h))


def _ffn(x, d_ff, dropout, det):
  """The torch layer's ``_ff_block`` minus its trailing dropout; creates ``linear1``/``linear2``
  in the calling module's scope (so paths read 'layer_0/linear1/kernel')."""
  h = gelu(normal_linear(d_ff, name="linear1")(x))
  h = Dropout(dropout)(h, deterministic=det)
  return normal_linear(x.shape[-1], name="linear2")(h)


class TransformerDecoderLayer(nn.Module):
  """torch ``nn.TransformerDecoderLayer(norm_first=True, activation='gelu')``.

  x += Drop(SA(norm1 x)); x += Drop(CA(norm2 x, memory)); x += Drop(FFN(norm3 x)).
  Params: ``self_attn``, ``cross_attn``, ``linear1``, ``linear2``, ``norm1..3``.
  """
  n_head: int
  d_ff: int
  dropout: float

  @nn.compact
  def __call__(self, x, memory, self_mask=None, mem_mask=None, *, train: bool = False):
    det = not train
    drop = lambda h: Dropout(self.dropout)(h, deterministic=det)  # noqa: E731
    h = LayerNorm(name="norm1")(x)
    x = x + drop(MultiHeadAttention(self.n_head, self.dropout, name="self_attn")(
        h, h, h, self_mask, deterministic=det))
    h = LayerNorm(name="norm2")(x)
    x = x + drop(MultiHeadAttention(self.n_head, self.dropout, name="cross_attn")(
        h, memory, memory, mem_mask, deterministic=det))
    h = LayerNorm(name="norm3")(x)
    return x + drop(_ffn(h, self.d_ff, self.dropout, det))


class TransformerEncoderLayer(nn.Module):
  """torch ``nn.TransformerEncoderLayer(norm_first=True, activation='gelu')``.

  x += Drop(SA(norm1 x)); x += Drop(FFN(norm2 x)). Params: ``self_attn``, ``linear1``,
  ``linear2``, ``norm1``, ``norm2``.
  """
  n_head: int
  d_ff: int
  dropout: float

  @nn.compact
  def __call__(self, x, mask=None, *, train: bool = False):
    det = not train
    drop = lambda h: Dropout(self.dropout)(h, deterministic=det)  # noqa: E731
    h = LayerNorm(name="norm1")(x)
    x = x + drop(MultiHeadAttention(self.n_head, self.dropout, name="self_attn")(
        h, h, h, mask, deterministic=det))
    h = LayerNorm(name="norm2")(x)
    return x + drop(_ffn(h, self.d_ff, self.dropout, det))


class FiLMDecoderLayerT(nn.Module):
  """DP-T-FiLM layer (docs/method.md §3.4; reference ``FilMSelfAttnDecoderLayer``).

  x += FiLM_sa(g, Drop(SA(norm1 x)))  [FiLM_sa is the identity unless enabled];
  x += FiLM_ffn(g, Drop(FFN(norm3 x))); FiLM(g, h) = gamma*h + beta with
  [gamma, beta] = Linear(Mish(g)) (N(0, 0.02) init).
  The reference also *constructs* an unused cross-attention (``cross_attn``) and, with
  ``enable_film_self_attn=False``, an unused ``cond_film_self_attn`` Linear; their params are
  created here at init (and never used by the forward pass) so counts and freezing match.
  """
  n_head: int
  d_ff: int
  dropout: float
  enable_film_self_attn: bool = False
  enable_film_ffn: bool = True

  @nn.compact
  def __call__(self, x, g, self_mask=None, *, train: bool = False):
    det = not train
    e = x.shape[-1]
    drop = lambda h: Dropout(self.dropout)(h, deterministic=det)  # noqa: E731
    film_sa = normal_linear(2 * e, name="cond_film_self_attn")
    film_ffn = normal_linear(2 * e, name="cond_film_ffn")
    cross_attn = MultiHeadAttention(self.n_head, self.dropout, name="cross_attn")

    def film(layer, enabled, h):
      if not enabled:
        return h
      gb = layer(mish(g))[:, None, :]
      return gb[..., :e] * h + gb[..., e:]

    if self.is_initializing():  # materialise the reference's unused parameters
      if not self.enable_film_self_attn:
        film_sa(mish(g))
      if not self.enable_film_ffn:
        film_ffn(mish(g))
      cross_attn(x, x, x)

    h = LayerNorm(name="norm1")(x)
    sa = drop(MultiHeadAttention(self.n_head, self.dropout, name="self_attn")(
        h, h, h, self_mask, deterministic=det))
    x = x + film(film_sa, self.enable_film_self_attn, sa)
    h = LayerNorm(name="norm3")(x)
    ff = drop(_ffn(h, self.d_ff, self.dropout, det))
    return x + film(film_ffn, self.enable_film_ffn, ff)


# ----------------------------------------------------------------------------------------
# Shared stems (used by DP-T, DP-T-FiLM and the unified transformer)
# ----------------------------------------------------------------------------------------
def action_tokens(module: nn.Module, x: jax.Array, n_emb: int, emb_dropout: float,
                  train: bool) -> jax.Array:
  """input_emb(x) + pos_emb[:, :H] then embedding dropout. Creates ``input_emb``, ``pos_emb``."""
  horizon = x.shape[1]
  tok = normal_linear(n_emb, name="input_emb")(x)
  pos = module.param("pos_emb", inits.normal(0.02), (1, horizon, n_emb))
  return Dropout(emb_dropout)(tok + pos, deterministic=not train)


def condition_tokens(module: nn.Module, t: jax.Array, cond: Optional[jax.Array], n_emb: int,
                     emb_dropout: float, train: bool) -> jax.Array:
  """[sinusoid(t); cond_obs_emb(cond_k)] + cond_pos_emb, dropout, then the token-wise
  ``cond_encoder`` MLP (Linear(E, 4E) -> Mish -> Linear(4E, E)). Returns (B, 1+To, E)."""
  tokens = sinusoidal_embedding(t, n_emb)[:, None, :]
  if cond is not None:
    obs = normal_linear(n_emb, name="cond_obs_emb")(cond)
    tokens = jnp.concatenate([tokens, obs], axis=1)
  n_tok = tokens.shape[1]
  pos = module.param("cond_pos_emb", inits.normal(0.02), (1, n_tok, n_emb))
  h = Dropout(emb_dropout)(tokens + pos, deterministic=not train)
  return TokenMLP(name="cond_encoder")(h)


def output_head(x: jax.Array, out_dim: int) -> jax.Array:
  """ln_f -> head (N(0, 0.02) Linear)."""
  return normal_linear(out_dim, name="head")(LayerNorm(name="ln_f")(x))


def cross_attn_forward(module, x, t, cond, *, train):
  """DP-T forward (docs/method.md §3.3), shared by ``TransformerForDiffusion`` and unified cross_attn."""
  b, horizon, da = x.shape
  t = broadcast_timesteps(t, b)
  memory = condition_tokens(module, t, cond, module.n_emb, module.emb_dropout, train)
  h = action_tokens(module, x, module.n_emb, module.emb_dropout, train)
  self_mask = causal_mask(horizon) if module.causal_attn else None
  mem_mask = memory_mask(horizon, memory.shape[1]) if module.causal_attn else None
  for i in range(module.n_layer):
    h = TransformerDecoderLayer(module.n_head, 4 * module.n_emb, module.dropout,
                                name=f"layer_{i}")(h, memory, self_mask, mem_mask, train=train)
  return output_head(h, da)


class TransformerForDiffusion(ActionExpert):
  """DP-T: TransformerForDiffusion with cross-attention, docs/method.md §3.3.

  Action tokens: input_emb(x) + ``pos_emb`` (1, H, E). Condition tokens:
  [sinusoid(t) (no MLP); ``cond_obs_emb``(obs_k) for each obs step] + ``cond_pos_emb``
  (1, 1+To, E), through the token-wise ``cond_encoder`` MLP (params
  ``cond_encoder/linear_{0,1}``; the reference's ``encoder.0``/``encoder.2``) -> memory.
  ``n_layer`` pre-norm ``TransformerDecoderLayer``s (``layer_{i}``) with causal self-attention
  and memory mask t >= s - 1, then ``ln_f`` -> ``head``.
  Stage-2 trainable (docs/method.md §2.1, MimicGen ``load_pretrained_weights_DP_T``): ``cond_obs_emb``,
  ``cond_pos_emb``, ``pos_emb`` and the ``cond_encoder`` MLP (8 leaves). Note: on LIBERO the
  reference keeps ``pos_emb`` and the condition MLP frozen (``config.freeze.extra_frozen``).
  """
  n_layer: int = 8
  n_head: int = 4
  n_emb: int = 256
  dropout: float = 0.3        # p_drop_attn
  emb_dropout: float = 0.0    # p_drop_emb
  causal_attn: bool = True

  CONDITIONING_PATTERNS = (COND_PREFIX_PATTERN, POS_EMB_PATTERN)
  NO_WEIGHT_DECAY_PATTERNS = TRANSFORMER_NO_WEIGHT_DECAY_PATTERNS

  @nn.compact
  def __call__(self, x: jax.Array, t: jax.Array, cond: Optional[jax.Array] = None, *,
               train: bool = False) -> jax.Array:
    return cross_attn_forward(self, x, t, cond, train=train)


class TransformerForDiffusionFiLM(ActionExpert):
  """DP-T-FiLM, docs/method.md §3.4.

  No condition tokens: g = concat[step_encoder(t) (Sinusoidal(E) -> 4E -> Mish -> E, N(0,0.02)),
  flatten(cond)] (336-D stage 1, 530-D stage 2). Action tokens input_emb(x) + ``pos_emb``;
  ``n_layer`` ``FiLMDecoderLayerT``s (``layer_{i}``; FiLM on the FFN output only, causal
  self-attention; unused ``cross_attn`` and ``cond_film_self_attn`` params exist), ln_f, head.
  Stage-2 trainable (docs/method.md §2.1): ``cond_film_ffn``, the unused ``cond_film_self_attn`` and
  ``pos_emb``.
  """
  n_layer: int = 8
  n_head: int = 4
  n_emb: int = 256
  dropout: float = 0.3
  emb_dropout: float = 0.0
  causal_attn: bool = True
  enable_film_self_attn: bool = False
  enable_film_ffn: bool = True

  CONDITIONING_PATTERNS = (COND_PREFIX_PATTERN, POS_EMB_PATTERN)
  NO_WEIGHT_DECAY_PATTERNS = (r"(^|/)bias$", r"(^|/)(norm\d?|ln_f)/", r"^pos_emb$")

  @nn.compact
  def __call__(self, x: jax.Array, t: jax.Array, cond: Optional[jax.Array] = None, *,
               train: bool = False) -> jax.Array:
    b, horizon, da = x.shape
    t = broadcast_timesteps(t, b)
    g = global_condition(StepEncoder(self.n_emb, normal_init=True, name="step_encoder")(t), cond)
    h = action_tokens(self, x, self.n_emb, self.emb_dropout, train)
    mask = causal_mask(horizon) if self.causal_attn else None
    for i in range(self.n_layer):
      h = FiLMDecoderLayerT(self.n_head, 4 * self.n_emb, self.dropout,
                            self.enable_film_self_attn, self.enable_film_ffn,
                            name=f"layer_{i}")(h, g, mask, train=train)
    return output_head(h, da)
