"""Self-contained policy exports: one folder that loads with the library alone.

    export_policy("workdirs/lift/checkpoints", "exports/lift")      # or experiments/export.py
    runner = load_exported("exports/lift")                          # a PolicyRunner
    actions = runner(obs_batch, seeds=..., steps=...)               # same as from the checkpoint

The folder (written to a temporary sibling and renamed into place, so it is complete or absent):
  params.safetensors  inference params (EMA + frozen leaves), one tensor per '/'-joined path
                      ('backbone/block_0/linear1/kernel'), in the safetensors file format
                      (written and read with the `safetensors` package; metadata "format"
                      and "empty_dicts"); readable by Rust/C++ runtimes and by
                      memory-mapping; no pickle.
  config.json         what the policy is: backbone (name, kwargs), head and sampler, horizons,
                      observation keys with per-frame shapes and dtypes, action layout, task,
                      source checkpoint and step; under "meta" the checkpoint's meta (minus the
                      normaliser), which is what the loader rebuilds the runner from.
  norm_stats.json     the observation/action normaliser (LimitsNormalizer.to_dict()).
  model_card.md       task, data, stage/mode, training steps, architecture, evaluation (when an
                      eval.json / summary.json sits beside the checkpoint directory), usage.

Reading treats the folder as untrusted (`read_exported`): paths stay inside it, every shape
and count in config.json is bounded (MAX_* below) before anything is built, the safetensors
header is validated by the safetensors package, and the tensors must be exactly the param
tree (names, shapes, dtypes) the config's architecture initialises. Every failure is one
ExportError line naming the file and the field or tensor.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
from typing import Any, Mapping, Optional

import numpy as np

from decoupled_jax.errors import UserError

log = logging.getLogger(__name__)

EXPORT_FORMAT = "decoupled_jax.export"
EXPORT_FORMAT_VERSION = 1
PARAMS_FILE, CONFIG_FILE, NORM_FILE, CARD_FILE = (
    "params.safetensors", "config.json", "norm_stats.json", "model_card.md")
_REQUIRED_META = ("config", "normalizer", "image_keys", "lowdim_keys", "obs_shapes",
                  "obs_dtypes", "horizon", "n_obs_steps", "n_action_steps")


class ExportError(UserError, ValueError):
  """An export cannot be written or read (the message says why, in one line)."""


# ----------------------------------------------------------------------------- safetensors
# The `safetensors` package reads and writes the file: its Rust header parser refuses
# overlapping, non-contiguous, negative or out-of-bounds offsets, size != dtype x shape,
# unknown dtypes, a header length past the file and trailing or missing bytes
# (tests/test_hostile_exports.py forges each). numpy dtype <-> safetensors dtype name:
_ST_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64,
              "I32": np.int32, "I16": np.int16, "I8": np.int8, "U64": np.uint64,
              "U32": np.uint32, "U16": np.uint16, "U8": np.uint8, "BOOL": np.bool_}
_ST_NAMES = {np.dtype(v): k for k, v in _ST_DTYPES.items()}


def flatten_params(tree: Mapping, prefix: str = "", leaf=np.asarray
                   ) -> tuple[dict[str, np.ndarray], list[str]]:
  """({'a/b/c': leaf(array)}, [paths of empty dicts]) of a nested dict of arrays."""
  flat, empty = {}, []
  for k, v in tree.items():
    if not isinstance(k, str) or not k or "/" in k:
      raise ExportError(f"param key {prefix + str(k)!r} cannot be written ('/' or non-string)")
    path = prefix + k
    if isinstance(v, Mapping):
      if not v:
        empty.append(path)
      sub, sub_empty = flatten_params(v, path + "/", leaf)
      flat.update(sub)
      empty.extend(sub_empty)
    else:
      flat[path] = leaf(v)
  return flat, empty


def unflatten_params(flat: Mapping[str, Any], empty=()) -> dict:
  out: dict = {}
  for path in list(empty) + list(flat):
    node, parts = out, path.split("/")
    for p in parts[:-1]:
      node = node.setdefault(p, {})
    node[parts[-1]] = flat[path] if path in flat else {}
  return out


def save_safetensors(path: str, tensors: Mapping[str, np.ndarray],
                     metadata: Optional[Mapping[str, str]] = None) -> None:
  """Writes `tensors` (little-endian, header padded to 8 bytes) with safetensors.numpy and
  fsyncs the file."""
  from safetensors.numpy import save_file
  arrays = {}
  for name in sorted(tensors):
    arr = np.asarray(tensors[name])
    if not arr.dtype.isnative:
      arr = arr.astype(arr.dtype.newbyteorder("="))
    if arr.dtype not in _ST_NAMES:
      raise ExportError(f"param {name!r} has dtype {arr.dtype}, which the export format "
                        f"cannot hold (one of {sorted(_ST_NAMES, key=str)})")
    arrays[name] = np.ascontiguousarray(arr)
  save_file(arrays, path, metadata={str(k): str(v) for k, v in (metadata or {}).items()})
  with open(path, "rb+") as f:
    os.fsync(f.fileno())


def load_safetensors(path: str, expected: Optional[Mapping[str, Any]] = None
                     ) -> tuple[dict[str, np.ndarray], dict[str, str]]:
  """(name -> array, metadata) of a safetensors file, memory-mapped by safetensors.

  `expected` (name -> anything with .shape and .dtype): the exact tensor set the reader
  needs; names, shapes and dtypes are checked from the header before any tensor is read.
  Every failure is an ExportError naming the file (and the tensor, where there is one)."""
  from safetensors import SafetensorError, safe_open
  try:
    with safe_open(path, framework="numpy") as f:
      metadata = dict(f.metadata() or {})
      names = list(f.keys())
      if expected is not None:
        _check_tensor_set(path, f, names, expected)
      out = {}
      for name in names:
        if f.get_slice(name).get_dtype() not in _ST_DTYPES:
          raise ExportError(f"{path}: tensor {name!r} has dtype "
                            f"{f.get_slice(name).get_dtype()}, which the export format does "
                            f"not use (one of {sorted(_ST_DTYPES)})")
        out[name] = f.get_tensor(name)
  except SafetensorError as e:
    raise ExportError(f"{path}: not a valid safetensors file ({e})") from None
  except OSError as e:
    raise ExportError(f"{path}: cannot be read ({e.strerror or e})") from None
  return out, metadata


def _check_tensor_set(path: str, f, names, expected: Mapping[str, Any]) -> None:
  missing = sorted(set(expected) - set(names))
  if missing:
    raise ExportError(f"{path}: tensor {missing[0]!r} is missing ({len(missing)} of the "
                      f"{len(expected)} tensors the architecture in config.json needs)")
  extra = sorted(set(names) - set(expected))
  if extra:
    raise ExportError(f"{path}: tensor {extra[0]!r} is not part of the architecture in "
                      f"config.json ({len(extra)} unexpected tensor(s))")
  for name in sorted(names):
    sl = f.get_slice(name)
    shape, dtype = tuple(int(d) for d in sl.get_shape()), sl.get_dtype()
    want_shape = tuple(int(d) for d in expected[name].shape)
    want_dtype = _ST_NAMES.get(np.dtype(expected[name].dtype), str(expected[name].dtype))
    if shape != want_shape:
      raise ExportError(f"{path}: tensor {name!r} has shape {shape}, the architecture in "
                        f"config.json needs {want_shape}")
    if dtype != want_dtype:
      raise ExportError(f"{path}: tensor {name!r} has dtype {dtype}, the architecture in "
                        f"config.json needs {want_dtype}")


# ----------------------------------------------------------------------------- config / card
def _sampler_summary(head: Mapping) -> dict:
  from decoupled_jax.heads import make_head
  try:   # typed, or the flat form of checkpoints written before the typed sections
    h = make_head(head)
  except (ValueError, TypeError) as e:
    raise ExportError(f"meta.config.head: {e}") from None
  if not hasattr(h, "sampler"):
    return {"type": "flow", "method": "euler", "num_steps": int(h.num_steps)}
  return {"type": "diffusion", "method": h.sampler, "num_steps": int(h.inference_steps),
          "num_train_steps": int(h.num_train_steps), "prediction_type": h.prediction_type}


def _find_evaluation(checkpoint_dir: str) -> tuple[Optional[dict], Optional[str]]:
  """The run's evaluation next to its checkpoints/ folder, if any."""
  workdir = os.path.dirname(os.path.abspath(checkpoint_dir))
  for name in ("eval.json", os.path.join("eval", "eval.json"), "summary.json"):
    path = os.path.join(workdir, name)
    if not os.path.isfile(path):
      continue
    try:
      with open(path) as f:
        d = json.load(f)
    except (OSError, ValueError):
      continue
    if name == "summary.json":
      if not isinstance(d.get("eval"), dict):
        continue
      d = dict(d["eval"], steps=d.get("steps"))
    if "success_rate" in d:
      return d, path
  return None, None


