r"""LIBERO (docs/libero.md): scripted demos -> LIBERO stage 1 -> normal vs decoupled -> served
evaluation, for libero_spatial and libero_object.

  make libero-env
  python experiments/libero_chain.py --config=configs/libero.py --workdir=workdirs/libero
  python experiments/libero_chain.py --config=configs/libero.py:debug --workdir=/tmp/libero_debug

Default (CPU scale, the table in docs/results/libero.md): DP-MLP narrowed to n_emb 128 x 4
blocks, low-dim privileged observations (8-D state + the two objects of interest's poses +
the instruction one-hot), 20 scripted demos per task (LIBERO ships 50), stage 1 3000 steps
x 128 on (state -> delta action) windows of every suite, stage 2 4000 steps x 128 per suite,
DDIM-10 sampling (the paper's LIBERO setting), 20 episodes per task on LIBERO's first 20
init states (the paper: 50). With `fk` (default on) a third arm, 'decoupled_fk', freezes a
backbone pretrained on our generated Panda FK data instead (4000 steps x 64 with
configs/quickstart.py's CPU recipe, configs/pretrain.py's generator): a stage 1 that needs no demonstrations at all. `paper`: the paper's budgets (full DP-MLP, stage 1 10 epochs
~ as steps, stage 2 25 k steps, 50 demos, 50 episodes) for accelerators.
"""
from ml_collections import ConfigDict

from decoupled_jax import config_lib


def get_config(arg=None):
  a = config_lib.parse_arg(arg, debug=False, paper=False, images=False, fk=True,
                           suites="libero_spatial+libero_object", tasks="all")
  c = ConfigDict()
  c.suites = tuple(s for s in a.suites.split("+") if s)
  c.tasks = a.tasks
  # 'decoupled': stage 1 on LIBERO demos (state -> delta action, the paper's);
  # 'decoupled_fk': stage 1 on our generated Panda FK data (needs no demonstrations at all)
  c.modes = ("normal", "decoupled") + (("decoupled_fk",) if a.fk else ())
  c.progress = True
  c.demos = ConfigDict({"num_demos": 20, "seed": 0, "cameras": (), "dataset_dir": "",
                        "libero_python": ""})
  obs = "image" if a.images else "lowdim"
  s1 = config_lib.libero_pretrain_config("dp_mlp")
  s2 = config_lib.libero_finetune_config("decoupled", "dp_mlp", obs)
  fk = config_lib.pretrain_config("dp_mlp", signal="jp")   # the FK stage 1 (configs/pretrain.py)
  fk.data.horizon = s1.data.horizon
  for s in (s1, s2, fk):
    s.backbone.kwargs.update(n_emb=128, n_layer=4)
    s.head.sampler, s.head.num_inference_steps = "ddim", 10   # the paper's LIBERO sampler
  s1.train.num_steps, s1.train.checkpoint_every = 3000, 1000
  # The FK stage 1 takes configs/quickstart.py's measured CPU recipe (lr 1e-3, 100 warm-up
  # steps, batch 64, 8 via candidates). With pretrain.py's paper optimizer (1e-4, 500 warm-up)
  # 3000 steps left the FK error above the mean-prediction baseline (297 vs 269 mm), i.e. an
  # untrained backbone; the paper preset below restores the paper's 1e-4.
  fk_paper = (fk.train.batch_size, fk.optimizer.learning_rate, fk.optimizer.warmup_steps,
              fk.data.fk.via_candidates)
  fk.train.num_steps, fk.train.checkpoint_every, fk.train.batch_size = 4000, 1000, 64
  fk.optimizer.learning_rate, fk.optimizer.warmup_steps = 1e-3, 100
  fk.data.fk.via_candidates = 8
  s2.train.num_steps, s2.train.checkpoint_every = 4000, 1000
  s2.eval.episodes_per_task = 20
  if a.images:
    c.demos.cameras = ("agentview", "robot0_eye_in_hand")
  if a.paper:
    for s in (s1, s2, fk):
      s.backbone.kwargs.update(n_emb=1024, n_layer=4)   # the paper's DP-MLP (§3.5)
    c.demos.num_demos = 50
    s1.train.num_steps = fk.train.num_steps = 10_000
    (fk.train.batch_size, fk.optimizer.learning_rate, fk.optimizer.warmup_steps,
     fk.data.fk.via_candidates) = fk_paper
    s2.train.num_steps, s2.eval.episodes_per_task = 25_000, 50
  if a.debug:
    # Seconds per stage: tiny backbone, a few steps, 2 demos and 1 short episode per task.
    c.tasks = "0+1" if a.tasks == "all" else a.tasks
    c.demos.num_demos = 2
    for s in (s1, s2, fk):
      s.backbone.kwargs.update(config_lib.debug_backbone_kwargs("dp_mlp"))
      s.train.batch_size, s.train.num_steps, s.train.checkpoint_every = 8, 20, 10
      s.train.log_every = 10
    s1.eval.num_windows = fk.eval.num_windows = 16
    s2.eval.episodes_per_task = 1
  c.stage1, c.stage2, c.stage1_fk = s1, s2, fk
  return c
