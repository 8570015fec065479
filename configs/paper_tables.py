r"""The paper's tables as resumable experiments (docs/results/), sized for a 2-core CPU.

  python experiments/paper.py --config=configs/paper_tables.py:table=main --workdir=workdirs/tables/main

Every table runs the chain of configs/quickstart.py (stage 1 on generated FK data -> scripted
demos -> stage 2 -> 50 test episodes per run) at CPU scale: DP-MLP narrowed to n_emb 128 x 4
blocks (~0.5 M backbone params; the paper: 4.8 M), stage 1 16000 steps x 64 (the paper: 45 k x
256 on demo pairs; 4000 until the gap study showed the expert too weak: docs/results/decoupled_gap.md), 100 scripted demos per task (the paper: 1000 MimicGen demos), 3000 stage-2
steps x 64 with windows drawn with replacement (the paper: 50 shuffled epochs), lr 1e-3,
DDIM-10 sampling at evaluation (the paper: DDPM-100). For accelerators: `paper_budget`
selects the paper's budgets (docs/method.md §1.1, §2.3, §5, §10: stage 1 45 k steps x 256,
stage 2 50 shuffled epochs x 64, lr 1e-4 with a cosine decay after 500 linear warm-up steps in
both stages, DDPM-100, 1000 demos per task) and `full_size` gives every backbone its paper size
(§3): DP-MLP n_emb 256 x 8 blocks (4,782,346 backbone params), DP-C the MimicGen U-Net (dims
512/1024/2048, step embedding 128; 244,057,226), the unified transformer n_emb 256 x 8 layers
(~6.8 M); `full_mlp` (kept as an alias for DP-MLP alone) widens only DP-MLP.

Tables (`table=`):
  main           Table I: normal vs decoupled, DP-MLP, Lift/Stack/NutAssemblySquare/PickPlaceCan,
                 seeds 0/42/420.
  backbones      DP-MLP vs DP-C (U-Net narrowed to down_dims 64/128/256 on CPU), normal and
                 decoupled, Lift and Stack, seeds 0/42.
  signal         stage-1 signal jp / eepose / none, stage 1 on demonstration pairs (the paper's
                 source: the first task's demos), and the random-frozen backbone; decoupled
                 (normal as the reference), Lift and PickPlaceCan, seeds 0/42. The jp chain's
                 stage 1 is the shipped 16k expert (the same generated-FK jp stage 1 the other
                 signals are trained like).
  conditioning   the unified transformer's 8 conditioning mechanisms (narrowed: n_emb 128,
                 4 layers), normal vs decoupled, Lift, seeds 0/42.
  normalization  stage-1 condition/target normalisation: ours (joint limits, fixed position box,
                 rot6d raw) vs the paper's (data min/max on every dim); decoupled, Lift and
                 Stack, seeds 0/42.
  gap            why decoupled trails normal (docs/results/decoupled_gap.md), PickPlaceCan:
                 part=oracle     normal, decoupled and the oracle (the normal run's backbone
                                 frozen under a fresh conditioning pathway);
                 part=scaling    decoupled on stage 1 of 8k / 16k / 32k / 64k steps (4k:
                                 part=oracle's decoupled arm; `stage1_steps=16000+32000`
                                 selects lengths);
                 part=data       decoupled on stage 1 from the task's demonstration pairs;
                 part=width      normal and decoupled at the paper's DP-MLP size (256 x 8);
                 part=final      normal vs decoupled on the closed gap: the shipped 16k expert
                                 (configs/quickstart.py EXPERT), seeds 0/42/420, 150 episodes
                                 per run (`tasks=Lift` for Lift).
                 part=libero     libero_spatial low-dim (configs/libero.py's CPU preset, narrowed
                                 DP-C): normal, decoupled on a 16k-step stage 1 (LIBERO's, on
                                 the demos), and the oracle; needs `make libero-env`; and
                                 (chain libero_spatial_s1_both) decoupled on a 16k stage 1
                                 over libero_spatial's and libero_object's demos; (chain
                                 libero_spatial_s1_32k) decoupled on a 32k stage 1 on the
                                 demos (held-out error every 4k); (chain
                                 libero_spatial_50demos) normal and decoupled on 50 demos
                                 per task instead of 20; (chain
                                 libero_spatial_fk_delta) decoupled on a 16k stage 1 on
                                 generated Panda FK as delta actions (no demonstrations),
                                 conditioned on joints (..._fk_delta) or on joints and joint
                                 steps (..._fk_delta_jv).
                 (part=oracle and part=data keep the 4k stage 1 they were measured with.)
  debug          (with any table) one task, one seed, the debug presets: a smoke test.
  observations   two 84x84 cameras through the ResNet-18 encoders + proprioception, normal vs
                 decoupled, Lift, seeds 0/42 (1500 stage-2 steps, batch 32).
"""
import os

