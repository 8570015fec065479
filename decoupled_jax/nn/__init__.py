"""Shared layers and initialisers (PyTorch semantics, channels-last)."""
from decoupled_jax.nn import initializers
from decoupled_jax.nn.initializers import (conv1d_fan_in, conv_transpose1d_fan_in, linear_fan_in,
                                           normal, ones, torch_uniform, zeros)
from decoupled_jax.nn.layers import (RMS_NORM_EPS, Conv1d, ConvTranspose1d, Dropout, GroupNorm,
                                     LayerNorm, MultiHeadAttention, ParallelLinear, RMSNorm,
                                     TorchLinear, causal_mask, gelu, mish, normal_linear,
                                     sinusoidal_embedding, zero_linear)

__all__ = [
    "initializers", "torch_uniform", "linear_fan_in", "conv1d_fan_in", "conv_transpose1d_fan_in",
    "normal", "zeros", "ones", "TorchLinear", "normal_linear", "zero_linear", "ParallelLinear",
    "Conv1d", "ConvTranspose1d", "Dropout", "sinusoidal_embedding", "mish", "gelu", "GroupNorm",
    "LayerNorm", "RMSNorm", "RMS_NORM_EPS", "MultiHeadAttention", "causal_mask",
]
