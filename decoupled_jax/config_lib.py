"""The config schema: every key the library reads, declared once with its default.

`pretrain_config(...)` (stage 1) and `finetune_config(...)` (stage 2 / normal / random-frozen)
return complete ConfigDicts; the files in `configs/` start from them and write out the values
an experiment sets (big_vision style), so a reader sees every value in one file. The library
reads keys as attributes, never with a fallback default. `validate(config)` checks every
value before any work starts and raises `ConfigError` naming the field. Values follow
docs/method.md §5 and §10 per architecture and stage.
"""
from __future__ import annotations

import os

import ml_collections
import numpy as np
from absl import flags

# Domain constants live in their packages (docs/architecture.md); re-exported here.
from decoupled_jax.data.libero import LOWDIM_KEYS as LIBERO_LOWDIM_KEYS
from decoupled_jax.data import aloha as aloha_data
from decoupled_jax.errors import ConfigError
from decoupled_jax.kinematics import SIGNALS  # noqa: F401  (the stage-1 condition)

ConfigDict = ml_collections.ConfigDict

TRANSFORMER_ARCHS = ("dp_t", "dp_t_film", "unified")
ARCHS = ("dp_c", "dp_mlp") + TRANSFORMER_ARCHS
CONDITIONINGS = ("adaln_zero", "adaln", "ada_rms_norm", "film", "additive", "cross_attn",
                 "prefix", "lora_cond")
STAGES = ("pretrain", "finetune")
# config.benchmark per stage: the benchmark objects of decoupled_jax/benchmarks/ (a test keeps
# the two in step).
BENCHMARKS = {"pretrain": ("fk", "libero"),
              "finetune": ("robosuite", "libero", "dataset", "aloha")}
# Stage names of configs and checkpoints written before the benchmark objects.
LEGACY_STAGES = {"libero_pretrain": ("pretrain", "libero"), "libero_finetune": ("finetune", "libero")}
STAGE1_NORMALIZATIONS = ("ours", "paper")   # pretrain_config's data.normalization
MODES = ("normal", "decoupled", "random_frozen", "oracle")   # stage 2's freeze knob
SOURCES = ("generated", "demos")                    # stage-1 data
FORMATS = ("robomimic", "rlds", "lerobot")          # stage-2 dataset formats
RNG_IMPLS = ("unsafe_rbg", "threefry2x32", "rbg")
LOWDIM_KEYS = ("robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos", "object")
IMAGE_LOWDIM_KEYS = ("robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos")
IMAGE_KEYS = ("agentview_image", "robot0_eye_in_hand_image")
KNOWN_LOWDIM_KEYS = LOWDIM_KEYS + ("robot0_joint_pos",)
# LIBERO (docs/libero.md): the 8-D state, privileged object poses, the instruction one-hot
LIBERO_IMAGE_LOWDIM_KEYS = ("robot0_eef_pos", "robot0_eef_axis_angle", "robot0_gripper_qpos",
                            "task_onehot")
LIBERO_KNOWN_LOWDIM_KEYS = LIBERO_LOWDIM_KEYS + ("robot0_joint_pos",)
LIBERO_SIGNALS = ("eepose", "none")
LIBERO_ACTION_BOX = ((-1.0, -1.0, -1.0), (1.0, 1.0, 1.0))   # delta-action position range
# The policy keys `config.data.key_map` can map (data/sources.py): every observation key a
# policy takes, and 'actions'.
KEY_MAP_KEYS = IMAGE_KEYS + KNOWN_LOWDIM_KEYS + ("actions",)
# ALOHA (gym-aloha, docs/aloha.md; the dataset facts: data/aloha.py): the 14 joint positions
# [left 6, left gripper, right 6, right gripper] (grippers normalised, 1 = open), their
# velocities, the objects' poses from the simulator state (transfer_cube: the box 7; insertion:
# peg + socket 14), the `top` camera.
ALOHA_TASKS = aloha_data.TASKS
ALOHA_LOWDIM_KEYS = ("qpos", "env_state")
ALOHA_KNOWN_LOWDIM_KEYS = ("qpos", "qvel", "env_state")
ALOHA_IMAGE_KEYS = ("top_image",)
ALOHA_KEY_MAP_KEYS = ALOHA_IMAGE_KEYS + ALOHA_KNOWN_LOWDIM_KEYS + ("actions",)


class KeyMapKeyError(ConfigError, flags.Error):
  """An unknown key in `--config.data.key_map.<key>=...`: absl prints it as one line."""


class _KeyMapType(type(ConfigDict)):
  def __instancecheck__(cls, obj):   # a config file may still assign a plain dict
    return isinstance(obj, ConfigDict)