from decoupled_jax import config_lib

HERE = os.path.dirname(os.path.abspath(__file__))
TABLES = ("main", "backbones", "signal", "conditioning", "observations", "normalization", "gap")
GAP_PARTS = ("oracle", "scaling", "data", "width", "final", "libero")
# Every table's stage-1 length (the gap study's oracle and data parts keep the 4k they measured).
STAGE1_STEPS = 16_000
# Raw records (runs.jsonl + per-episode outcomes) live in the repository, so a table resumes on
# a fresh clone from what earlier machines measured (decoupled_jax/pipelines/records.py).
RAW = os.path.join(os.path.dirname(HERE), "docs", "results", "raw")


def _chain(a, tasks, seeds, modes=("normal", "decoupled")):
  arg = "debug" if a.debug else ("full_mlp" if a.full_mlp or a.full_size else None)
  c = config_lib.from_file(os.path.join(HERE, "quickstart.py"), arg)
  c.stage1_checkpoint = ""   # the tables train their stage 1 (the quickstart loads a shipped one)
  if not a.debug:
    c.stage1.train.num_steps, c.stage1.train.checkpoint_every = STAGE1_STEPS, 2000
  c.tasks, c.seeds, c.modes = tuple(tasks), tuple(seeds), tuple(modes)
  if a.debug:     # smoke-test size: one task, one seed, the debug presets
    c.tasks, c.seeds = c.tasks[:1], c.seeds[:1]
  if a.paper_budget:
    c.stage1.train.batch_size, c.stage1.train.num_steps = 256, 45_000
    c.stage1.optimizer.learning_rate = 1e-4
    c.stage2.train.epochs = 50
    c.stage2.optimizer.learning_rate = 1e-4
    for stage in (c.stage1, c.stage2):   # §5: the reference hard-codes 500 warm-up steps
      stage.optimizer.schedule, stage.optimizer.warmup_steps = "cosine", 500
    c.stage2.head.diffusion.sampler, c.stage2.head.diffusion.num_inference_steps = "ddpm", 100
    c.demos.num_demos = 1000
  return c


def _shipped_expert() -> str:
  """The quickstart's shipped 16k expert (`pretrained:<name>`, configs/quickstart.py EXPERT)."""
  return config_lib.from_file(os.path.join(HERE, "quickstart.py")).stage1_checkpoint


def _stage1_4k(a, c):
  """The stage-1 length the gap study's oracle and data parts were measured with."""
  if not a.debug:
    c.stage1.train.num_steps, c.stage1.train.checkpoint_every = 4000, 1000


def _arch(c, arch, kwargs, cond="adaln_zero"):
  for stage in (c.stage1, c.stage2):
    stage.backbone = config_lib.backbone_config(arch, cond)
    stage.backbone.kwargs.update(kwargs)
    stage.data.horizon = config_lib.default_horizon(arch)
    stage.optimizer.update({k: v for k, v in config_lib.optimizer_config(
        arch, stage.stage).items() if k in ("b1", "b2", "weight_decay")})


def _record_dir(a):
  """'' for debug runs (smoke tests must not write into the repository)."""
  if a.debug:
    return a.record_dir
  return a.record_dir or os.path.join(RAW, a.table if a.table != "gap" else "decoupled_gap")


