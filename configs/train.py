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
  benchmark  robosuite (default: evaluated closed loop in robosuite) | dataset (any dataset and
           robot, no simulator, evaluated offline on held-out episodes; benchmarks/dataset.py)
  action_space  joint_pos | ee_pose   (benchmark=dataset: what the dataset's actions are)
  steps, batch, episodes   overrides (0 / -1 = the preset's)
  paper    the paper's budget: batch 64, ~50 epochs of 1000 demos, evaluation every epoch
  debug    tiny model, a few steps, 1 short evaluation episode

Any dataset and robot, without a simulator (README "Bring your own dataset"), e.g. a LeRobot
v3.0 dataset of joint positions:

  python experiments/train.py --config=configs/train.py:benchmark=dataset,mode=normal \
      --config.data.dataset=path/to/lerobot_dataset --config.data.format=lerobot \
      --config.data.key_map.robot0_joint_pos='observation.state[0:7]' \
      --config.data.key_map.robot0_gripper_qpos='observation.state[7:9]' \
      --config.robot.mjcf=path/to/robot.xml --config.robot.ee_sites=<site> --workdir=workdirs/mine

Every other key (and its default) is declared in decoupled_jax/config_lib.py.
"""
from decoupled_jax import config_lib


def get_config(arg=None):
  a = config_lib.parse_arg(arg, mode="decoupled", arch="dp_mlp", cond="adaln_zero",
                           head="diffusion", obs="lowdim", task="", steps=0, batch=0,
                           episodes=-1, paper=False, debug=False, benchmark="robosuite",
                           action_space="joint_pos")
  offline = a.benchmark == "dataset"
  if offline:
    c = config_lib.dataset_config(a.mode, a.arch, a.action_space)
    c.head.type = a.head
  elif a.benchmark == "robosuite":
    c = config_lib.finetune_config(a.mode, a.arch, a.cond, a.head, a.obs)
  else:
    raise config_lib.ConfigError(f"benchmark={a.benchmark!r}: 'robosuite' or 'dataset' (LIBERO: "
                                 f"configs/libero.py)")
  c.data.task = a.task

  # The recipe, written out (docs/method.md §2.3, §5, §6; AdamW betas and weight decay per
  # backbone: config_lib.optimizer_config).
  c.optimizer.learning_rate = 1e-4
  c.optimizer.warmup_steps = 500
  c.optimizer.schedule = "cosine"
  c.ema.update(enabled=True, power=0.75, max_decay=0.9999)
  c.data.n_obs_steps = 2
  c.data.horizon = config_lib.default_horizon(a.arch)    # 16; 10 for the transformers
  c.data.n_action_steps = 8
  c.head.diffusion.update(num_train_steps=100, beta_schedule="squaredcos_cap_v2",
                          sampler="ddpm")
  c.train.epochs = 0                # > 0: that many shuffled epochs instead of num_steps

  c.train.batch_size = 64
  c.train.num_steps = 5000
  c.train.checkpoint_every = 1000
  if not offline:
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
    c.head.diffusion.sampler = "ddim"
    c.head.diffusion.num_inference_steps = 4
    c.head.flow.num_steps = 4
    if offline:
      c.eval.num_windows = 8
    else:
      c.eval.update(num_episodes=1, num_workers=0, num_videos=1, max_steps=16, progress=False)
    c.progress = False
  if a.steps:
    c.train.num_steps = a.steps
  if a.batch:
    c.train.batch_size = a.batch
  if a.episodes >= 0 and not offline:
    c.eval.num_episodes = a.episodes
  return c