class KeyMap(ConfigDict, metaclass=_KeyMapType):
  """`config.data.key_map`: policy key -> dataset key, every key of KEY_MAP_KEYS present with
  '' = the format's default (robomimic: the same name), so that
  `--config.data.key_map.agentview_image=agentview_rgb` works from the command line and an
  unknown key is a one-line error. `to_dict()` leaves out the '' entries, so configs, records'
  fingerprints and checkpoints' meta read as before for a map that is not set."""

  def get_type(self, key):
    if key not in self:
      raise KeyMapKeyError(f"config.data.key_map: {key!r} is not a policy key; known: "
                           f"{sorted(self.keys())}")
    return super().get_type(key)

  def to_dict(self, visit_map=None, preserve_field_references=False):
    d = super().to_dict(visit_map, preserve_field_references)
    return {k: v for k, v in d.items() if v != ""}


def key_map_config(keys=KEY_MAP_KEYS) -> ConfigDict:
  return KeyMap({k: "" for k in keys})


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
      raise ConfigError(f"unknown config argument {key!r}; known: {sorted(defaults)}")
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


def from_file(path: str, arg: str | None = None) -> ConfigDict:
  """`get_config(arg)` of a config file, e.g. a chain config reusing configs/pretrain.py's
  presets (`from_file(os.path.join(os.path.dirname(__file__), "pretrain.py"), "debug")`)."""
  import importlib.util
  spec = importlib.util.spec_from_file_location(
      "config_" + os.path.splitext(os.path.basename(path))[0], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def default_horizon(arch: str) -> int:
  return 10 if arch in TRANSFORMER_ARCHS else 16


def default_position_box() -> tuple:
  """The shared position-normalisation box (docs/method.md §6): the reference's MimicGen
  end-effector stats, in robosuite's world frame."""
  from decoupled_jax.data.normalizer import ABCDEFGH_POS_MAX, ABCDEFGH_POS_MIN
  return (tuple(float(v) for v in ABCDEFGH_POS_MIN), tuple(float(v) for v in ABCDEFGH_POS_MAX))


def backbone_config(arch: str, conditioning: str = "adaln_zero") -> ConfigDict:
  """name + every constructor argument with the registry's paper defaults, so any size can
  be overridden from the command line, e.g. --config.backbone.kwargs.n_emb=128."""
  if arch not in ARCHS:
    raise ConfigError(f"config.backbone.name: unknown backbone {arch!r}; choose one of {ARCHS}")
  from decoupled_jax.backbones import BACKBONES
  kwargs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in BACKBONES[arch][1].items()}
  if arch == "unified":
    if conditioning not in CONDITIONINGS:
      raise ConfigError(f"config.backbone.kwargs.conditioning: unknown conditioning "
                        f"{conditioning!r}; choose one of {CONDITIONINGS}")
    kwargs["conditioning"] = conditioning
  return ConfigDict({"name": arch, "kwargs": kwargs})


def head_config(head: str = "diffusion") -> ConfigDict:
  """The typed head section: `type` ('diffusion' | 'flow') and one section per head,
  `diffusion` (DiffusionHead's fields) and `flow` (FlowHead's), every key with its default
  from the head dataclasses (`heads.head_defaults`); e.g. `--config.head.diffusion.sampler=ddim
  --config.head.diffusion.num_inference_steps=10`, `--config.head.flow.num_steps=10`."""
  from decoupled_jax.heads import HEAD_TYPES, head_defaults
  if head not in HEAD_TYPES:
    raise ConfigError(f"config.head.type must be one of {HEAD_TYPES}, got {head!r}")
  c = ConfigDict(dict(head_defaults(), type=head))
  # None defaults (diffusion.num_inference_steps, an Optional[int]: the sampler's own count)
  # as int placeholders, so the command line can set them; they still read (and hash) as None.
  for section in HEAD_TYPES:
    for k, v in c[section].items():
      if v is None:
        c[section][k] = ml_collections.config_dict.placeholder(int)
  return c


def optimizer_config(arch: str, stage: str) -> ConfigDict:
  """AdamW groups, betas and decay per docs/method.md §5 (stage: 'pretrain' | 'finetune')."""
  c = ConfigDict({"learning_rate": 1e-4, "eps": 1e-8, "warmup_steps": 500, "schedule": "cosine",
                  "encoder_weight_decay": 1e-6,
                  # Regexes over full paths escaping decay, besides the backbone's own
                  # NO_WEIGHT_DECAY_PATTERNS.
                  "no_decay_patterns": ()})
  if arch == "dp_c":
    c.update(b1=0.95, b2=0.999, weight_decay=1e-6)
  elif arch == "dp_mlp":
    betas = (0.9, 0.95) if stage == "pretrain" else (0.95, 0.999)
    c.update(b1=betas[0], b2=betas[1], weight_decay=1e-3)
  else:
    c.update(b1=0.9, b2=0.95, weight_decay=1e-3)
  return c


