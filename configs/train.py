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

LOWDIM_KEYS = ("robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos", "object")
IMAGE_LOWDIM_KEYS = ("robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos")
IMAGE_KEYS = ("agentview_image", "robot0_eye_in_hand_image")


def get_config(arg=None):
  a = config_lib.parse_arg(arg, mode="decoupled", arch="dp_mlp", cond="adaln_zero",
                           head="diffusion", obs="lowdim", task="", steps=0, batch=0, episodes=-1,
                           paper=False, debug=False)
  c = config_lib.ConfigDict()
  c.seed = 0
  c.progress = True
  c.mode = a.mode
  c.stage1_checkpoint = ""
  c.backbone = config_lib.backbone_config(a.arch, a.cond)
  c.head = config_lib.head_config(a.head)
  c.optimizer = config_lib.optimizer_config(a.arch, "finetune")
  c.ema = config_lib.ema_config()
  c.freeze = config_lib.freeze_config()      # set from `mode` by the pipeline

  c.data = config_lib.ConfigDict()
  c.data.dataset = ""
  c.data.filter_key = ""
  c.data.task = a.task
  if a.obs == "image":
    c.data.image_keys, c.data.lowdim_keys = IMAGE_KEYS, IMAGE_LOWDIM_KEYS
  elif a.obs == "lowdim":
    c.data.image_keys, c.data.lowdim_keys = (), LOWDIM_KEYS
  else:
    raise ValueError(f"obs must be 'lowdim' or 'image', got {a.obs!r}")
  c.data.n_obs_steps = 2
  c.data.horizon = config_lib.default_horizon(a.arch)
  c.data.n_action_steps = 8

  c.train = config_lib.ConfigDict()
  c.train.batch_size = 64
  c.train.num_steps = 5000
  c.train.log_every = 50
  c.train.checkpoint_every = 1000
  c.train.eval_every = 0
  c.train.max_checkpoints = 2

  c.eval = config_lib.ConfigDict()
  c.eval.num_episodes = 50
  c.eval.periodic_episodes = 10
  c.eval.num_workers = 2
  c.eval.num_videos = 2
  c.eval.max_steps = 0          # 0: 2.5 x the average demonstration length (spec §7.1)
  c.eval.seed_offset = 0
  c.eval.progress = True

  if a.paper:   # 1000 demos x ~(avg_len - 7) / 64 steps per epoch, 50 epochs, eval per epoch
    c.train.num_steps = 80_000
    c.train.eval_every = 1_600
  if a.debug:
    c.backbone.kwargs.update(config_lib.debug_backbone_kwargs(a.arch))
    c.train.batch_size = 4
    c.train.num_steps = 3
    c.train.log_every = 1
    c.train.checkpoint_every = 2
    c.head.sampler = "ddim"
    c.head.num_inference_steps = 4
    c.head.flow_num_steps = 4
    c.optimizer.warmup_steps = 1
    c.eval.num_episodes = 1
    c.eval.num_workers = 0
    c.eval.num_videos = 1
    c.eval.max_steps = 16
    c.eval.progress = False
  if a.steps:
    c.train.num_steps = a.steps
  if a.batch:
    c.train.batch_size = a.batch
  if a.episodes >= 0:
    c.eval.num_episodes = a.episodes
  return c
