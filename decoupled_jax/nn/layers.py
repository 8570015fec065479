"""Shared layers with PyTorch semantics, channels-last (docs/method.md §3 conventions, §12).

* ``TorchLinear``: ``nn.Linear`` with torch-default init unless overridden; kernel (in, out).
* ``ParallelLinear``: one affine map per sequence index (DP-MLP input layer, docs/method.md §3.5).
* ``Conv1d`` / ``ConvTranspose1d``: 1-D (transposed) convolutions on (..., T, C) written as
  im2col + one matmul. XLA:CPU's native conv is 70-100x slow when T < kernel (the U-Net's
  lowest level, docs/performance.md); the matmul form has no such cliff. Kernels are
  stored (k, C_in, C_out) for both layers.
* ``sinusoidal_embedding``: the diffusion-step embedding (half = dim/2, frequencies
  exp(-ln(10000) i / (half - 1)), output [sin, cos]).
* ``mish``, exact-erf ``gelu``, ``GroupNorm``/``LayerNorm`` (eps 1e-5), ``RMSNorm``
  (eps = float32 machine eps, torch's ``eps=None``), ``MultiHeadAttention`` (torch
  ``nn.MultiheadAttention`` semantics: dropout on the attention weights, boolean masks).
"""
from __future__ import annotations

import math
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from decoupled_jax.nn import initializers as inits

__all__ = [
    "TorchLinear",
    "normal_linear",
    "zero_linear",
    "ParallelLinear",
    "Conv1d",
    "ConvTranspose1d",
    "sinusoidal_embedding",
    "mish",
    "gelu",
    "GroupNorm",
    "LayerNorm",
    "RMSNorm",
    "MultiHeadAttention",
    "causal_mask",
    "RMS_NORM_EPS",
]

RMS_NORM_EPS = float(np.finfo(np.float32).eps)  # torch nn.RMSNorm(eps=None) on float32


# ----------------------------------------------------------------------------------------
# Activations and embeddings
# ----------------------------------------------------------------------------------------
def mish(x: jax.Array) -> jax.Array:
  """x * tanh(softplus(x)) (torch.nn.Mish)."""
  return x * jnp.tanh(jax.nn.softplus(x))


def gelu(x: jax.Array) -> jax.Array:
  """Exact GELU, x * Phi(x) (torch's default ``approximate='none'``), written as torch's CPU
  kernel computes it: 0.5 x (1 + erf(x / sqrt 2)). jax.nn.gelu's erfc form is the same
  function but XLA:CPU expands f32 erfc into ~60 ops, and this elementwise pass was the most
  expensive non-matmul op of a DP-MLP train step (docs/performance.md)."""
  return 0.5 * x * (1.0 + jax.lax.erf(x * np.float32(1 / np.sqrt(2))).astype(x.dtype))