def _common(stage: str, arch: str, cond: str, head: str, benchmark: str) -> ConfigDict:
  c = ConfigDict()
  c.stage = stage
  c.benchmark = benchmark           # the data and its evaluation (decoupled_jax/benchmarks/)
  c.seed = 42 if stage == "pretrain" else 0
  # 'unsafe_rbg': 8x faster dropout masks on XLA:CPU than threefry; 'threefry2x32' gives
  # bits independent of the device partitioning.
  c.rng_impl = "unsafe_rbg"
  # Forward-pass dtype: 'bfloat16' on accelerators (parameters, optimizer state and the loss
  # stay float32); 'float32' matches the reference bit for bit.
  c.compute_dtype = "float32"
  c.progress = True
  c.backbone = backbone_config(arch, cond)
  c.head = head_config(head)
  c.optimizer = optimizer_config(arch, stage)
  c.ema = ConfigDict({"enabled": True, "power": 0.75, "max_decay": 0.9999})
  c.train = ConfigDict({"batch_size": 64, "num_steps": 5000, "log_every": 50,
                        "checkpoint_every": 1000, "eval_every": 0, "max_checkpoints": 2,
                        # Write checkpoints in the background (orbax async): a save only
                        # stalls training for the copy of the state to host memory.
                        "async_checkpoints": True,
                        # Host batches prepared ahead by a background thread, already on
                        # the devices with the batch sharding (0: none).
                        "prefetch": 2})
  # Regexes over full param paths frozen / kept trainable in addition to what the stage
  # freezes (trainable wins), e.g. DP-T on LIBERO: extra_frozen=('^backbone/pos_emb$',).
  c.freeze = ConfigDict({"extra_frozen": (), "extra_trainable": ()})
  return c


def pretrain_config(arch: str = "dp_mlp", cond: str = "adaln_zero", head: str = "diffusion",
                    signal: str = "jp", source: str = "generated") -> ConfigDict:
  """Stage 1 (docs/method.md §1): an action expert on observation-free FK windows."""
  from decoupled_jax.kinematics.trajectories import FKWindowConfig
  c = _common("pretrain", arch, cond, head, "fk")
  c.data = ConfigDict()
  c.data.source = source            # 'generated': on-device FK; 'demos': (joint, pose) pairs
  c.data.dataset = ""               # demonstrations for source='demos'
  c.data.format = "robomimic"       # robomimic | rlds | lerobot (source='demos')
  c.data.key_map = key_map_config()   # policy key -> dataset key ('' = default; sources.py)
  c.data.signal = signal
  c.data.horizon = default_horizon(arch)
  c.data.position_box = default_position_box()   # must equal the stage-2 runs' box
  # 'ours': target position by the fixed box above, rot6d/gripper raw, joints by the Panda's
  # limits; 'paper': the reference's — condition and all 10 target dims by the training
  # data's min/max (docs/method.md §1.1). Stage 2 accepts either (its actions keep the box).
  c.data.normalization = "ours"
  # The FK trajectory generator (kinematics/trajectories.py FKWindowConfig); horizon, signal
  # and the workspace box come from the keys above, the end effector from config.robot.
  fk = {f: getattr(FKWindowConfig(), f) for f in FKWindowConfig.__dataclass_fields__
        if f not in ("horizon", "signal", "workspace_box", "site")}
  c.data.fk = ConfigDict(fk)
  c.eval = ConfigDict({"num_windows": 256})   # held-out FK windows sampled at the end
  # The robot whose FK is learnt (kinematics/robot.py documents every key): the built-in
  # Panda in robosuite's frame, or any MJCF (--config.robot.mjcf=path
  # --config.robot.ee_sites=site).
  from decoupled_jax.kinematics.robot import default_robot_config
  c.robot = ConfigDict(default_robot_config())
  return c


def encoder_config() -> ConfigDict:
  """The camera encoders (used only with image keys): the paper's ResNet-18 widths, a random
  crop of 76 px from 84 px frames (docs/method.md §4.1; LIBERO's 116 in §4.2). Narrower
  `stage_widths` keep the same layers and parameter paths (configs/libero.py:images)."""
  from decoupled_jax.encoders.resnet import RESNET18_STAGE_WIDTHS
  return ConfigDict({"stage_widths": RESNET18_STAGE_WIDTHS, "crop_size": 76})


