"""decoupled_jax: Diffusion Policy with a decoupled action expert, in JAX/Flax.

Layout (each sub-package is one part of the architecture):
  nn/          shared layers (PyTorch-default inits, sinusoidal embeddings, fast 1-D convs)
  backbones/   action experts: DP-C (U-Net), DP-MLP, DP-T, DP-T-FiLM, unified transformer
  heads/       generative heads: diffusion (DDPM/DDIM) and flow matching, pure functions
  encoders/    observation encoders (ResNet-18 GN + spatial softmax, low-dim)
  training/    policy, train state, freezing by path, optimizer, EMA, sharding, checkpoints
  data/        rotations, normalizers, episode windows, robomimic/MimicGen HDF5 IO
  kinematics/  Franka Panda forward kinematics with MJX and on-device stage-1 data
  sim/         robosuite environments, scripted experts, demo generation, evaluation
"""

__version__ = "0.1.0"
