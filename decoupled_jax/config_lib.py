"""Building blocks for the ml_collections configs in `configs/` (one get_config per
experiment, big_vision style). Values follow spec §5 per architecture and stage.
"""
from __future__ import annotations

import ml_collections

ConfigDict = ml_collections.ConfigDict

TRANSFORMER_ARCHS = ("dp_t", "dp_t_film", "unified")
ARCHS = ("dp_c", "dp_mlp") + TRANSFORMER_ARCHS
CONDITIONINGS = ("adaln_zero", "adaln", "ada_rms_norm", "film", "additive", "cross_attn",
                 "prefix", "lora_cond")


def parse_arg(arg: str | None, **defaults) -> ConfigDict:
  """'arch=dp_mlp,head=flow,debug' -> ConfigDict; bare words are booleans; types follow defaults."""
  out = ConfigDict(dict(defaults))
  if not arg:
    return out
  for item in arg.split(","):
    item = item.strip()
    if not item:
      continue
    key, eq, value = item.partition("=")
    if key not in defaults:
      raise ValueError(f"unknown config argument {key!r}; known: {sorted(defaults)}")
    if not eq:
      out[key] = True
      continue
    default = defaults[key]
    if isinstance(default, bool):
      out[key] = value.lower() in ("1", "true", "yes", "y")
    elif isinstance(default, int):
      out[key] = int(value)
    elif isinstance(default, float):
      out[key] = float(value)
    else:
      out[key] = value
  return out


def default_horizon(arch: str) -> int:
  return 10 if arch in TRANSFORMER_ARCHS else 16


def backbone_config(arch: str, conditioning: str = "adaln_zero", **overrides) -> ConfigDict:
  """name + every constructor argument (the registry's paper defaults), so that any size can
  be overridden from the command line, e.g. --config.backbone.kwargs.n_emb=128."""
  if arch not in ARCHS:
    raise ValueError(f"unknown backbone {arch!r}; choose one of {ARCHS}")
  from decoupled_jax.backbones import BACKBONES
  kwargs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in BACKBONES[arch][1].items()}
  kwargs.update(overrides)
  if arch == "unified":
    if conditioning not in CONDITIONINGS:
      raise ValueError(f"unknown conditioning {conditioning!r}; choose one of {CONDITIONINGS}")
    kwargs["conditioning"] = conditioning
  return ConfigDict({"name": arch, "kwargs": kwargs})


def head_config(head: str = "diffusion", sampler: str = "ddpm") -> ConfigDict:
  if head not in ("diffusion", "flow"):
    raise ValueError(f"head must be 'diffusion' or 'flow', got {head!r}")
  return ConfigDict({
      "type": head,
      "num_train_steps": 100,
      "beta_schedule": "squaredcos_cap_v2",
      "prediction_type": "epsilon",
      "sampler": sampler,               # 'ddpm' (100 steps, the MimicGen setting) or 'ddim'
      "num_inference_steps": 100 if sampler == "ddpm" else 10,
      "clip_sample": True,
      "num_noise_samples": 1,
      "flow_num_steps": 10,
      "time_scale": 100.0,
  })


def optimizer_config(arch: str, stage: str) -> ConfigDict:
  """AdamW groups, betas and decay per spec §5 (stage: 'pretrain' | 'finetune')."""
  c = ConfigDict({"learning_rate": 1e-4, "eps": 1e-8, "warmup_steps": 500, "schedule": "cosine",
                  "encoder_weight_decay": 1e-6})
  # Which backbone leaves escape decay is the backbone's own NO_WEIGHT_DECAY_PATTERNS;
  # `no_decay_patterns` adds regexes over full paths.
  c.no_decay_patterns = ()
  if arch == "dp_c":
    c.update(b1=0.95, b2=0.999, weight_decay=1e-6)
  elif arch == "dp_mlp":
    betas = (0.9, 0.95) if stage == "pretrain" else (0.95, 0.999)
    c.update(b1=betas[0], b2=betas[1], weight_decay=1e-3)
  else:
    c.update(b1=0.9, b2=0.95, weight_decay=1e-3)
  return c


def ema_config() -> ConfigDict:
  return ConfigDict({"enabled": True, "power": 0.75, "max_decay": 0.9999})


def freeze_config(mode: str = "none", init_from: str = "") -> ConfigDict:
  """mode 'none' = normal training; 'backbone' = stage 2 (decoupled) or, with no
  init_from, the random_frozen control."""
  return ConfigDict({"mode": mode, "init_from": init_from, "copy_conditioning_biases": True,
                     "extra_trainable": (), "extra_frozen": ()})