def _config_json(meta: dict, checkpoint_dir: str, n_params: int, n_tensors: int,
                 sha256: str) -> dict:
  cfg = meta["config"]
  keys = list(meta["image_keys"]) + list(meta["lowdim_keys"])
  return {
      "format": EXPORT_FORMAT, "format_version": EXPORT_FORMAT_VERSION,
      "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "source": {"checkpoint_dir": os.path.abspath(checkpoint_dir), "step": meta.get("step")},
      "task": meta.get("task"), "stage": meta.get("stage"), "mode": meta.get("mode"),
      "backbone": cfg.get("backbone"), "head": cfg.get("head"),
      "sampler": _sampler_summary(cfg.get("head") or {}),
      "horizon": int(meta["horizon"]), "n_obs_steps": int(meta["n_obs_steps"]),
      "n_action_steps": int(meta["n_action_steps"]), "max_steps": meta.get("max_steps"),
      "observations": {k: {"shape": list(meta["obs_shapes"][k]), "dtype": meta["obs_dtypes"][k],
                           "kind": "image" if k in meta["image_keys"] else "lowdim"}
                       for k in keys},
      "obs_keys": keys,
      "actions": {"shape": [int(meta["n_action_steps"]), 7],
                  "layout": "absolute env actions [pos(3), axis-angle(3), gripper(1)]",
                  "model_action_dim": 10},
      "params": {"file": PARAMS_FILE, "num_params": n_params, "num_tensors": n_tensors,
                 "sha256": sha256},
      "meta": {k: v for k, v in meta.items() if k != "normalizer"},
  }