def finetune_config(mode: str = "decoupled", arch: str = "dp_mlp", cond: str = "adaln_zero",
                    head: str = "diffusion", obs: str = "lowdim") -> ConfigDict:
  """Stage 2 / normal / random-frozen on demonstrations (docs/method.md §2, §4, §7)."""
  c = _common("finetune", arch, cond, head, "robosuite")
  c.mode = mode                     # the freeze knob: normal | decoupled | random_frozen | oracle
  c.stage1_checkpoint = ""          # checkpoints/ of an experiments/pretrain.py run (decoupled)
  # mode='oracle' only (a diagnosis, docs/results/decoupled_gap.md): checkpoints/ of a *stage-2*
  # run on this task whose backbone is frozen with a fresh conditioning pathway.
  c.oracle_checkpoint = ""
  c.encoder = encoder_config()
  c.data = ConfigDict()
  c.data.dataset = ""
  c.data.format = "robomimic"       # robomimic | rlds | lerobot
  c.data.key_map = key_map_config()   # policy key -> dataset key ('' = default), e.g.
  #                                     agentview_image=agentview_rgb (data/sources.py)
  c.data.filter_key = ""            # robomimic mask (e.g. 'train'); '' = every demo
  # Read image frames from the HDF5 file on demand instead of loading them (datasets larger
  # than RAM; data/lazy.py). Low-dim fields are always in memory.
  c.data.lazy_images = False
  c.data.task = ""                  # '' = the dataset's env_args env_name
  if obs == "image":
    c.data.image_keys, c.data.lowdim_keys = IMAGE_KEYS, IMAGE_LOWDIM_KEYS
  elif obs == "lowdim":
    c.data.image_keys, c.data.lowdim_keys = (), LOWDIM_KEYS
  else:
    raise ConfigError(f"obs must be 'lowdim' or 'image', got {obs!r}")
  c.data.position_box = default_position_box()   # must equal the stage-1 run's box
  c.data.n_obs_steps = 2
  c.data.horizon = default_horizon(arch)
  c.data.n_action_steps = 8
  # The run's length, one knob: train.epochs > 0 is the reference's budget, that many shuffled
  # passes over every window (§2.3; the steps follow from the data); 0 = train.num_steps
  # windows drawn with replacement.
  c.train.epochs = 0
  c.eval = ConfigDict()
  c.eval.num_episodes = 50          # closed-loop episodes after training, seeds 100000 + i
  c.eval.periodic_episodes = 10     # episodes per periodic evaluation (train.eval_every)
  c.eval.num_workers = 2            # env processes (<= 1: inline)
  c.eval.num_videos = 2
  c.eval.max_steps = 0              # 0: 2.5 x the average demonstration length (§7.1)
  c.eval.seed_offset = 0
  c.eval.train_episodes = 0         # extra rollouts from the demos' initial states (§7.1 'train')
  c.eval.progress = True
  return c


def _libero_optimizer(c):
  """LIBERO's policies: Adam, lr 1e-4, constant, no warm-up, no weight decay (§5)."""
  c.optimizer.update(schedule="constant", warmup_steps=0, weight_decay=0.0,
                     encoder_weight_decay=0.0)


def libero_pretrain_config(arch: str = "dp_mlp", signal: str = "eepose") -> ConfigDict:
  """LIBERO stage 1 (docs/method.md §1.4): end-effector state window -> delta actions, from
  demonstrations of every suite in data.suites."""
  c = _common("pretrain", arch, "adaln_zero", "diffusion", "libero")
  c.seed = 0
  c.optimizer = optimizer_config(arch, "pretrain")
  _libero_optimizer(c)
  c.train.batch_size = 128
  c.data = ConfigDict()
  c.data.dataset = ""               # directory with <suite>/<task>_demo.hdf5 files
  c.data.suites = ("libero_spatial", "libero_object")
  c.data.signal = signal            # 'eepose' (the paper's) | 'none'
  c.data.horizon = 16
  c.data.position_box = LIBERO_ACTION_BOX
  c.eval = ConfigDict({"num_windows": 256, "holdout_fraction": 0.05})
  return c


def libero_finetune_config(mode: str = "decoupled", arch: str = "dp_mlp",
                           obs: str = "lowdim") -> ConfigDict:
  """LIBERO stage 2 / normal on one suite (docs/method.md §2.3, §4.2, §7.2)."""
  c = _common("finetune", arch, "adaln_zero", "diffusion", "libero")
  c.optimizer = optimizer_config(arch, "finetune")
  _libero_optimizer(c)
  c.train.batch_size = 128
  c.mode = mode
  c.stage1_checkpoint = ""          # checkpoints/ of a LIBERO (or fk) stage-1 run (decoupled)
  c.oracle_checkpoint = ""          # mode='oracle': a stage-2 run's checkpoints/ (diagnosis)
  c.encoder = encoder_config()
  c.data = ConfigDict()
  c.data.dataset = ""               # directory with <suite>/<task>_demo.hdf5 files
  c.data.suite = "libero_spatial"
  c.data.tasks = "all"              # 'all' or '0+3+7'
  c.data.num_demos = 0              # per task; 0 = every demo
  if obs == "image":
    c.data.image_keys, c.data.lowdim_keys = IMAGE_KEYS, LIBERO_IMAGE_LOWDIM_KEYS
    # The paper's LIBERO encoder: 128x128 frames, a random 116 crop (centre at evaluation).
    c.encoder.crop_size = 116
  elif obs == "lowdim":
    c.data.image_keys, c.data.lowdim_keys = (), LIBERO_LOWDIM_KEYS
  else:
    raise ConfigError(f"obs must be 'lowdim' or 'image', got {obs!r}")
  c.data.position_box = LIBERO_ACTION_BOX
  c.data.n_obs_steps = 2
  c.data.horizon = default_horizon(arch)
  c.data.n_action_steps = 8
  c.train.epochs = 0                # > 0: shuffled passes over every window (see finetune_config)
  c.eval = ConfigDict()
  c.eval.episodes_per_task = 50     # LIBERO's init states per task (0: no evaluation)
  c.eval.eval_seed = 0              # the policy's sampling-noise seed (the paper: 0/42/420)
  c.eval.num_workers = 1            # rows of the served policy's batch
  # The LIBERO venv's interpreter (`make libero-env`); '' = <repo>/.venv-libero/bin/python
  c.eval.libero_python = ""
  return c


