"""Self-contained policy exports: one folder that loads with the library alone.

    export_policy("workdirs/lift/checkpoints", "exports/lift")      # or experiments/export.py
    runner = load_exported("exports/lift")                          # a PolicyRunner
    actions = runner(obs_batch, seeds=..., steps=...)               # same as from the checkpoint

The folder (written to a temporary sibling and renamed into place, so it is complete or absent):
  params.safetensors  inference params (EMA + frozen leaves), one tensor per '/'-joined path
                      ('backbone/block_0/linear1/kernel'), in the safetensors file format.
                      Written with numpy alone (the format is an 8-byte header length, a
                      JSON header, then raw little-endian tensors), so no extra dependency;
                      readable by `safetensors.numpy.load_file`, by Rust/C++ runtimes and by
                      memory-mapping; no pickle.
  config.json         what the policy is: backbone (name, kwargs), head and sampler, horizons,
                      observation keys with per-frame shapes and dtypes, action layout, task,
                      source checkpoint and step; under "meta" the checkpoint's meta (minus the
                      normaliser), which is what the loader rebuilds the runner from.
  norm_stats.json     the observation/action normaliser (LimitsNormalizer.to_dict()).
  model_card.md       task, data, stage/mode, training steps, architecture, evaluation (when an
                      eval.json / summary.json sits beside the checkpoint directory), usage.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import logging
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
def _st_dtypes() -> dict:
  import ml_dtypes  # ships with jax
  return {"F64": np.float64, "F32": np.float32, "F16": np.float16,
          "BF16": ml_dtypes.bfloat16, "I64": np.int64, "I32": np.int32, "I16": np.int16,
          "I8": np.int8, "U64": np.uint64, "U32": np.uint32, "U16": np.uint16, "U8": np.uint8,
          "BOOL": np.bool_}


def flatten_params(tree: Mapping, prefix: str = "") -> tuple[dict[str, np.ndarray], list[str]]:
  """({'a/b/c': array}, [paths of empty dicts]) of a nested dict of arrays."""
  flat, empty = {}, []
  for k, v in tree.items():
    if not isinstance(k, str) or not k or "/" in k:
      raise ExportError(f"param key {prefix + str(k)!r} cannot be written ('/' or non-string)")
    path = prefix + k
    if isinstance(v, Mapping):
      if not v:
        empty.append(path)
      sub, sub_empty = flatten_params(v, path + "/")
      flat.update(sub)
      empty.extend(sub_empty)
    else:
      flat[path] = np.asarray(v)
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
  names = {np.dtype(v): k for k, v in _st_dtypes().items()}
  header: dict[str, Any] = {}
  if metadata:
    header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
  blobs, offset = [], 0
  for name in sorted(tensors):
    arr = np.asarray(tensors[name])
    if not arr.dtype.isnative:
      arr = arr.astype(arr.dtype.newbyteorder("="))
    if arr.dtype not in names:
      raise ExportError(f"param {name!r} has dtype {arr.dtype}, which safetensors cannot hold")
    data = np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
    header[name] = {"dtype": names[arr.dtype], "shape": list(arr.shape),
                    "data_offsets": [offset, offset + len(data)]}
    blobs.append(data)
    offset += len(data)
  head = json.dumps(header, separators=(",", ":")).encode()
  head += b" " * (-len(head) % 8)   # the reference writer pads the header to 8 bytes
  with open(path, "wb") as f:
    f.write(len(head).to_bytes(8, "little"))
    f.write(head)
    for b in blobs:
      f.write(b)
    f.flush()
    os.fsync(f.fileno())


def load_safetensors(path: str) -> tuple[dict[str, np.ndarray], dict[str, str]]:
  """(name -> array, metadata); arrays are copies in native byte order."""
  dtypes = _st_dtypes()
  with open(path, "rb") as f:
    raw = f.read()
  try:
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
  except (ValueError, UnicodeDecodeError) as e:
    raise ExportError(f"{path} is not a safetensors file ({e})") from None
  body = memoryview(raw)[8 + n:]
  metadata = header.pop("__metadata__", {}) or {}
  out = {}
  for name, info in header.items():
    dt = np.dtype(dtypes[info["dtype"]]).newbyteorder("<")
    lo, hi = info["data_offsets"]
    shape = tuple(info["shape"])
    if hi - lo != int(np.prod(shape, dtype=np.int64)) * dt.itemsize or hi > len(body):
      raise ExportError(f"{path}: tensor {name!r} is truncated or inconsistent with its shape")
    out[name] = np.frombuffer(body[lo:hi], dtype=dt).reshape(shape).astype(dt.newbyteorder("="))
  return out, metadata


# ----------------------------------------------------------------------------- config / card
def _sampler_summary(head: Mapping) -> dict:
  if head.get("type", "diffusion") == "flow":
    return {"type": "flow", "method": "euler", "num_steps": int(head.get("flow_num_steps", 10))}
  sampler = head.get("sampler", "ddpm")
  steps = head.get("num_inference_steps")
  if steps is None:
    steps = head.get("num_train_steps", 100) if sampler == "ddpm" else 10
  return {"type": "diffusion", "method": sampler, "num_steps": int(steps),
          "num_train_steps": int(head.get("num_train_steps", 100)),
          "prediction_type": head.get("prediction_type", "epsilon")}


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
    back, _ = load_safetensors(params_path)   # verify what is on disk, bit for bit
    for k, v in flat.items():
      if back[k].dtype != v.dtype or not np.array_equal(back[k], v):
        raise ExportError(f"param {k!r} did not read back identically from {params_path}")
    with open(params_path, "rb") as f:
      sha = hashlib.sha256(f.read()).hexdigest()
    config = _config_json(meta, checkpoint_dir, int(sum(v.size for v in flat.values())),
                          len(flat), sha)
    evaluation, eval_path = _find_evaluation(checkpoint_dir)
    for name, obj in ((CONFIG_FILE, config), (NORM_FILE, meta["normalizer"])):
      with open(os.path.join(tmp, name), "w") as f:
        json.dump(obj, f, indent=2)
    with open(os.path.join(tmp, CARD_FILE), "w") as f:
      f.write(_model_card(config, evaluation, eval_path))
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


def read_exported(output_dir: str) -> tuple[dict, dict]:
  """(params, meta) of an export, meta as in the checkpoint (normaliser included)."""
  cfg_path = os.path.join(output_dir, CONFIG_FILE)
  if not os.path.isfile(cfg_path):
    raise ExportError(f"{output_dir} is not a policy export (no {CONFIG_FILE})")
  with open(cfg_path) as f:
    config = json.load(f)
  if config.get("format") != EXPORT_FORMAT:
    raise ExportError(f"{cfg_path} is not a {EXPORT_FORMAT} file")
  if int(config.get("format_version", 0)) > EXPORT_FORMAT_VERSION:
    raise ExportError(f"{output_dir} was written by a newer library (format version "
                      f"{config['format_version']} > {EXPORT_FORMAT_VERSION})")
  with open(os.path.join(output_dir, NORM_FILE)) as f:
    normalizer = json.load(f)
  params_path = os.path.join(output_dir, config["params"]["file"])
  with open(params_path, "rb") as f:
    if hashlib.sha256(f.read()).hexdigest() != config["params"]["sha256"]:
      raise ExportError(f"{params_path} does not match the sha256 in {cfg_path} (damaged?)")
  flat, st_meta = load_safetensors(params_path)
  params = unflatten_params(flat, json.loads(st_meta.get("empty_dicts", "[]")))
  return params, dict(config["meta"], normalizer=normalizer)


def load_exported(output_dir: str, batch_size: int = 1, seed: int = 0,
                  head_overrides: Optional[dict] = None):
  """A `PolicyRunner` from an export folder (nothing else is read)."""
  from decoupled_jax import inference
  params, meta = read_exported(output_dir)
  return inference.runner_from_meta(params, meta, batch_size=batch_size, seed=seed,
                                    head_overrides=head_overrides)