def debug_backbone_kwargs(arch: str) -> dict:
  """Tiny sizes of each backbone for smoke tests (same code paths, seconds to compile)."""
  if arch == "dp_c":
    return {"down_dims": (16, 32, 64), "diffusion_step_embed_dim": 16}
  if arch == "dp_mlp":
    return {"n_layer": 2, "n_emb": 32}
  return {"n_layer": 2, "n_head": 2, "n_emb": 32}


def _train_config(batch_size: int, num_steps: int, checkpoint_every: int) -> ConfigDict:
  return ConfigDict({"batch_size": batch_size, "num_steps": num_steps, "log_every": 50,
                     "checkpoint_every": checkpoint_every, "eval_every": 0,
                     "max_checkpoints": 2})


PRETRAIN_ARGS = dict(arch="dp_mlp", cond="adaln_zero", head="diffusion", signal="jp",
                     source="generated", hdf5="", steps=0, batch=0, debug=False, paper=False)


def pretrain_config(**kwargs) -> ConfigDict:
  """Stage-1 config; keyword arguments as documented in configs/pretrain.py."""
  a = ConfigDict(dict(PRETRAIN_ARGS, **kwargs))
  c = ConfigDict()
  c.seed = 42
  c.progress = True
  c.backbone = backbone_config(a.arch, a.cond)
  c.head = head_config(a.head)
  c.optimizer = optimizer_config(a.arch, "pretrain")
  c.ema = ema_config()
  c.freeze = freeze_config("none")

  c.data = ConfigDict()
  c.data.source = a.source
  c.data.hdf5_path = a.hdf5
  c.data.signal = a.signal
  c.data.horizon = default_horizon(a.arch)
  c.data.fk = ConfigDict()          # trajectories.FKWindowConfig overrides
  c.data.position_box = ()          # ((min xyz), (max xyz)); () = the MimicGen stats (spec §6)

  # Default: sized for a 2-core CPU (~10 minutes for the full DP-MLP): batch 64, 1500 steps
  # with learning rate 1e-3. `paper`: batch 256, 45 k steps (6 epochs of 1.93 M frames), 1e-4.
  c.train = _train_config(batch_size=64, num_steps=1500, checkpoint_every=500)
  c.optimizer.learning_rate = 1e-3
  c.optimizer.warmup_steps = 100

  c.eval = ConfigDict()
  c.eval.num_windows = 256

  if a.paper:
    c.train.batch_size = 256
    c.train.num_steps = 45_000
    c.train.checkpoint_every = 7_500
    c.optimizer.learning_rate = 1e-4
    c.optimizer.warmup_steps = 500
  if a.debug:
    c.backbone.kwargs.update(debug_backbone_kwargs(a.arch))
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


FINETUNE_ARGS = dict(mode="decoupled", arch="dp_mlp", cond="adaln_zero", head="diffusion",
                     obs="lowdim", task="", steps=0, batch=0, episodes=-1, paper=False,
                     debug=False)
LOWDIM_KEYS = ("robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos", "object")
IMAGE_LOWDIM_KEYS = ("robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos")
IMAGE_KEYS = ("agentview_image", "robot0_eye_in_hand_image")


def finetune_config(**kwargs) -> ConfigDict:
  """Stage-2/normal config; keyword arguments as documented in configs/train.py."""
  a = ConfigDict(dict(FINETUNE_ARGS, **kwargs))
  c = ConfigDict()
  c.seed = 0
  c.progress = True
  c.mode = a.mode
  c.stage1_checkpoint = ""
  c.backbone = backbone_config(a.arch, a.cond)
  c.head = head_config(a.head)
  c.optimizer = optimizer_config(a.arch, "finetune")
  c.ema = ema_config()
  c.freeze = freeze_config()      # set from `mode` by the pipeline

  c.data = ConfigDict()
  c.data.dataset = ""
  c.data.filter_key = ""
  c.data.task = a.task
  if a.obs == "image":
    c.data.image_keys, c.data.lowdim_keys = IMAGE_KEYS, IMAGE_LOWDIM_KEYS
  elif a.obs == "lowdim":
    c.data.image_keys, c.data.lowdim_keys = (), LOWDIM_KEYS
  else:
    raise ValueError(f"obs must be 'lowdim' or 'image', got {a.obs!r}")
  c.data.position_box = ()          # must equal the stage-1 run's box for decoupled training
  c.data.n_obs_steps = 2
  c.data.horizon = default_horizon(a.arch)
  c.data.n_action_steps = 8

  c.train = _train_config(batch_size=64, num_steps=5000, checkpoint_every=1000)

  c.eval = ConfigDict()
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
    c.backbone.kwargs.update(debug_backbone_kwargs(a.arch))
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