def _model_card(config: dict, evaluation: Optional[dict], eval_path: Optional[str]) -> str:
  m = config["meta"]
  cfg = m["config"]
  data = (cfg.get("data") or {})
  s = config["sampler"]
  bb = config["backbone"] or {}
  lines = [
      f"# {config['task'] or 'policy'}: {bb.get('name', '?')} {s['type']} policy "
      f"({config['mode'] or config['stage']})", "",
      "Exported by `decoupled_jax.export` (format "
      f"{EXPORT_FORMAT} v{EXPORT_FORMAT_VERSION}, {config['created']}).", "",
      "## Training", "",
      f"- Task: {config['task']}",
      f"- Data: {m.get('dataset') or data.get('dataset') or 'unknown'}",
      f"- Stage / mode: {config['stage']} / {config['mode']}",
      f"- Training steps: {m.get('step')}",
      f"- Source checkpoint: `{config['source']['checkpoint_dir']}` (step "
      f"{config['source']['step']})", "",
      "## Model", "",
      f"- Backbone: `{bb.get('name')}` {json.dumps(bb.get('kwargs', {}), sort_keys=True)}",
      f"- Head: {s['type']}, sampler {s['method']} with {s['num_steps']} steps",
      f"- Parameters: {config['params']['num_params']:,} in {config['params']['num_tensors']} "
      f"tensors (`{PARAMS_FILE}`)",
      f"- Horizon {config['horizon']}, observation history {config['n_obs_steps']}, "
      f"executed actions {config['n_action_steps']} per call", "",
      "| observation | shape (per frame) | dtype |", "|---|---|---|",
      *[f"| `{k}` | {tuple(v['shape'])} | {v['dtype']} |"
        for k, v in config["observations"].items()], "",
      f"Actions: ({config['n_action_steps']}, 7) {config['actions']['layout']}.", "",
      "## Evaluation", "",
  ]
  if evaluation:
    ci = evaluation.get("ci95") or [None, None]
    lines += [f"- Success rate: {evaluation['success_rate']:.3f}"
              + (f" (95% CI {ci[0]:.2f}-{ci[1]:.2f})" if ci[0] is not None else "")
              + f" over {evaluation.get('num_episodes')} episodes",
              f"- Mean episode length: {evaluation.get('mean_episode_length')}, max steps "
              f"{evaluation.get('max_steps')}",
              f"- From `{eval_path}`"]
    if evaluation.get("steps") is not None and evaluation["steps"] != m.get("step"):
      lines.append(f"- Note: that evaluation is of step {evaluation['steps']}, this export "
                   f"is step {m.get('step')}")
  else:
    lines.append("No evaluation found beside the checkpoint directory (eval.json, "
                 "eval/eval.json or summary.json).")
  lines += ["", "## Usage", "", "```python",
            "from decoupled_jax.export import load_exported",
            "runner = load_exported('<this folder>')",
            "actions = runner(obs_batch)   # obs_batch[key]: (N, n_obs_steps, *shape)",
            "```", "",
            "Serve it: `python experiments/serve.py --export=<this folder> --port=8000`.", ""]
  return "\n".join(lines)


# ----------------------------------------------------------------------------- export / load
def _check_output(output_dir: str) -> None:
  if os.path.exists(output_dir) and (not os.path.isdir(output_dir) or os.listdir(output_dir)):
    raise ExportError(f"refusing to overwrite {output_dir}: it exists and is not empty; "
                      f"choose another --output or remove it")


