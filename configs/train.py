r"""Stage 2 (decoupled), normal or random-frozen training on demonstrations
(docs/method.md §2, §4, §5, §7).

  python experiments/train.py --config=configs/train.py:mode=decoupled,arch=dp_mlp \
      --config.data.dataset=workdirs/demos/Lift.hdf5 \
      --config.stage1_checkpoint=workdirs/stage1/checkpoints --workdir=workdirs/lift_decoupled

Arguments (after the colon):
  mode     normal | decoupled | random_frozen                         (default decoupled)
  arch     dp_c | dp_mlp | dp_t | dp_t_film | unified                   (default dp_mlp)
  cond     unified conditioning (see configs/pretrain.py)
  head     diffusion | flow                                             (default diffusion)
  obs      lowdim | image  (image: agentview + eye-in-hand 84x84 -> ResNet-18, §4.1)
  task     robosuite task for evaluation (default: the dataset's env_args)
  steps, batch, episodes   overrides (0 / -1 = the preset's)
  paper    the paper's budget: batch 64, ~50 epochs of 1000 demos, evaluation every epoch
  debug    tiny model, a few steps, 1 short evaluation episode

Every other key (and its default) is declared in decoupled_jax/config_lib.py.
"""
from decoupled_jax import config_lib


def get_config(arg=None):
  a = config_lib.parse_arg(arg, mode="decoupled", arch="dp_mlp", cond="adaln_zero",
                           head="diffusion", obs="lowdim", task="", steps=0, batch=0,
                           episodes=-1, paper=False, debug=False)
  c = config_lib.finetune_config(a.mode, a.arch, a.cond, a.head, a.obs)
  c.data.task = a.task

  c.train.batch_size = 64
  c.train.num_steps = 5000
  c.train.checkpoint_every = 1000
  c.eval.num_episodes = 50

  if a.paper:   # 1000 demos x ~(avg_len - 7) / 64 steps per epoch, 50 epochs, eval per epoch
    c.train.num_steps = 80_000
    c.train.eval_every = 1_600
  if a.debug:
    c.backbone.kwargs.update(config_lib.debug_backbone_kwargs(a.arch))
    c.train.batch_size = 4
    c.train.num_steps = 3
    c.train.log_every = 1
    c.train.checkpoint_every = 2
    c.optimizer.warmup_steps = 1
    c.head.sampler = "ddim"
    c.head.num_inference_steps = 4
    c.head.flow_num_steps = 4
    c.eval.num_episodes = 1
    c.eval.num_workers = 0
    c.eval.num_videos = 1
    c.eval.max_steps = 16
    c.eval.progress = False
    c.progress = False
  if a.steps:
    c.train.num_steps = a.steps
  if a.batch:
    c.train.batch_size = a.batch
  if a.episodes >= 0:
    c.eval.num_episodes = a.episodes
  return c