def get_config(arg=None):
  a = config_lib.parse_arg(arg, table="main", full_mlp=False, full_size=False, paper_budget=False,
                           seeds="", tasks="", debug=False, part="oracle", record_dir="",
                           stage1_steps="8000+16000+32000+64000")
  if a.table not in TABLES:
    raise config_lib.ConfigError(f"table={a.table!r}: one of {TABLES}")
  seeds = tuple(int(s) for s in a.seeds.split("+") if s)
  tasks = tuple(t for t in a.tasks.split("+") if t)

  if a.table == "main":   # a single chain, run directly in the workdir
    c = _chain(a, tasks or ("Lift", "Stack", "NutAssemblySquare", "PickPlaceCan"),
               seeds or (0, 42, 420))
    c.table = a.table
    c.record_dir = _record_dir(a)
    return c

  t = config_lib.ConfigDict()
  t.table = a.table
  t.record_dir = _record_dir(a)
  t.chains = config_lib.ConfigDict()
  two_tasks, two_seeds = tasks or ("Lift", "Stack"), seeds or (0, 42)
  if a.table == "backbones":
    t.description = "DP-MLP vs DP-C (narrowed U-Net), normal and decoupled"
    t.chains.dp_mlp = _chain(a, two_tasks, two_seeds)
    t.chains.dp_c = _chain(a, two_tasks, two_seeds)
    _arch(t.chains.dp_c, "dp_c", config_lib.debug_backbone_kwargs("dp_c") if a.debug else
          {} if a.full_size else {"down_dims": (64, 128, 256), "diffusion_step_embed_dim": 64})
  elif a.table == "signal":
    t.description = "what stage 1 is trained on: jp / eepose / none, demo pairs, random frozen"
    sig_tasks = tasks or ("Lift", "PickPlaceCan")
    t.chains.jp = _chain(a, sig_tasks, two_seeds)
    if not a.debug:   # the generated-FK jp stage 1 of STAGE1_STEPS, exported (quickstart EXPERT)
      t.chains.jp.stage1_checkpoint = _shipped_expert()
    for signal in ("eepose", "none"):
      t.chains[signal] = _chain(a, sig_tasks, two_seeds, modes=("decoupled",))
      t.chains[signal].stage1.data.signal = signal
    t.chains.demo_pairs = _chain(a, sig_tasks, two_seeds, modes=("decoupled",))
    t.chains.demo_pairs.stage1.data.source = "demos"   # the first task's demonstrations
    t.chains.random_frozen = _chain(a, sig_tasks, two_seeds, modes=("random_frozen",))
  elif a.table == "gap":
    if a.part not in GAP_PARTS:
      raise config_lib.ConfigError(f"part={a.part!r}: one of {GAP_PARTS}")
    can, gap_seeds = tasks or ("PickPlaceCan",), seeds or (0, 42)
    t.description = f"decoupled vs normal on {'+'.join(can)}: {a.part}"
    if a.part == "oracle":
      t.chains.oracle = _chain(a, can, gap_seeds, modes=("normal", "decoupled", "oracle"))
      _stage1_4k(a, t.chains.oracle)
    elif a.part == "final":
      c = t.chains.final = _chain(a, can, seeds or (0, 42, 420))
      c.stage1_checkpoint = _shipped_expert()
      if not a.debug:
        c.stage2.eval.num_episodes = 150
    elif a.part == "scaling":
      # The 4k point is part=oracle's decoupled arm.
      for steps in (int(n) for n in a.stage1_steps.split("+")):
        c = t.chains[f"stage1_{steps // 1000:02d}k"] = _chain(a, can, gap_seeds, modes=("decoupled",))
        if not a.debug:
          c.stage1.train.num_steps = steps
          c.stage1.train.checkpoint_every = max(1000, steps // 8)
    elif a.part == "data":
      t.chains.demo_pairs = _chain(a, can, gap_seeds, modes=("decoupled",))
      t.chains.demo_pairs.stage1.data.source = "demos"   # the task's own demonstrations
      _stage1_4k(a, t.chains.demo_pairs)   # the same length as part=oracle's FK stage 1
    elif a.part == "libero":
      c = t.chains.libero_spatial = config_lib.from_file(
          os.path.join(HERE, "libero.py"), "suites=libero_spatial,fk=False"
          + (",debug" if a.debug else ""))
      c.modes = ("normal", "decoupled", "oracle")
      if seeds:
        c.seeds = seeds
      if not a.debug:   # the table's stage-1 length (configs/libero.py: 4000)
        c.stage1.train.num_steps, c.stage1.train.checkpoint_every = STAGE1_STEPS, 2000
      # The same decoupled arm on a stage 1 that also reads libero_object's demos (the paper's
      # LIBERO stage 1 reads every suite's): more diverse motion, no more libero_spatial data.
      both = t.chains.libero_spatial_s1_both = config_lib.ConfigDict(c.to_dict())
      both.modes, both.stage1_suites = ("decoupled",), ("libero_spatial", "libero_object")
      # The same decoupled arm on a twice as long stage 1 (4k -> 16k closed 8 of 22 points),
      # its held-out error every 4000 steps (the stage-1 curve on the page).
      long = t.chains.libero_spatial_s1_32k = config_lib.ConfigDict(c.to_dict())
      long.modes = ("decoupled",)
      if not a.debug:
        long.stage1.train.update(num_steps=2 * STAGE1_STEPS, checkpoint_every=4000,
                                 eval_every=4000)
      # LIBERO's own demonstration count (it ships 50 per task) in both stages and both arms:
      # is the gap the 20-demo stage 1's narrowness? (Stage 2 keeps its 6000 steps.)
      d50 = t.chains.libero_spatial_50demos = config_lib.ConfigDict(c.to_dict())
      d50.modes = ("normal", "decoupled")
      if not a.debug:
        d50.demos.num_demos = 50
      # No demonstrations in stage 1: generated Panda FK in LIBERO's action form (per-step
      # motion as delta actions at the scale measured on the demos; slower segments, so the
      # per-step motion matches the demos' actions), the same length as the decoupled arm's.
      fkd = t.chains.libero_spatial_fk_delta = config_lib.ConfigDict(c.to_dict())
      fkd.modes = ("decoupled_fk",)
      fkd.stage1_fk.data.fk.update(target="delta", speed_range=(0.1, 0.5))
      if not a.debug:
        fkd.stage1_fk.train.num_steps, fkd.stage1_fk.train.checkpoint_every = STAGE1_STEPS, 2000
      # The same with each frame's joint step beside the joints (signal 'jv'), so the delta
      # target is a function of the condition, not a difference of two near-equal inputs.
      jv = t.chains.libero_spatial_fk_delta_jv = config_lib.ConfigDict(fkd.to_dict())
      jv.stage1_fk.data.signal = "jv"
    else:
      a.full_mlp = not a.debug
      t.chains.paper_width = _chain(a, can, seeds or (0,))
  elif a.table == "normalization":
    t.description = "stage-1 normalisation: ours vs the paper's data limits (decoupled)"
    for scheme in ("ours", "paper"):
      t.chains[scheme] = _chain(a, two_tasks, two_seeds, modes=("decoupled",))
      t.chains[scheme].stage1.data.normalization = scheme
  elif a.table == "conditioning":
    t.description = "unified transformer, 8 conditioning mechanisms, normal vs decoupled"
    for cond in config_lib.CONDITIONINGS:
      t.chains[cond] = _chain(a, tasks or ("Lift",), two_seeds)
      _arch(t.chains[cond], "unified", config_lib.debug_backbone_kwargs("unified") if a.debug
            else {} if a.full_size else {"n_emb": 128, "n_layer": 4}, cond)
  else:
    t.description = "image observations (two 84x84 cameras, ResNet-18/GN), normal vs decoupled"
    c = _chain(a, tasks or ("Lift",), two_seeds)
    c.demos.images = True
    c.stage2.data.image_keys = config_lib.IMAGE_KEYS
    c.stage2.data.lowdim_keys = config_lib.IMAGE_LOWDIM_KEYS
    if not a.debug:
      c.stage2.train.num_steps, c.stage2.train.batch_size = 1500, 32
      c.stage2.eval.num_workers = 1
    t.chains.images = c
  return t
