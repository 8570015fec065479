"""Stage 2 (decoupled), normal or random-frozen training on demonstrations (spec §2, §5, §7).

  python experiments/train.py --config=configs/train.py:mode=decoupled,arch=dp_mlp \
      --config.data.dataset=workdirs/demos/lift.hdf5 \
      --config.stage1_checkpoint=workdirs/stage1/checkpoints --workdir=workdirs/lift_decoupled

Arguments (after the colon):
  mode     normal | decoupled | random_frozen                         (default decoupled)
  arch     dp_c | dp_mlp | dp_t | dp_t_film | unified                   (default dp_mlp)
  cond     unified conditioning (see configs/pretrain.py)
  head     diffusion | flow                                             (default diffusion)
  obs      lowdim | image  (image: agentview + eye-in-hand 84x84 -> ResNet-18, spec §4.1)
  task     robosuite task for evaluation (default: the dataset's env_args)
  steps, batch, episodes   overrides (0 = preset)
  paper    the paper's budget: batch 64, 50 epochs of 1000 demos (set steps for your data)
  debug    tiny model, a few steps, 1 short evaluation episode
"""
from decoupled_jax import config_lib


def get_config(arg=None):
  return config_lib.finetune_config(**config_lib.parse_arg(arg, **config_lib.FINETUNE_ARGS))
