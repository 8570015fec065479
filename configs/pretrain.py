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

The paper's run is batch 256 for 6 epochs of 1.93 M frames (about 45 k steps); `paper`
selects it. The default is sized for a 2-core CPU.
"""
from decoupled_jax import config_lib


def get_config(arg=None):
  a = config_lib.parse_arg(arg, arch="dp_mlp", cond="adaln_zero", head="diffusion", signal="jp",
                           source="generated", hdf5="", steps=0, batch=0, debug=False,
                           paper=False)
  c = config_lib.ConfigDict()
  c.seed = 42
  c.progress = True
  c.backbone = config_lib.backbone_config(a.arch, a.cond)
  c.head = config_lib.head_config(a.head)
  c.optimizer = config_lib.optimizer_config(a.arch, "pretrain")
  c.ema = config_lib.ema_config()
  c.freeze = config_lib.freeze_config("none")

  c.data = config_lib.ConfigDict()
  c.data.source = a.source
  c.data.hdf5_path = a.hdf5
  c.data.signal = a.signal
  c.data.horizon = config_lib.default_horizon(a.arch)
  c.data.fk = config_lib.ConfigDict()          # trajectories.FKWindowConfig overrides

  c.train = config_lib.ConfigDict()
  c.train.batch_size = 256
  c.train.num_steps = 3000
  c.train.log_every = 50
  c.train.checkpoint_every = 1000
  c.train.eval_every = 0
  c.train.max_checkpoints = 2

  c.eval = config_lib.ConfigDict()
  c.eval.num_windows = 256

  if a.paper:
    c.train.num_steps = 45_000
    c.train.checkpoint_every = 7_500
  if a.debug:
    c.backbone.kwargs.update(config_lib.debug_backbone_kwargs(a.arch))
    c.train.batch_size = 8
    c.train.num_steps = 4
    c.train.log_every = 2
    c.train.checkpoint_every = 2
    c.eval.num_windows = 8
    c.head.num_inference_steps = 4 if a.head == "diffusion" else c.head.num_inference_steps
    c.head.sampler = "ddim"
    c.head.flow_num_steps = 4
    c.optimizer.warmup_steps = 2
  if a.steps:
    c.train.num_steps = a.steps
  if a.batch:
    c.train.batch_size = a.batch
  return c