def export_policy(checkpoint_dir: str, output_dir: str, step: Optional[int] = None) -> str:
  """Writes the export folder (see the module docstring); returns its absolute path."""
  from decoupled_jax.training import checkpoint as ckpt_lib
  output_dir = os.path.abspath(output_dir)
  _check_output(output_dir)
  params, meta = ckpt_lib.load_inference_params(checkpoint_dir, step)
  from decoupled_jax.inference import POLICY_STAGES
  if meta.get("stage") not in POLICY_STAGES:
    raise ExportError(f"{checkpoint_dir} holds a {meta.get('stage')!r} checkpoint; only "
                      f"stage-2 (experiments/train.py) policies can be exported")
  if meta.get("action_space", "ee_pose") != "ee_pose":
    raise ExportError(f"{checkpoint_dir} holds a {meta.get('action_space')!r} policy; exports "
                      f"hold end-effector (ee_pose) policies for now: serve this one from its "
                      f"checkpoint (serve --checkpoint={checkpoint_dir})")
  missing = [k for k in _REQUIRED_META if k not in meta]
  if missing:
    raise ExportError(f"{checkpoint_dir}: the checkpoint's meta lacks {missing}; re-save it "
                      f"with the current experiments/train.py")
  flat, empty = flatten_params(params)
  parent = os.path.dirname(output_dir)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(output_dir)}.tmp-", dir=parent)
  try:
    params_path = os.path.join(tmp, PARAMS_FILE)
    save_safetensors(params_path, flat, {"format": EXPORT_FORMAT,
                                         "empty_dicts": json.dumps(empty)})
    sha = _sha256(params_path)
    config = _config_json(meta, checkpoint_dir, int(sum(v.size for v in flat.values())),
                          len(flat), sha)
    evaluation, eval_path = _find_evaluation(checkpoint_dir)
    for name, obj in ((CONFIG_FILE, config), (NORM_FILE, meta["normalizer"])):
      with open(os.path.join(tmp, name), "w") as f:
        json.dump(obj, f, indent=2)
    with open(os.path.join(tmp, CARD_FILE), "w") as f:
      f.write(_model_card(config, evaluation, eval_path))
    # verify the folder with the reader every loader uses: what is on disk is accepted and
    # holds the params bit for bit
    back = flatten_params(read_exported(tmp)[0])[0]
    for k, v in flat.items():
      if k not in back or back[k].dtype != v.dtype or not np.array_equal(back[k], v):
        raise ExportError(f"param {k!r} did not read back identically from {params_path}")
    os.chmod(tmp, 0o755)
    _check_output(output_dir)   # nobody wrote there meanwhile
    if os.path.isdir(output_dir):
      os.rmdir(output_dir)      # empty: rename(2) would replace it anyway
    os.rename(tmp, output_dir)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  log.info("exported step %s of %s to %s", meta.get("step"), checkpoint_dir, output_dir)
  return output_dir


# ----------------------------------------------------------------------------- reading
# An export folder is untrusted input (docs/security.md): every path stays inside the folder,
# every number is bounded before anything is built, allocated or compiled, and the tensors
# must be exactly the param tree the config's architecture initialises.
MAX_JSON_BYTES = 16 << 20        # config.json / norm_stats.json
MAX_OBS_KEYS = 64
MAX_OBS_ELEMENTS = 1 << 22       # elements of one frame of one key (a 1024x1024 RGB image fits)
MAX_IMAGE_SIDE = 2048
MAX_INPUT_ELEMENTS = 1 << 27     # batch_size x n_obs_steps x all keys' elements: one call's input
MAX_HORIZON = 1024               # horizon and n_action_steps
MAX_OBS_STEPS = 64
MAX_BATCH = 4096                 # rows of one compiled policy call
MAX_SAMPLING_STEPS = 10_000      # any integer of the head sections (e.g. diffusion.num_train_steps,
                                 # diffusion.num_inference_steps, flow.num_steps)
MAX_ARCH_INT = 1 << 16           # any integer of the backbone / encoder kwargs
MAX_LAYERS = 64                  # backbone n_layer and the length of any size list: bounds
                                 # the time to trace the architecture (jax.eval_shape)
ENV_ACTION_DIM = 7
_IMAGE_DTYPES = ("uint8",)
_LOWDIM_DTYPES = ("float32", "float64", "float16", "int64", "int32", "int16", "int8", "uint8")


def _fail(where: str, field: str, msg: str):
  raise ExportError(f"{where}: {field}: {msg}")


def _is_int(v) -> bool:
  return isinstance(v, int) and not isinstance(v, bool)


def _int_in(v, where: str, field: str, lo: int, hi: int) -> int:
  if not _is_int(v):
    _fail(where, field, f"must be an integer, got {v!r}")
  if not lo <= v <= hi:
    _fail(where, field, f"{v} is outside [{lo}, {hi}]")
  return v


def _inside(root: str, name: Any, where: str, field: str) -> str:
  """The real path of `name` (relative to the export folder), refusing anything that leaves
  the folder: absolute paths, '..' components, symlinks pointing outside, non-files."""
  if not isinstance(name, str) or not name or "\0" in name:
    _fail(where, field, f"must be a file name inside the export folder, got {name!r}")
  parts = name.replace("\\", "/").split("/")
  if os.path.isabs(name) or name.startswith(("/", "\\")) or ".." in parts:
    _fail(where, field, f"{name!r} points outside the export folder (absolute paths and "
          f"'..' are refused)")
  real = os.path.realpath(os.path.join(root, name))
  if os.path.commonpath([root, real]) != root:
    _fail(where, field, f"{name!r} resolves to {real}, outside the export folder "
          f"(a symlink?)")
  if not os.path.isfile(real):
    _fail(where, field, f"{name!r} is not a regular file in the export folder")
  return real