def dataset_config(mode: str = "decoupled", arch: str = "dp_mlp",
                   action_space: str = "joint_pos") -> ConfigDict:
  """Stage 2 on any dataset for any robot, no simulator (benchmark 'dataset',
  benchmarks/dataset.py): `data.dataset` + `data.key_map`, `config.robot` with its
  `action_space`; evaluation on held-out episodes (offline)."""
  c = finetune_config(mode, arch)
  c.benchmark = "dataset"
  c.data.lowdim_keys = (("robot0_joint_pos", "robot0_gripper_qpos") if action_space == "joint_pos"
                        else LOWDIM_KEYS[:3])
  from decoupled_jax.kinematics.robot import default_robot_config
  c.robot = ConfigDict(default_robot_config())
  c.robot.action_space = action_space
  del c.eval
  c.eval = ConfigDict()
  c.eval.holdout_fraction = 0.1     # the last 10 % of the episodes are held out of training
  c.eval.num_windows = 256          # held-out windows scored (evenly spaced, fixed)
  return c


def aloha_config(mode: str = "decoupled", arch: str = "dp_mlp", obs: str = "lowdim",
                 fmt: str = "robomimic") -> ConfigDict:
  """Stage 2 on bimanual ALOHA (benchmark 'aloha', benchmarks/aloha.py, docs/aloha.md): a
  gym-aloha task's demonstrations (data.dataset: our HDF5 from `decoupled_jax.aloha.demos_main`
  with fmt='robomimic', or LeRobot v3.0 in the layout of LeRobot's published aloha_sim_*
  datasets with fmt='lerobot'), 14-D joint_pos actions of the packaged robot (the key map
  reorders gym-aloha's action into the robot's order), closed-loop evaluation by the ALOHA
  runner in its venv against the served policy."""
  from decoupled_jax.kinematics.robot import packaged_robot_config
  c = finetune_config(mode, arch)
  c.benchmark = "aloha"
  c.data.task = "transfer_cube"     # one of ALOHA_TASKS
  c.data.format = fmt
  c.data.key_map = key_map_config(ALOHA_KEY_MAP_KEYS)
  c.data.key_map.update(aloha_data.aloha_key_map(fmt))
  if obs == "image":
    c.data.image_keys, c.data.lowdim_keys = ALOHA_IMAGE_KEYS, ("qpos",)
  elif obs == "lowdim":
    c.data.image_keys, c.data.lowdim_keys = (), ALOHA_LOWDIM_KEYS
  else:
    raise ConfigError(f"obs must be 'lowdim' or 'image', got {obs!r}")
  c.robot = ConfigDict(packaged_robot_config("aloha"))
  del c.eval
  c.eval = ConfigDict()
  c.eval.num_episodes = 50          # closed-loop episodes (object poses from seeds 100000 + i)
  c.eval.num_videos = 2
  c.eval.max_steps = 400            # ACT's simulated episode length (50 Hz: 8 s)
  c.eval.eval_seed = 0              # the policy's sampling-noise seed
  # The ALOHA venv's interpreter (`make aloha-env`); '' = <repo>/.venv-aloha/bin/python
  c.eval.aloha_python = ""
  return c


def debug_backbone_kwargs(arch: str) -> dict:
  """Tiny sizes of each backbone for smoke tests (same code paths, seconds to compile)."""
  if arch == "dp_c":
    return {"down_dims": (16, 32, 64), "diffusion_step_embed_dim": 16}
  if arch == "dp_mlp":
    return {"n_layer": 2, "n_emb": 32}
  return {"n_layer": 2, "n_head": 2, "n_emb": 32}


# ----------------------------------------------------------------------------- validation
def _fail(field: str, msg: str):
  raise ConfigError(f"config.{field}: {msg}")


def _positive(c, field: str, allow_zero: bool = False):
  v = c
  for part in field.split("."):
    v = v[part]
  ok = (v >= 0) if allow_zero else (v > 0)
  if not isinstance(v, (int, float, np.integer, np.floating)) or not ok:
    _fail(field, f"must be {'>= 0' if allow_zero else '> 0'}, got {v!r}")


