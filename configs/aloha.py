r"""Bimanual ALOHA (gym-aloha) end to end: the second robot (docs/aloha.md).

  make aloha-env
  python experiments/paper.py --config=configs/aloha.py --workdir=workdirs/aloha

Chain (the same driver as the quickstart and the tables, resumable): scripted demonstrations of
transfer_cube and insertion (ACT's recipe: mocap waypoints against the object poses, the joint
trajectory replayed in the joint-controlled task, successful episodes kept; in the ALOHA venv)
-> stage 1 on generated FK data of the packaged ALOHA MJCF (both arms; condition = the two
grippers' pose trajectories, target = the 14-D joint_pos trajectory, 50 Hz windows) -> stage 2
normal vs decoupled (frozen stage-1 backbone) per task and seed, same budget -> closed-loop
evaluation by the ALOHA runner against the served policy -> results.md/json, raw records in
docs/results/raw/aloha/.

At CPU scale: DP-MLP n_emb 128 x 4 blocks, stage 1 16000 steps x 64 (lr 1e-3), 50 demos per
task (ACT: 50), 12000 stage-2 steps x 64, DDPM-100, 50 episodes of 400 steps (ACT's episode
length) per run, seeds 0/42; low-dim observations (the 14 joint positions + the objects' poses
from the simulator state, not the paper's / ACT's cameras: `obs=image` uses the `top` camera).

Arguments: `debug` (one task, one seed, 2 demos, 1 episode, the debug presets), `obs=image`,
`tasks=transfer_cube+insertion`, `seeds=0+42`.
"""
import os

from decoupled_jax import config_lib

HERE = os.path.dirname(os.path.abspath(__file__))
RAW = os.path.join(os.path.dirname(HERE), "docs", "results", "raw", "aloha")


def get_config(arg=None):
  a = config_lib.parse_arg(arg, debug=False, obs="lowdim", tasks="transfer_cube+insertion",
                           seeds="0+42", record_dir="")
  c = config_lib.ConfigDict()
  c.seed = 0
  c.progress = not a.debug
  c.table = "aloha"
  c.tasks = tuple(t for t in a.tasks.split("+") if t)
  c.modes = ("normal", "decoupled")
  c.seeds = tuple(int(s) for s in a.seeds.split("+") if s)
  # Raw run records (pipelines/records.py); debug runs write none unless told.
  c.record_dir = a.record_dir or ("" if a.debug else RAW)
  c.stage1_checkpoint = ""      # '' = train the chain's stage 1 below

  c.demos = config_lib.ConfigDict()
  c.demos.dataset_dir = ""      # a folder with <task>.hdf5 to reuse instead of generating
  c.demos.num_demos = 50
  c.demos.seed = 0
  c.demos.images = a.obs == "image"
  c.demos.image_size = (240, 320)   # (H, W) of the `top` camera (gym-aloha: 480 x 640)
  c.demos.aloha_python = ""     # '' = <repo>/.venv-aloha/bin/python
  # Also write each task's demos as LeRobot v3.0 in the schema of LeRobot's aloha_sim_*
  # datasets (<demos>/<task>_lerobot; data/aloha.py): stage 2 reads either (`format=lerobot`).
  c.demos.lerobot = True

  small = {"n_emb": 128, "n_layer": 4}
  c.stage1 = config_lib.from_file(os.path.join(HERE, "pretrain.py"), "robot=aloha,signal=eepose")
  c.stage1.backbone.kwargs.update(small)
  c.stage1.data.fk.fps = 50.0   # gym-aloha's control rate: windows move as the task's do
  c.stage1.train.batch_size = 64
  c.stage1.train.num_steps = 16000
  c.stage1.train.checkpoint_every = 2000
  c.stage1.optimizer.learning_rate = 1e-3
  c.stage1.optimizer.warmup_steps = 100
  c.stage1.eval.num_windows = 128

  c.stage2 = config_lib.aloha_config("decoupled", "dp_mlp", a.obs)
  c.stage2.backbone.kwargs.update(small)
  c.stage2.train.batch_size = 64
  # 12 000 steps (3000 left the normal policy at loss 0.026 and 0/20 closed loop; 12 000:
  # 0.006, docs/results/aloha.md "How the first runs failed")
  c.stage2.train.num_steps = 12000
  c.stage2.train.checkpoint_every = 2000
  c.stage2.optimizer.learning_rate = 1e-3
  c.stage2.optimizer.warmup_steps = 100
  # DDPM-100, the paper's sampler: joint targets in the joint-limit scale need its precision
  # (teacher-forced error on the demos 0.029 rad vs DDIM-10's 0.053); ~40 ms per chunk
  c.stage2.head.diffusion.sampler = "ddpm"
  c.stage2.head.diffusion.num_inference_steps = 100
  if a.obs == "image":
    c.stage2.train.batch_size = 32
    # a square random crop of 90 % of the frame's height (the encoders' crop is square)
    c.stage2.encoder.crop_size = int(0.9 * c.demos.image_size[0])

  if a.debug:
    c.tasks, c.seeds = c.tasks[:1], c.seeds[:1]
    c.demos.num_demos = 2
    c.demos.image_size = (48, 64)
    c.stage1 = config_lib.from_file(os.path.join(HERE, "pretrain.py"),
                                    "robot=aloha,signal=eepose,debug")
    c.stage1.data.fk.fps = 50.0
    d = config_lib.from_file(os.path.join(HERE, "train.py"), "debug")
    c.stage2.backbone = d.backbone
    c.stage2.data.horizon = d.data.horizon
    c.stage2.train.update(d.train.to_dict())
    c.stage2.optimizer.warmup_steps = d.optimizer.warmup_steps
    c.stage2.head = d.head
    c.stage2.eval.num_episodes, c.stage2.eval.num_videos, c.stage2.eval.max_steps = 1, 1, 100
    if a.obs == "image":
      c.stage2.encoder.crop_size = int(0.9 * c.demos.image_size[0])
      c.stage2.encoder.stage_widths = (8, 8, 8, 8)
  return c