def _read_json(path: str, what: str) -> Any:
  try:
    with open(path, "rb") as f:
      raw = f.read(MAX_JSON_BYTES + 1)
  except OSError as e:
    raise ExportError(f"{path}: cannot be read ({e.strerror or e})") from None
  if len(raw) > MAX_JSON_BYTES:
    raise ExportError(f"{path}: larger than {MAX_JSON_BYTES} bytes; not a {what}")
  try:
    return json.loads(raw.decode("utf-8"))
  except (ValueError, UnicodeDecodeError, RecursionError) as e:
    raise ExportError(f"{path}: malformed JSON ({e})") from None


def _check_kwargs(values: Any, dataclass_type: type, where: str, field: str,
                  skip=()) -> None:
  """Each key must be an argument of `dataclass_type`, of its default's type, integers
  within [0, MAX_ARCH_INT] (sequences of integers too)."""
  import dataclasses
  if not isinstance(values, Mapping):
    _fail(where, field, f"must be an object, got {type(values).__name__}")
  fields = {f.name: f for f in dataclasses.fields(dataclass_type)
            if f.name not in ("parent", "name", *skip) and not f.name.isupper()}
  for k, v in values.items():
    if k not in fields:
      _fail(where, f"{field}.{k}", f"not an argument of {dataclass_type.__name__} "
            f"(arguments: {sorted(fields)})")
    default = fields[k].default
    if isinstance(default, bool):
      ok = isinstance(v, bool)
    elif _is_int(default):
      ok = _is_int(v)
      if ok:
        _int_in(v, where, f"{field}.{k}", 0, MAX_LAYERS if k == "n_layer" else MAX_ARCH_INT)
    elif isinstance(default, float):
      ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    elif isinstance(default, str):
      ok = isinstance(v, str)
    elif isinstance(default, tuple) and all(_is_int(d) for d in default):
      ok = isinstance(v, (list, tuple)) and 0 < len(v) <= MAX_LAYERS
      if ok:
        for i, d in enumerate(v):
          _int_in(d, where, f"{field}.{k}[{i}]", 1, MAX_ARCH_INT)
    else:
      ok = False
    if not ok:
      _fail(where, f"{field}.{k}", f"{v!r} is not a valid value (default {default!r})")