def validate(config, *, num_devices: int | None = None) -> None:
  """Checks every value before any work starts; raises ConfigError naming the field."""
  import jax
  from decoupled_jax import backbones
  from decoupled_jax.heads import HeadConfigError, make_head
  c = config
  if c.stage in LEGACY_STAGES:
    stage, bench = LEGACY_STAGES[c.stage]
    _fail("stage", f"{c.stage!r} is now stage={stage!r} with benchmark={bench!r} "
          f"(config_lib.libero_{stage}_config writes both)")
  if c.stage not in STAGES:
    _fail("stage", f"must be one of {STAGES}, got {c.stage!r}")
  if c.get("benchmark") not in BENCHMARKS[c.stage]:
    _fail("benchmark", f"must be one of {BENCHMARKS[c.stage]} for stage {c.stage!r}, got "
          f"{c.get('benchmark')!r}")
  if c.rng_impl not in RNG_IMPLS:
    _fail("rng_impl", f"must be one of {RNG_IMPLS}, got {c.rng_impl!r}")
  if c.compute_dtype not in ("float32", "bfloat16"):
    _fail("compute_dtype", f"must be 'float32' or 'bfloat16', got {c.compute_dtype!r}")
  name = c.backbone.name
  if name not in backbones.BACKBONES:
    _fail("backbone.name", f"unknown backbone {name!r}; choose one of {ARCHS}")
  cls = backbones.BACKBONES[name][0]
  fields = set(cls.__dataclass_fields__) - {"parent", "name"}
  unknown = sorted(set(c.backbone.kwargs) - fields)
  if unknown:
    _fail(f"backbone.kwargs.{unknown[0]}", f"not an argument of {cls.__name__} "
          f"(arguments: {sorted(fields)})")
  if name == "unified" and c.backbone.kwargs.conditioning not in CONDITIONINGS:
    _fail("backbone.kwargs.conditioning", f"must be one of {CONDITIONINGS}, got "
          f"{c.backbone.kwargs.conditioning!r}")
  try:
    make_head(c.head)
  except HeadConfigError as e:
    _fail(f"head.{e.field}", e.msg)
  except (ValueError, TypeError) as e:
    _fail("head", str(e))
  for f in ("train.batch_size", "train.num_steps", "train.checkpoint_every", "train.log_every",
            "train.max_checkpoints", "optimizer.learning_rate"):
    _positive(c, f)
  for f in ("train.eval_every", "optimizer.warmup_steps"):
    _positive(c, f, allow_zero=True)
  if c.optimizer.schedule not in ("cosine", "constant"):
    _fail("optimizer.schedule", f"must be 'cosine' or 'constant', got {c.optimizer.schedule!r}")
  n = jax.device_count() if num_devices is None else num_devices
  if c.train.batch_size % n:
    _fail("train.batch_size", f"{c.train.batch_size} is not divisible by the {n} devices")
  _check_box(c)
  _positive(c, "data.horizon")
  {("pretrain", "fk"): _validate_pretrain, ("pretrain", "libero"): _validate_libero_pretrain,
   ("finetune", "robosuite"): _validate_finetune, ("finetune", "dataset"): _validate_dataset,
   ("finetune", "libero"): _validate_libero_finetune,
   ("finetune", "aloha"): _validate_aloha}[(c.stage, c.benchmark)](c)


def _check_box(c):
  box = c.data.position_box
  try:
    lo, hi = (np.asarray(b, np.float64) for b in box)
    ok = lo.shape == (3,) and hi.shape == (3,) and np.all(hi > lo)
  except (TypeError, ValueError):
    ok = False
  if not ok:
    _fail("data.position_box", f"must be ((xmin, ymin, zmin), (xmax, ymax, zmax)) with "
          f"max > min, got {box}")


def _check_key_map(c, known=KEY_MAP_KEYS):
  for k, v in c.data.key_map.items():
    if k not in known:
      _fail(f"data.key_map.{k}", f"not a policy key; known: {sorted(known)}")
    if not isinstance(v, str):
      _fail(f"data.key_map.{k}", f"must be a dataset key (a string; '' = the format's "
            f"default), got {v!r}")


def _validate_pretrain(c):
  _check_key_map(c)
  if c.data.source not in SOURCES:
    _fail("data.source", f"must be one of {SOURCES}, got {c.data.source!r}")
  if c.data.signal not in SIGNALS:
    _fail("data.signal", f"must be one of {SIGNALS}, got {c.data.signal!r}")
  if c.data.source == "demos" and not os.path.exists(c.data.dataset):
    _fail("data.dataset", f"source='demos' needs a demonstrations file or directory; "
          f"{c.data.dataset!r} does not exist")
  if c.data.format not in FORMATS:
    _fail("data.format", f"must be one of {FORMATS}, got {c.data.format!r}")
  if c.data.normalization not in STAGE1_NORMALIZATIONS:
    _fail("data.normalization", f"must be one of {STAGE1_NORMALIZATIONS}, got "
          f"{c.data.normalization!r}")
  from decoupled_jax.kinematics.trajectories import FKWindowConfig
  try:
    FKWindowConfig.from_any(dict(c.data.fk, horizon=c.data.horizon, signal=c.data.signal))
  except ValueError as e:
    _fail("data.fk", str(e))
  if c.data.signal == "jv" and c.data.source != "generated":
    _fail("data.signal", "'jv' (joints + joint steps) is generated data's; demonstration pairs "
          "take 'jp', 'eepose' or 'none'")
  if c.data.fk.get("target", "absolute") == "delta" and (
      c.data.source != "generated" or c.get("robot", {}).get("action_space", "ee_pose") != "ee_pose"):
    _fail("data.fk.target", "'delta' needs generated data (data.source='generated') of an "
          "ee_pose robot (robot.action_space)")
  _positive(c, "eval.num_windows", allow_zero=True)
  from decoupled_jax.kinematics.robot import check_config
  check_config(c)   # config.robot: loads the MJCF (sites, joints, limits, chains); no XLA


