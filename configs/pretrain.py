r"""Stage 1: pretrain an action expert on forward-kinematics data (docs/method.md §1, §5, §10).

  python experiments/pretrain.py --config=configs/pretrain.py:arch=dp_mlp,head=diffusion,signal=jp \
      --workdir=workdirs/stage1_dp_mlp

Arguments (comma-separated key=value after the colon):
  arch     dp_c | dp_mlp | dp_t | dp_t_film | unified            (default dp_mlp)
  cond     unified conditioning: adaln_zero | adaln | ada_rms_norm | film | additive |
           cross_attn | prefix | lora_cond                         (default adaln_zero)
  head     diffusion | flow                                          (default diffusion)
  signal   jp | eepose | none | jv (§1.3; jv: joints + joint steps) (default jp)
  source   generated (FK on device) | demos (robomimic HDF5 pairs, needs hdf5=)
  hdf5     path of a robomimic/MimicGen HDF5 for source=demos
  steps    number of train steps (0 = the preset's)
  batch    batch size (0 = the preset's)
  robot    panda (built in) | aloha (the packaged bimanual ALOHA: 14-D joint_pos targets,
           kinematics/robot.py packaged_robot_config)              (default panda)
  paper    the paper's budget (batch 256, 6 epochs of 1.93 M frames ~ 45 k steps, lr 1e-4)
  debug    tiny model and a few steps, for smoke tests

The robot (config.robot, decoupled_jax/kinematics/robot.py): the built-in Panda in robosuite's
frame by default; any other robot by its MJCF and end-effector site(s), e.g.

  python experiments/pretrain.py --config=configs/pretrain.py:debug --workdir=/tmp/ur5e \
      --config.robot.mjcf=tests/data/robots/ur5e/robot.xml --config.robot.ee_sites=ee_site
  ... --config.robot.mjcf=tests/data/robots/gantry.xml --config.robot.ee_sites=left_ee,right_ee \
      --config.robot.action_space=joint_pos      # a two-armed robot, joint-position targets

Every other key (and its default) is declared in decoupled_jax/config_lib.py; override any of
them with --config.a.b=value.
"""
from decoupled_jax import config_lib


def get_config(arg=None):
  a = config_lib.parse_arg(arg, arch="dp_mlp", cond="adaln_zero", head="diffusion",
                           signal="jp", source="generated", hdf5="", steps=0, batch=0,
                           paper=False, debug=False, robot="panda")
  c = config_lib.pretrain_config(a.arch, a.cond, a.head, a.signal, a.source)
  if a.robot != "panda":
    from decoupled_jax.kinematics.robot import packaged_robot_config
    c.robot = config_lib.ConfigDict(packaged_robot_config(a.robot))
  c.data.dataset = a.hdf5

  # The recipe, written out (docs/method.md §1, §5; AdamW betas and weight decay per backbone:
  # config_lib.optimizer_config). The learning rate and warm-up are set per preset below.
  c.optimizer.schedule = "cosine"
  c.ema.update(enabled=True, power=0.75, max_decay=0.9999)
  c.data.horizon = config_lib.default_horizon(a.arch)    # 16; 10 for the transformers
  c.data.position_box = config_lib.default_position_box()   # = stage 2's (§6)
  c.data.normalization = "ours"
  c.head.diffusion.update(num_train_steps=100, beta_schedule="squaredcos_cap_v2",
                          sampler="ddpm")

  # Default: sized for a 2-core CPU (~10 minutes for the full DP-MLP).
  c.train.batch_size = 64
  c.train.num_steps = 1500
  c.train.checkpoint_every = 500
  c.optimizer.learning_rate = 1e-3
  c.optimizer.warmup_steps = 100
  c.eval.num_windows = 256

  if a.paper:
    c.train.batch_size = 256
    c.train.num_steps = 45_000
    c.train.checkpoint_every = 7_500
    c.optimizer.learning_rate = 1e-4
    c.optimizer.warmup_steps = 500
  if a.debug:
    c.backbone.kwargs.update(config_lib.debug_backbone_kwargs(a.arch))
    c.train.batch_size = 8
    c.train.num_steps = 4
    c.train.log_every = 2
    c.train.checkpoint_every = 2
    c.optimizer.warmup_steps = 2
    c.eval.num_windows = 8
    c.head.diffusion.sampler = "ddim"
    c.head.diffusion.num_inference_steps = 4
    c.head.flow.num_steps = 4
    c.progress = False
  if a.steps:
    c.train.num_steps = a.steps
  if a.batch:
    c.train.batch_size = a.batch
  return c
