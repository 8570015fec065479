"""Stage 1: pretrain an action expert on forward-kinematics data (spec §1, §5, §10).

  python experiments/pretrain.py --config=configs/pretrain.py:arch=dp_mlp,head=diffusion,signal=jp \
      --workdir=workdirs/stage1_dp_mlp

Arguments (comma-separated key=value after the colon):
  arch     dp_c | dp_mlp | dp_t | dp_t_film | unified            (default dp_mlp)
  cond     unified conditioning: adaln_zero | adaln | ada_rms_norm | film | additive |
           cross_attn | prefix | lora_cond                         (default adaln_zero)
  head     diffusion | flow                                          (default diffusion)
  signal   jp | eepose | none   (spec §1.3)                          (default jp)
  source   generated (MJX FK, on device) | demos (robomimic HDF5 pairs, needs hdf5=)
  hdf5     path of a robomimic/MimicGen HDF5 for source=demos
  steps    number of train steps (0 = the preset's)
  batch    batch size (0 = the preset's)
  debug    tiny model and a few steps, for smoke tests

The paper's run is batch 256 for 6 epochs of 1.93 M frames (about 45 k steps) at learning
rate 1e-4; `paper` selects it. The default is sized for a 2-core CPU: batch 64, 1500 steps,
learning rate 1e-3 (about 10 minutes for the full-size DP-MLP).
"""
from decoupled_jax import config_lib


def get_config(arg=None):
  return config_lib.pretrain_config(**config_lib.parse_arg(arg, **config_lib.PRETRAIN_ARGS))
