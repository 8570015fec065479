"""decoupled_jax: Diffusion Policy with a decoupled action expert, in JAX/Flax.

Package map, bottom layer first (docs/architecture.md, "Layers", says what may import what;
this file imports nothing):
  errors.py    the user-facing error classes (one `error:` line, exit status 2)
  runtime.py   process set-up before jax/mujoco import (XLA flags, MUJOCO_GL), logging
  util.py      atomic writes, checkpoint-step scans, Wilson intervals, seeded host batches
  nn/          shared layers (PyTorch-default inits, sinusoidal embeddings, fast 1-D convs)
  data/        episodes, rotations, normalisers, windows, dataset formats (robomimic HDF5,
               RLDS, LeRobot v3.0/v2.1, LIBERO files)
  pretrained/  the stage-1 experts shipped in the package (`pretrained:<name>`)
  kinematics/  robots from MJCF, forward kinematics (plain JAX and MJX), stage-1 FK windows
  backbones/   action experts: DP-C (U-Net), DP-MLP, DP-T, DP-T-FiLM, unified transformer
  encoders/    observation encoders (ResNet-18 GN + spatial softmax, low-dim)
  heads/       generative heads: diffusion (DDPM/DDIM) and flow matching, pure functions
  training/    policy, train state, freezing by path, optimizer, EMA, sharding, checkpoints,
               the one training loop
  inference.py load_policy(checkpoint_dir) -> PolicyRunner
  sim/         robosuite environments, scripted experts, demo generation, closed-loop evaluation
  libero/      the LIBERO simulator side (runs in the LIBERO venv, no jax) and its binaries
  config_lib.py  the config schema, defaults and validation
  export.py    self-contained policy exports; cli.py: the binaries' shared prelude and errors
  serving/     the websocket policy server (openpi's protocol), RemotePolicy, serve/export CLIs
  benchmarks/  what a stage trains on and how it is scored (`config.benchmark`): stage 1
               fk | libero, stage 2 robosuite | libero | dataset (any dataset, offline)
  pipelines/   stage builders (pretrain, finetune), run (one stage in a workdir), the paper
               and LIBERO chains, run records, shipping experts
  perf/        speed measurement behind experiments/benchmark*.py (top layer; nothing imports it)
"""

__version__ = "0.1.0"