def validate_policy_meta(meta: Any, where: str, *, batch_size: int = 1,
                         head_overrides: Optional[Mapping] = None,
                         normalizer_source: Optional[str] = None) -> None:
  """Checks a policy meta (as an export's config.json "meta" holds it) before anything is
  built: stage, architecture names and kwargs, head, horizons, observation keys, shapes and
  dtypes against the encoder and the MAX_* caps. Raises ExportError naming the field."""
  from decoupled_jax import backbones, config_lib
  from decoupled_jax.encoders import ObservationEncoder
  from decoupled_jax.heads import HEAD_TYPES, HeadConfigError, head_defaults, make_head
  from decoupled_jax.heads import merge_head_config
  from decoupled_jax.inference import POLICY_STAGES
  from decoupled_jax.training.policy import COMPUTE_DTYPES
  if not isinstance(meta, Mapping):
    _fail(where, "meta", "must be an object")
  missing = [k for k in _REQUIRED_META if k not in meta]
  if missing:
    _fail(where, "meta", f"lacks {missing}")
  if meta.get("stage") not in POLICY_STAGES:
    _fail(where, "meta.stage", f"{meta.get('stage')!r} is not a policy stage "
          f"{POLICY_STAGES}")
  cfg = meta["config"]
  if not isinstance(cfg, Mapping):
    _fail(where, "meta.config", "must be an object")
  if cfg.get("compute_dtype", "float32") not in COMPUTE_DTYPES:
    _fail(where, "meta.config.compute_dtype", f"must be one of {COMPUTE_DTYPES}, got "
          f"{cfg.get('compute_dtype')!r}")
  # architecture
  bb = cfg.get("backbone")
  if not isinstance(bb, Mapping) or not isinstance(bb.get("name"), str):
    _fail(where, "meta.config.backbone", "must be an object with a 'name'")
  if bb["name"] not in backbones.BACKBONES:
    _fail(where, "meta.config.backbone.name", f"unknown backbone {bb['name']!r}; known: "
          f"{backbones.backbone_names()}")
  cls, defaults = backbones.BACKBONES[bb["name"]]
  kwargs = bb.get("kwargs", {})
  _check_kwargs(kwargs, cls, where, "meta.config.backbone.kwargs")
  cond = {**defaults, **kwargs}.get("conditioning")
  if cond is not None and cond not in config_lib.CONDITIONINGS:
    _fail(where, "meta.config.backbone.kwargs.conditioning", f"must be one of "
          f"{config_lib.CONDITIONINGS}, got {cond!r}")
  if bb["name"] == "unified" and cond is None:
    _fail(where, "meta.config.backbone.kwargs.conditioning", "'unified' needs one")
  enc = cfg.get("encoder") or {}
  if not isinstance(enc, Mapping):
    _fail(where, "meta.config.encoder", "must be an object")
  crop = enc.get("crop_size", ObservationEncoder.crop_size)   # an int or (h, w)
  crop = [crop, crop] if _is_int(crop) else crop
  if not isinstance(crop, (list, tuple)) or len(crop) != 2:
    _fail(where, "meta.config.encoder.crop_size", f"must be an integer or [h, w], got {crop!r}")
  for i, c in enumerate(crop):
    _int_in(c, where, f"meta.config.encoder.crop_size[{i}]", 1, MAX_IMAGE_SIDE)
  _check_kwargs({k: v for k, v in enc.items() if k != "crop_size"}, ObservationEncoder, where,
                "meta.config.encoder", skip=("image_keys", "lowdim_keys", "compute_dtype"))
  # head (with the caller's overrides), bounded before the head computes any schedule; the
  # typed sections, or the flat form of exports written before them (heads.typed_head_config)
  head = cfg.get("head")
  if not isinstance(head, Mapping):
    _fail(where, "meta.config.head", "must be an object")
  try:
    head = merge_head_config(head, head_overrides)
  except HeadConfigError as e:
    _fail(where, f"meta.config.head.{e.field}", e.msg)
  if "type" in head and not isinstance(head["type"], str):
    _fail(where, "meta.config.head.type", f"must be a string, got {head['type']!r}")
  hdefaults = head_defaults()
  for section in HEAD_TYPES:
    for k, v in head[section].items():
      field = f"meta.config.head.{section}.{k}"
      if k not in hdefaults[section]:
        _fail(where, field, f"unknown head key (known: {sorted(hdefaults[section])})")
      d = hdefaults[section][k]
      if k == "num_inference_steps" and v is None:
        continue
      if _is_int(d) or k == "num_inference_steps":
        _int_in(v, where, field, 0, MAX_SAMPLING_STEPS)
      elif isinstance(d, bool) and not isinstance(v, bool):
        _fail(where, field, f"must be true or false, got {v!r}")
      elif isinstance(d, float) and not (isinstance(v, (int, float))
                                         and not isinstance(v, bool) and math.isfinite(v)):
        _fail(where, field, f"must be a finite number, got {v!r}")
      elif isinstance(d, str) and not isinstance(v, str):
        _fail(where, field, f"must be a string, got {v!r}")
  try:
    make_head(head)
  except HeadConfigError as e:
    _fail(where, f"meta.config.head.{e.field}", e.msg)
  except (ValueError, TypeError) as e:
    _fail(where, "meta.config.head", str(e))
  # horizons
  horizon = _int_in(meta["horizon"], where, "meta.horizon", 1, MAX_HORIZON)
  n_obs = _int_in(meta["n_obs_steps"], where, "meta.n_obs_steps", 1, MAX_OBS_STEPS)
  n_act = _int_in(meta["n_action_steps"], where, "meta.n_action_steps", 1, MAX_HORIZON)
  if horizon < n_obs - 1 + n_act:
    _fail(where, "meta.horizon", f"{horizon} < n_obs_steps - 1 + n_action_steps = "
          f"{n_obs - 1 + n_act}")
  if meta.get("max_steps") is not None:
    _int_in(meta["max_steps"], where, "meta.max_steps", 0, 10**9)
  if (not isinstance(batch_size, (int, np.integer)) or isinstance(batch_size, bool)
      or not 1 <= batch_size <= MAX_BATCH):
    raise ExportError(f"batch_size {batch_size!r} is outside [1, {MAX_BATCH}] (rows of one "
                      f"compiled policy call)")
  # observations
  image_keys, lowdim_keys = meta["image_keys"], meta["lowdim_keys"]
  for name, keys in (("meta.image_keys", image_keys), ("meta.lowdim_keys", lowdim_keys)):
    if not isinstance(keys, (list, tuple)) or not all(isinstance(k, str) for k in keys):
      _fail(where, name, "must be a list of strings")
  keys = list(image_keys) + list(lowdim_keys)
  if not keys or len(keys) > MAX_OBS_KEYS:
    _fail(where, "meta.lowdim_keys", f"the policy needs 1 to {MAX_OBS_KEYS} observation keys, "
          f"got {len(keys)}")
  if len(set(keys)) != len(keys):
    _fail(where, "meta.image_keys", f"a key is listed twice in {keys}")
  shapes, dtypes = meta["obs_shapes"], meta["obs_dtypes"]
  for name, d in (("meta.obs_shapes", shapes), ("meta.obs_dtypes", dtypes)):
    if not isinstance(d, Mapping) or sorted(d) != sorted(keys):
      _fail(where, name, f"must have exactly the keys {keys}")
  total = 0
  for k in keys:
    if not k or "/" in k or not k.isprintable() or len(k) > 128:
      _fail(where, "meta.image_keys" if k in image_keys else "meta.lowdim_keys",
            f"invalid observation key {k!r}")
    field, shape = f"meta.obs_shapes.{k}", shapes[k]
    if not isinstance(shape, (list, tuple)) or not 1 <= len(shape) <= 4:
      _fail(where, field, f"must be a list of 1 to 4 dimensions, got {shape!r}")
    for i, dim in enumerate(shape):
      if not _is_int(dim) or dim < 1:
        _fail(where, field, f"dimension {i} must be a positive integer, got {dim!r}")
      if dim > MAX_OBS_ELEMENTS:
        _fail(where, field, f"dimension {i} = {dim} exceeds the cap of {MAX_OBS_ELEMENTS} "
              f"elements per frame")
    n = math.prod(shape)
    if n > MAX_OBS_ELEMENTS:
      _fail(where, field, f"{n} elements per frame exceed the cap of {MAX_OBS_ELEMENTS}")
    total += n
    if k in image_keys:
      if len(shape) != 3 or not 1 <= shape[2] <= 4:
        _fail(where, field, f"an image must be (H, W, C) with 1 to 4 channels, got {shape}")
      if max(shape[:2]) > MAX_IMAGE_SIDE:
        _fail(where, field, f"image side {max(shape[:2])} exceeds {MAX_IMAGE_SIDE}")
      ch, cw = crop
      if ch > shape[0] or cw > shape[1]:
        _fail(where, field, f"image {shape[0]}x{shape[1]} is smaller than the encoder's crop "
              f"{ch}x{cw} (meta.config.encoder.crop_size)")
      if dtypes[k] not in _IMAGE_DTYPES:
        _fail(where, f"meta.obs_dtypes.{k}", f"images must be {_IMAGE_DTYPES}, got "
              f"{dtypes[k]!r}")
    elif dtypes[k] not in _LOWDIM_DTYPES:
      _fail(where, f"meta.obs_dtypes.{k}", f"unknown dtype {dtypes[k]!r}; one of "
            f"{_LOWDIM_DTYPES}")
  if batch_size * n_obs * total > MAX_INPUT_ELEMENTS:
    _fail(where, "meta.obs_shapes", f"one call's input (batch {batch_size} x {n_obs} steps x "
          f"{total} elements) exceeds the cap of {MAX_INPUT_ELEMENTS} elements")
  _check_normalizer(meta["normalizer"], shapes, normalizer_source or where)