def _validate_encoder(c):
  from decoupled_jax.encoders.resnet import GN_GROUP_SIZE
  e = c.get("encoder")
  if e is None:
    return
  widths, g = tuple(e.stage_widths), GN_GROUP_SIZE
  if not widths or any(not isinstance(w, (int, np.integer)) or w <= 0 or (w > g and w % g)
                       for w in widths):
    _fail("encoder.stage_widths", f"positive widths, each <= {g} or a multiple of {g} "
          f"(GroupNorm uses width/{g} groups), got {widths!r}")
  _positive(c, "encoder.crop_size")


def _check_stage1_ref(ref: str) -> None:
  """A stage-1 checkpoints directory or `pretrained:<name>` (decoupled_jax/pretrained)."""
  from decoupled_jax import pretrained
  if pretrained.is_ref(ref):
    try:
      pretrained.expert_dir(ref)
    except Exception as e:   # CheckpointError: unknown name, with the shipped names
      _fail("stage1_checkpoint", str(e))
  elif not os.path.isdir(ref):
    _fail("stage1_checkpoint", f"{ref} does not exist (give a stage-1 run's checkpoints "
          f"directory or pretrained:<name>)")


def _validate_oracle(c):
  """mode='oracle' is the one way to freeze a backbone that already saw a task."""
  path = c.get("oracle_checkpoint", "")
  if c.mode == "oracle":
    if not path or not os.path.isdir(path):
      _fail("oracle_checkpoint", f"mode='oracle' needs the checkpoints directory of a stage-2 "
            f"(normal) run on this task; {path!r} does not exist")
  elif path:
    _fail("oracle_checkpoint", f"is only used by mode='oracle' (mode is {c.mode!r}); "
          f"leave it empty")


def _validate_finetune(c):
  """benchmark 'robosuite': the common stage-2 checks and a known task."""
  from decoupled_jax.sim.robosuite_env import canonical_task
  _validate_stage2(c)
  if c.data.task:
    try:
      canonical_task(c.data.task)
    except KeyError as e:
      _fail("data.task", str(e.args[0]))
  for f in ("eval.num_episodes", "eval.periodic_episodes", "eval.num_workers",
            "eval.num_videos", "eval.max_steps", "eval.train_episodes"):
    _positive(c, f, allow_zero=True)


def _validate_dataset(c):
  """benchmark 'dataset': the common stage-2 checks, the robot, the held-out split."""
  from decoupled_jax.kinematics.robot import load_robot
  _validate_stage2(c)
  load_robot(c.robot)   # ConfigError naming the config.robot field
  if not 0 <= float(c.eval.holdout_fraction) < 1:
    _fail("eval.holdout_fraction", f"must be in [0, 1), got {c.eval.holdout_fraction}")
  _positive(c, "eval.num_windows", allow_zero=True)


def _validate_aloha(c):
  """benchmark 'aloha': the common stage-2 checks on ALOHA's keys, the task, the robot."""
  from decoupled_jax.kinematics.robot import load_robot
  _validate_stage2(c, ALOHA_IMAGE_KEYS, ALOHA_KNOWN_LOWDIM_KEYS, ALOHA_KEY_MAP_KEYS)
  if c.data.task not in ALOHA_TASKS:
    _fail("data.task", f"must be one of {ALOHA_TASKS}, got {c.data.task!r}")
  info = load_robot(c.robot).info
  if info.action_space != "joint_pos" or info.joint_dim != 14:
    _fail("robot", f"ALOHA trains 14-D joint_pos actions; config.robot gives "
          f"{info.joint_dim}-D {info.action_space}")
  for f in ("eval.num_episodes", "eval.num_videos", "eval.max_steps"):
    _positive(c, f, allow_zero=True)