class Dropout(nn.Module):
  """Inverted dropout (torch's ``nn.Dropout``; flax's ``nn.Dropout`` interface: the 'dropout'
  rng collection, ``deterministic``) drawing 16 random bits per element instead of 32.

  Each 32-bit word of the run's generator (config.rng_impl) gives the keep/drop decision of two
  elements: an element is dropped when its 16-bit half is below round(rate * 2^16), and kept
  ones are scaled by 1 / (1 - that effective rate), so E[out] = x exactly. The effective rate
  differs from `rate` by < 2^-17 (0.1 -> 0.100006). Generating the bits is 16-24 % of a DP-MLP
  train step's op time on XLA:CPU even so (docs/performance.md); 16 rather than 32 bits per
  element measured 1-6 % faster.
  """
  rate: float
  deterministic: Optional[bool] = None
  rng_collection: str = "dropout"

  @nn.compact
  def __call__(self, x: jax.Array, deterministic: Optional[bool] = None) -> jax.Array:
    deterministic = nn.merge_param("deterministic", self.deterministic, deterministic)
    if self.rate == 0.0 or deterministic:
      return x
    if self.rate >= 1.0:
      return jnp.zeros_like(x)
    threshold = int(round(self.rate * 65536))
    keep_scale = 65536.0 / (65536 - threshold)
    n = x.size
    words = jax.random.bits(self.make_rng(self.rng_collection), ((n + 1) // 2,), jnp.uint32)
    halves = jnp.concatenate([words & 0xFFFF, words >> 16])[:n].reshape(x.shape)
    keep = halves >= jnp.uint32(threshold)
    return jnp.where(keep, x * jnp.asarray(keep_scale, x.dtype), jnp.zeros((), x.dtype))


def sinusoidal_embedding(t: jax.Array, dim: int) -> jax.Array:
  """Sinusoidal embedding of (B,) timesteps -> (B, dim) = [sin(t f), cos(t f)].

  f_i = exp(-ln(10000) * i / (half - 1)), i = 0..half-1, half = dim // 2
  (SinusoidalPosEmb of Diffusion Policy). Computed in float32, returned in the dtype of a
  floating `t` (the compute dtype under mixed precision).
  """
  half = dim // 2
  scale = math.log(10000.0) / (half - 1)
  freqs = jnp.exp(jnp.arange(half, dtype=jnp.float32) * -scale)
  t = jnp.asarray(t)
  out_dtype = t.dtype if jnp.issubdtype(t.dtype, jnp.floating) else jnp.float32
  args = t.astype(jnp.float32)[..., None] * freqs
  return jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=-1).astype(out_dtype)


# ----------------------------------------------------------------------------------------
# Dense layers
# ----------------------------------------------------------------------------------------
class TorchLinear(nn.Module):
  """y = x @ kernel + bias, kernel (in, out). Default init = torch ``nn.Linear``."""
  features: int
  use_bias: bool = True
  kernel_init: Optional[inits.Initializer] = None
  bias_init: Optional[inits.Initializer] = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    fan_in = x.shape[-1]
    default = inits.torch_uniform(inits.linear_fan_in(fan_in))
    kernel = self.param("kernel", self.kernel_init or default, (fan_in, self.features))
    # A 2-D matmul over flattened leading dims: XLA:CPU runs the backward pass of a rank-3
    # dot ~20% slower than the same contraction written as a plain matrix product.
    y = jnp.dot(x.reshape(-1, fan_in), kernel).reshape(x.shape[:-1] + (self.features,))
    if self.use_bias:
      y = y + self.param("bias", self.bias_init or default, (self.features,))
    return y


def normal_linear(features: int, *, std: float = 0.02, use_bias: bool = True,
                  name: Optional[str] = None) -> TorchLinear:
  """Linear with N(0, std) weight and zero bias (the transformers' ``_init_weights``)."""
  return TorchLinear(features, use_bias=use_bias, kernel_init=inits.normal(std),
                     bias_init=inits.zeros, name=name)


def zero_linear(features: int, *, name: Optional[str] = None) -> TorchLinear:
  """Linear with zero weight and zero bias (AdaLN-Zero / additive output projections)."""
  return TorchLinear(features, kernel_init=inits.zeros, bias_init=inits.zeros, name=name)


class ParallelLinear(nn.Module):
  """A separate affine map per sequence index: (B, N, in) -> (B, N, out).

  kernel (N, in, out), bias (N, out); N is read from the input. Default init N(0, 1) for
  both (``torch.randn``, DP-MLP's VectorizedParallelLinear, docs/method.md §3.5).
  """
  features: int
  kernel_init: inits.Initializer = inits.normal(1.0)
  bias_init: inits.Initializer = inits.normal(1.0)

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    n, fan_in = x.shape[-2], x.shape[-1]
    kernel = self.param("kernel", self.kernel_init, (n, fan_in, self.features))
    bias = self.param("bias", self.bias_init, (n, self.features))
    return jnp.einsum("...ni,nio->...no", x, kernel) + bias


# ----------------------------------------------------------------------------------------
# Convolutions (im2col + matmul)
# ----------------------------------------------------------------------------------------
def _pad_time(x: jax.Array, left: int, right: int) -> jax.Array:
  if left == 0 and right == 0:
    return x
  pad = [(0, 0)] * x.ndim
  pad[-2] = (left, right)
  return jnp.pad(x, pad)


class Conv1d(nn.Module):
  """torch ``nn.Conv1d`` (zero padding) on channels-last (..., T, C_in) -> (..., T_out, C_out).

  kernel (k, C_in, C_out); T_out = floor((T + 2p - d(k-1) - 1)/s) + 1. Computed as
  im2col (k strided slices concatenated along channels) followed by one matmul.
  """
  features: int
  kernel_size: int
  stride: int = 1
  padding: int = 0
  dilation: int = 1
  use_bias: bool = True
  kernel_init: Optional[inits.Initializer] = None
  bias_init: Optional[inits.Initializer] = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    k, s, d = self.kernel_size, self.stride, self.dilation
    c_in = x.shape[-1]
    default = inits.torch_uniform(inits.conv1d_fan_in(c_in, k))
    kernel = self.param("kernel", self.kernel_init or default, (k, c_in, self.features))
    x = _pad_time(x, self.padding, self.padding)
    t = x.shape[-2]
    t_out = (t - d * (k - 1) - 1) // s + 1
    if t_out <= 0:
      raise ValueError(f"Conv1d: input length {t - 2 * self.padding} too short for kernel {k}")
    if k == 1:
      patches = x[..., : s * (t_out - 1) + 1: s, :]
    else:
      cols = [x[..., j * d: j * d + s * (t_out - 1) + 1: s, :] for j in range(k)]
      patches = jnp.concatenate(cols, axis=-1)  # (..., T_out, k * C_in), tap-major
    y = jnp.dot(patches, kernel.reshape(k * c_in, self.features))
    if self.use_bias:
      y = y + self.param("bias", self.bias_init or default, (self.features,))
    return y


class ConvTranspose1d(nn.Module):
  """torch ``nn.ConvTranspose1d`` (no output_padding, dilation 1) on (..., T, C_in).

  kernel (k, C_in, C_out) (torch stores (C_in, C_out, k)); output length
  (T - 1) s - 2p + k. y_full[i s + j] += x[i] @ kernel[j], then p is cropped on each side.
  Computed as one matmul x @ kernel -> (..., T, k, C_out) followed by a polyphase
  overlap-add (ceil(k/s) shifted adds), with no zero-dilated input.
  Default init: torch's, whose fan_in for a transposed conv is C_out * k.
  """
  features: int
  kernel_size: int
  stride: int = 1
  padding: int = 0
  use_bias: bool = True
  kernel_init: Optional[inits.Initializer] = None
  bias_init: Optional[inits.Initializer] = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    k, s, p = self.kernel_size, self.stride, self.padding
    c_in, c_out = x.shape[-1], self.features
    default = inits.torch_uniform(inits.conv_transpose1d_fan_in(c_out, k))
    kernel = self.param("kernel", self.kernel_init or default, (k, c_in, c_out))
    t = x.shape[-2]
    lead = x.shape[:-2]
    m = -(-k // s)  # taps per output phase
    w = jnp.transpose(kernel, (1, 0, 2))  # (C_in, k, C_out)
    if m * s != k:
      w = jnp.pad(w, [(0, 0), (0, m * s - k), (0, 0)])
    z = jnp.dot(x, w.reshape(c_in, m * s * c_out)).reshape(*lead, t, m, s, c_out)
    # Output block q = i + j collects z[i, j] (phase r inside the block).
    y = None
    for j in range(m):
      zj = z[..., j, :, :]  # (..., T, s, C_out)
      pad = [(0, 0)] * zj.ndim
      pad[-3] = (j, m - 1 - j)
      zj = jnp.pad(zj, pad) if m > 1 else zj
      y = zj if y is None else y + zj
    y = y.reshape(*lead, (t + m - 1) * s, c_out)
    length = (t - 1) * s + k
    y = y[..., p: length - p, :]
    if self.use_bias:
      y = y + self.param("bias", self.bias_init or default, (c_out,))
    return y


# ----------------------------------------------------------------------------------------
# Normalisation
# ----------------------------------------------------------------------------------------
def GroupNorm(num_groups: int, *, name: Optional[str] = None) -> nn.GroupNorm:  # noqa: N802
  """torch ``nn.GroupNorm(num_groups, C)`` for channels-last input (eps 1e-5, affine)."""
  return nn.GroupNorm(num_groups=num_groups, epsilon=1e-5, use_fast_variance=False, name=name)


def LayerNorm(*, affine: bool = True, name: Optional[str] = None) -> nn.LayerNorm:  # noqa: N802
  """torch ``nn.LayerNorm(C, elementwise_affine=affine)`` (eps 1e-5); params scale/bias."""
  return nn.LayerNorm(epsilon=1e-5, use_scale=affine, use_bias=affine, use_fast_variance=False,
                      name=name)


class RMSNorm(nn.Module):
  """torch ``nn.RMSNorm(C, eps=None, elementwise_affine=affine)``: x / sqrt(mean(x^2) + eps)."""
  affine: bool = False
  epsilon: float = RMS_NORM_EPS

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    y = x * jax.lax.rsqrt(jnp.mean(jnp.square(x), axis=-1, keepdims=True) + self.epsilon)
    if self.affine:
      y = y * self.param("scale", inits.ones, (x.shape[-1],))
    return y


# ----------------------------------------------------------------------------------------
# Attention
# ----------------------------------------------------------------------------------------
def causal_mask(n: int) -> jax.Array:
  """(n, n) boolean, True where query i may attend key j (j <= i)."""
  return jnp.tril(jnp.ones((n, n), dtype=bool))


class MultiHeadAttention(nn.Module):
  """torch ``nn.MultiheadAttention`` (batch_first) with N(0, 0.02) weights, zero biases.

  Separate ``q_proj``/``k_proj``/``v_proj``/``out_proj`` Linears (torch packs q/k/v into
  ``in_proj_weight``; same parameter count and init). ``mask``: boolean, broadcastable to
  (B, heads, T_q, T_k), True = may attend. Dropout acts on the attention weights.
  """
  num_heads: int
  dropout: float = 0.0
  kernel_init: inits.Initializer = inits.normal(0.02)
  bias_init: inits.Initializer = inits.zeros

  @nn.compact
  def __call__(self, query: jax.Array, key: jax.Array, value: jax.Array,
               mask: Optional[jax.Array] = None, *, deterministic: bool = True) -> jax.Array:
    e = query.shape[-1]
    h = self.num_heads
    if e % h:
      raise ValueError(f"embed dim {e} not divisible by {h} heads")
    hd = e // h

    def proj(name, inp):
      return TorchLinear(e, kernel_init=self.kernel_init, bias_init=self.bias_init, name=name)(inp)

    q = proj("q_proj", query).reshape(*query.shape[:-1], h, hd)
    k = proj("k_proj", key).reshape(*key.shape[:-1], h, hd)
    v = proj("v_proj", value).reshape(*value.shape[:-1], h, hd)
    logits = jnp.einsum("...qhd,...khd->...hqk", q, k) / math.sqrt(hd)
    if mask is not None:
      logits = jnp.where(mask, logits, jnp.finfo(logits.dtype).min)
    weights = jax.nn.softmax(logits, axis=-1)
    weights = Dropout(self.dropout)(weights, deterministic=deterministic)
    out = jnp.einsum("...hqk,...khd->...qhd", weights, v).reshape(*query.shape[:-1], e)
    return proj("out_proj", out)