def _check_normalizer(d: Any, shapes: Mapping, where: str) -> None:
  from decoupled_jax.data.normalizer import LimitsNormalizer
  from decoupled_jax.training.policy import ACTION_DIM
  try:
    norm = LimitsNormalizer.from_dict(d)
  except Exception as e:   # whatever the JSON holds: one line, not a traceback
    raise ExportError(f"{where}: not a valid normaliser ({type(e).__name__}: {e})") from None
  if "actions" not in norm.fields:
    raise ExportError(f"{where}: the normaliser has no 'actions' field")
  for name in norm.fields:
    if name != "actions" and name not in shapes:
      continue
    st = norm.stats[name]
    full = (ACTION_DIM,) if name == "actions" else tuple(shapes[name])
    mn = np.asarray(st.min)
    want = full if st.dims is None else full[:-1] + (len(st.dims),)
    if (mn.shape != want or (st.dims is not None and max(st.dims) >= full[-1])
        or not (np.all(np.isfinite(mn)) and np.all(np.isfinite(st.max)))):
      raise ExportError(f"{where}: normaliser field {name!r} has stats of shape {mn.shape} "
                        f"(dims {st.dims}) that do not fit its shape {full}, or non-finite "
                        f"values")


def expected_params(meta: Mapping, where: str) -> tuple[dict, list]:
  """({'/'-joined path: ShapeDtypeStruct}, [empty dict paths]) of the param tree the meta's
  architecture initialises, computed abstractly (jax.eval_shape: nothing is allocated or
  compiled). Call `validate_policy_meta` first."""
  import jax
  import ml_collections
  from decoupled_jax.training.policy import ACTION_DIM, init_policy, policy_from_config
  try:
    policy = policy_from_config(ml_collections.ConfigDict(meta["config"]), meta["image_keys"],
                                meta["lowdim_keys"])
    obs = {k: jax.ShapeDtypeStruct((1, int(meta["n_obs_steps"]), *meta["obs_shapes"][k]),
                                   np.uint8 if k in meta["image_keys"] else np.float32)
           for k in list(meta["image_keys"]) + list(meta["lowdim_keys"])}
    tree = jax.eval_shape(lambda o: init_policy(policy, jax.random.key(0), o,
                                                (int(meta["horizon"]), ACTION_DIM)), obs)
  except Exception as e:   # an architecture the config describes but that cannot be built
    msg = " ".join(str(e).split())[:300]
    raise ExportError(f"{where}: the policy it describes cannot be built "
                      f"({type(e).__name__}: {msg})") from None
  return flatten_params(tree, leaf=lambda v: v)