def _validate_stage2(c, image_keys=IMAGE_KEYS, lowdim_keys=KNOWN_LOWDIM_KEYS,
                     key_map_keys=KEY_MAP_KEYS):
  if c.mode not in MODES:
    _fail("mode", f"must be one of {MODES}, got {c.mode!r}")
  if c.mode == "decoupled":
    if not c.stage1_checkpoint:
      _fail("stage1_checkpoint", "mode='decoupled' needs the checkpoints directory of an "
            "experiments/pretrain.py run")
    _check_stage1_ref(c.stage1_checkpoint)
  elif c.stage1_checkpoint:
    _fail("stage1_checkpoint", f"is only used by mode='decoupled' (mode is {c.mode!r}); "
          f"leave it empty")
  _validate_oracle(c)
  if not c.data.dataset:
    _fail("data.dataset", "is empty; give the demonstrations file or directory")
  if not os.path.exists(c.data.dataset):
    _fail("data.dataset", f"{c.data.dataset} does not exist")
  if c.data.format not in FORMATS:
    _fail("data.format", f"must be one of {FORMATS}, got {c.data.format!r}")
  _check_key_map(c, key_map_keys)
  for k in c.data.image_keys:
    if k not in image_keys:
      _fail("data.image_keys", f"unknown image key {k!r}; known: {image_keys}")
  _validate_encoder(c)
  for k in c.data.lowdim_keys:
    if k not in lowdim_keys:
      _fail("data.lowdim_keys", f"unknown low-dim key {k!r}; known: {lowdim_keys}")
  if not (tuple(c.data.image_keys) or tuple(c.data.lowdim_keys)):
    _fail("data.lowdim_keys", "the policy has no observation keys")
  d = c.data
  for f in ("data.n_obs_steps", "data.n_action_steps"):
    _positive(c, f)
  if d.horizon < d.n_obs_steps - 1 + d.n_action_steps:
    _fail("data.horizon", f"{d.horizon} < n_obs_steps - 1 + n_action_steps = "
          f"{d.n_obs_steps - 1 + d.n_action_steps}: the executed actions would not fit")
  _positive(c, "train.epochs", allow_zero=True)


def _libero_dataset(c, suites_):
  from decoupled_jax.libero import suites
  if not c.data.dataset or not os.path.isdir(c.data.dataset):
    _fail("data.dataset", f"{c.data.dataset!r} is not a directory of LIBERO demos "
          f"(<suite>/<task>_demo.hdf5; experiments/libero_demos.py writes them)")
  for s in suites_:
    try:
      suites.check_suite(s)
    except ValueError as e:
      _fail("data.suites" if c.stage == "pretrain" else "data.suite", str(e))
    if not os.path.isdir(os.path.join(c.data.dataset, s)):
      _fail("data.dataset", f"{c.data.dataset} has no {s}/ directory of demos")


def _validate_libero_pretrain(c):
  if not tuple(c.data.suites):
    _fail("data.suites", "is empty")
  _libero_dataset(c, tuple(c.data.suites))
  if c.data.signal not in LIBERO_SIGNALS:
    _fail("data.signal", f"must be one of {LIBERO_SIGNALS} on LIBERO, got {c.data.signal!r}")
  _positive(c, "eval.num_windows", allow_zero=True)
  if not 0 <= float(c.eval.holdout_fraction) < 1:
    _fail("eval.holdout_fraction", f"must be in [0, 1), got {c.eval.holdout_fraction}")


def _validate_libero_finetune(c):
  from decoupled_jax.libero import suites
  if c.mode not in MODES:
    _fail("mode", f"must be one of {MODES}, got {c.mode!r}")
  if c.mode == "decoupled":
    if not c.stage1_checkpoint or not os.path.isdir(c.stage1_checkpoint):
      _fail("stage1_checkpoint", f"mode='decoupled' needs the checkpoints directory of a "
            f"LIBERO (or fk) stage-1 run; {c.stage1_checkpoint!r} does not exist")
  elif c.stage1_checkpoint:
    _fail("stage1_checkpoint", f"is only used by mode='decoupled' (mode is {c.mode!r})")
  _validate_oracle(c)
  _libero_dataset(c, (c.data.suite,))
  try:
    suites.parse_task_list(c.data.tasks, c.data.suite)
  except ValueError as e:
    _fail("data.tasks", str(e))
  for k in c.data.image_keys:
    if k not in IMAGE_KEYS:
      _fail("data.image_keys", f"unknown image key {k!r}; known: {IMAGE_KEYS}")
  _validate_encoder(c)
  for k in c.data.lowdim_keys:
    if k not in LIBERO_KNOWN_LOWDIM_KEYS:
      _fail("data.lowdim_keys", f"unknown LIBERO low-dim key {k!r}; known: "
            f"{LIBERO_KNOWN_LOWDIM_KEYS}")
  d = c.data
  for f in ("data.n_obs_steps", "data.n_action_steps"):
    _positive(c, f)
  _positive(c, "data.num_demos", allow_zero=True)
  if d.horizon < d.n_obs_steps - 1 + d.n_action_steps:
    _fail("data.horizon", f"{d.horizon} < n_obs_steps - 1 + n_action_steps")
  _positive(c, "train.epochs", allow_zero=True)
  _positive(c, "eval.episodes_per_task", allow_zero=True)
  _positive(c, "eval.num_workers")
  if int(c.eval.episodes_per_task) > 0:
    py = c.eval.libero_python or os.path.join(
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".venv-libero", "bin",
        "python")
    if not os.path.exists(py):
      _fail("eval.libero_python", f"{py} does not exist: build the LIBERO environment with "
            f"`make libero-env` (or set eval.episodes_per_task=0)")