def _sha256(path: str) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      h.update(chunk)
  return h.hexdigest()


def read_exported(output_dir: str, *, batch_size: int = 1,
                  head_overrides: Optional[Mapping] = None) -> tuple[dict, dict]:
  """(params, meta) of an export, meta as in the checkpoint (normaliser included).

  Everything is checked before it is used (see the MAX_* caps above); any problem is an
  ExportError naming the file and the field or tensor."""
  if not os.path.isdir(output_dir):
    raise ExportError(f"{output_dir} is not a policy export (not a folder)")
  root = os.path.realpath(output_dir)
  cfg_path = os.path.join(output_dir, CONFIG_FILE)
  if not os.path.lexists(cfg_path):
    raise ExportError(f"{output_dir} is not a policy export (no {CONFIG_FILE})")
  cfg_real = _inside(root, CONFIG_FILE, cfg_path, "file")
  config = _read_json(cfg_real, "policy export config")
  if not isinstance(config, dict) or config.get("format") != EXPORT_FORMAT:
    raise ExportError(f"{cfg_path} is not a {EXPORT_FORMAT} file")
  version = config.get("format_version", 0)
  if not _is_int(version):
    _fail(cfg_path, "format_version", f"must be an integer, got {version!r}")
  if version > EXPORT_FORMAT_VERSION:
    raise ExportError(f"{output_dir} was written by a newer library (format version "
                      f"{version} > {EXPORT_FORMAT_VERSION})")
  pinfo = config.get("params")
  if not isinstance(pinfo, dict) or not isinstance(pinfo.get("sha256"), str):
    _fail(cfg_path, "params", "must be an object with 'file' and 'sha256'")
  params_path = _inside(root, pinfo.get("file"), cfg_path, "params.file")
  norm_path = _inside(root, NORM_FILE, os.path.join(output_dir, NORM_FILE), "file")
  meta = config.get("meta")
  if not isinstance(meta, dict):
    _fail(cfg_path, "meta", "must be an object")
  meta = dict(meta, normalizer=_read_json(norm_path, "normaliser"))
  validate_policy_meta(meta, cfg_path, batch_size=batch_size, head_overrides=head_overrides,
                       normalizer_source=os.path.join(output_dir, NORM_FILE))
  _check_summary(config, meta, cfg_path)
  expected, empty = expected_params(meta, cfg_path)
  try:
    digest = _sha256(params_path)
  except OSError as e:
    raise ExportError(f"{params_path}: cannot be read ({e.strerror or e})") from None
  if digest != pinfo["sha256"]:
    raise ExportError(f"{params_path} does not match the sha256 in {cfg_path} (damaged?)")
  flat, _ = load_safetensors(params_path, expected)
  return unflatten_params(flat, empty), meta


def _check_summary(config: Mapping, meta: Mapping, where: str) -> None:
  """The top-level description (what people and other tools read) must say what "meta"
  (what the loader uses) says."""
  for k in ("horizon", "n_obs_steps", "n_action_steps"):
    if k in config and config[k] != meta.get(k):
      _fail(where, k, f"{config[k]!r} disagrees with meta.{k} = {meta.get(k)!r}")
  obs = config.get("observations")
  if obs is not None:
    if not isinstance(obs, Mapping) or not isinstance(meta.get("obs_shapes"), Mapping) \
        or sorted(obs) != sorted(meta["obs_shapes"]):
      _fail(where, "observations", "its keys disagree with meta.obs_shapes")
    for k, v in obs.items():
      if not isinstance(v, Mapping) or v.get("shape") != meta["obs_shapes"][k] \
          or v.get("dtype") != (meta.get("obs_dtypes") or {}).get(k):
        _fail(where, f"observations.{k}", f"{v!r} disagrees with meta.obs_shapes/obs_dtypes")
  act = config.get("actions")
  if act is not None:
    want = [meta.get("n_action_steps"), ENV_ACTION_DIM]
    from decoupled_jax.training.policy import ACTION_DIM
    if not isinstance(act, Mapping) or act.get("shape") != want \
        or act.get("model_action_dim", ACTION_DIM) != ACTION_DIM:
      _fail(where, "actions", f"shape must be {want} with model_action_dim {ACTION_DIM}, got "
            f"{act!r}")


def load_exported(output_dir: str, batch_size: int = 1, seed: int = 0,
                  head_overrides: Optional[dict] = None):
  """A `PolicyRunner` from an export folder (nothing else is read)."""
  from decoupled_jax import inference
  params, meta = read_exported(output_dir, batch_size=batch_size,
                               head_overrides=head_overrides)
  return inference.runner_from_meta(params, meta, batch_size=batch_size, seed=seed,
                                    head_overrides=head_overrides)
