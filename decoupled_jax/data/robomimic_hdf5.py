"""robomimic / MimicGen HDF5 files: atomic writer, resumable per-demo shards, validating reader.

Layout (the one robomimic and MimicGen write, and the one we write):

    data                       attrs: env_args (JSON {"env_name", "env_version", "type": 1,
                                      "env_kwargs": {...}}), total (sum of num_samples),
                                      action_convention ("absolute" | "delta", ours only)
    data/demo_N                attrs: num_samples (T) [, seed: reset seed of our generated demos]
                                      [, model_file: MJCF XML of the scene (robosuite files)]
    data/demo_N/actions        (T, 7) float  [pos, axis-angle, gripper]
    data/demo_N/states         (T, S) float  flattened MuJoCo state
    data/demo_N/rewards        (T,)
    data/demo_N/dones          (T,)
    data/demo_N/obs/<key>      (T, ...)  robot0_eef_pos (3), robot0_eef_quat (4, xyzw),
                               robot0_gripper_qpos (2), robot0_joint_pos (7), object (D),
                               agentview_image / robot0_eye_in_hand_image (T, H, W, 3) uint8
    mask/train, mask/valid     byte strings of demo names (robomimic filter keys)

robosuite's own `collect_human_demonstrations.py` writes the same `data/demo_N/{states,
actions}` without `obs/`, with the env in `data.attrs['env']`, the controller in
`data.attrs['env_info']` (JSON) and the scene in each demo's `model_file`; `file_env_args`
reads both layouts (`sim/replay.py` regenerates the observations).

Action convention. The policy consumes ABSOLUTE world-frame grip-site targets (README
"Frames"). Published robomimic/MimicGen/LIBERO files hold DELTA OSC commands. `controller_info`
reads the convention from env_args: robosuite <= 1.4 `controller_configs.control_delta`,
robosuite >= 1.5 `controller_configs.body_parts.<arm>.input_type` (+ `input_ref_frame`). Our
generated files record the latter explicitly (`input_type='absolute'`, `input_ref_frame=
'world'`, see `sim/robosuite_env.py: env_args()`); our writer also stamps
`data.attrs['action_convention']`, which is what decides when env_args carry no controller
(the writer's default is 'absolute': files written through this module hold the library's
actions). The reader refuses delta files with the conversion command, and files whose
convention is unknown naming the missing key.

Writes go to `<path>.tmp` and are moved into place with `os.replace`, so a reader never sees
a half-written file. Generation writes one shard per demo (`write_demo_shard`, each atomic and
append-only: existing shards are never rewritten) and merges them with `merge_shards`.

`load_robomimic_hdf5` returns an `EpisodeData` and raises `DatasetError` (one line naming the
file, demo and key) on: unreadable/empty files, no demos, missing keys, mismatched lengths,
NaN/inf actions, wrong image shapes/dtypes, inconsistent per-demo shapes, delta or unknown
action conventions.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Mapping, Sequence

import h5py
import numpy as np

from decoupled_jax.data.episodes import EpisodeData

IMAGE_SUFFIX = "_image"
CONVENTIONS = ("absolute", "delta")


class DatasetError(ValueError):
  """A dataset does not have the expected layout or content. The message is one line that
  names the file, the demo/episode and the key."""

  def __init__(self, message: str):
    super().__init__(" ".join(str(message).split()))


def check_field(v: np.ndarray, *, image: bool, what: str, expand_1d: bool = True) -> np.ndarray:
  """The per-episode checks every reader applies (one home for robomimic, RLDS, LeRobot):
  images uint8 (T, H, W, 3); low-dim numeric and finite, returned as float32 ((T,) -> (T, 1)
  with `expand_1d`). `what` names the file, episode and key in the one-line error."""
  if image:
    if v.ndim != 4 or v.shape[-1] != 3:
      raise DatasetError(f"{what}: wrong image shape {v.shape}, expected (T, H, W, 3)")
    if v.dtype != np.uint8:
      raise DatasetError(f"{what}: images must be uint8, got {v.dtype}")
    return v
  if v.dtype.kind not in "fiub":
    raise DatasetError(f"{what}: not numeric (dtype {v.dtype})")
  v = v.astype(np.float32)
  if v.ndim == 1 and expand_1d:
    v = v[:, None]
  bad = ~np.isfinite(v)
  if bad.any():
    rows = np.unique(np.nonzero(bad)[0])
    raise DatasetError(f"{what}: {int(bad.sum())} non-finite values (NaN/inf) at frames "
                       f"{rows[:10].tolist()}")
  return v


def is_image_key(key: str) -> bool:
  return key.endswith(IMAGE_SUFFIX)


def demo_sort_key(name: str):
  """demo_2 < demo_10 (numeric suffix order); names without a number sort last."""
  m = re.search(r"(\d+)$", name)
  return (0, int(m.group(1)), name) if m else (1, 0, name)


# ----------------------------------------------------------------------------- conventions
@dataclasses.dataclass(frozen=True)
class ControllerInfo:
  """What an env_args' arm controller says about the meaning of `actions`."""
  convention: str          # 'absolute' | 'delta'
  ref_frame: str           # 'world' | 'base' (robosuite <= 1.4 OSC always works in world)
  type: str                # e.g. 'OSC_POSE'
  config: Mapping          # the arm controller's own config dict
  key: str                 # where the convention was read, e.g. '...controller_configs.control_delta'
  layout: str              # 'robosuite<=1.4' | 'robosuite>=1.5'


class ConventionUnknown(DatasetError):
  """env_args do not say whether actions are absolute or delta (`missing_key` names what)."""

  def __init__(self, message: str, missing_key: str):
    super().__init__(message)
    self.missing_key = missing_key


def _env_kwargs(env_args: Mapping) -> tuple[Mapping, str]:
  if "_origin" in env_args:            # rebuilt from a robosuite collection file's env_info
    return env_args.get("env_kwargs") or env_args, str(env_args["_origin"])
  if "env_kwargs" in env_args or "controller_configs" not in env_args:
    return env_args.get("env_kwargs") or {}, "env_args.env_kwargs"
  return env_args, "env_args"          # a flat env_info-style dict


def controller_info(env_args: Mapping, where: str = "<dataset>") -> ControllerInfo:
  """The arm controller's action convention; raises `ConventionUnknown` naming the missing key."""
  kw, base = _env_kwargs(env_args or {})
  key = f"{base}.controller_configs"
  cc = kw.get("controller_configs")
  if not cc:
    raise ConventionUnknown(f"{where}: cannot tell absolute from delta actions: missing key "
                            f"'{key}'", key)
  if isinstance(cc, (list, tuple)):   # one config per robot
    cc, key = cc[0], key + "[0]"
  if "body_parts" in cc:               # robosuite >= 1.5 composite controller
    parts = cc["body_parts"] or {}
    arms, akey = (parts["arms"], key + ".body_parts.arms") if "arms" in parts else (
        parts, key + ".body_parts")
    names = [n for n in ("right", "left") if n in arms] or [
        n for n, v in arms.items() if isinstance(v, Mapping) and "type" in v]
    if not names:
      raise ConventionUnknown(f"{where}: cannot tell absolute from delta actions: no arm under "
                              f"'{akey}' (has {sorted(arms)})", akey + ".right")
    arm, akey = arms[names[0]], f"{akey}.{names[0]}"
    if "input_type" not in arm:
      raise ConventionUnknown(f"{where}: cannot tell absolute from delta actions: missing key "
                              f"'{akey}.input_type'", akey + ".input_type")
    conv = str(arm["input_type"])
    if conv not in CONVENTIONS:
      raise DatasetError(f"{where}: {akey}.input_type={conv!r} is neither 'absolute' nor 'delta'")
    # robosuite 1.5's OSC default reference frame is the robot base.
    return ControllerInfo(conv, str(arm.get("input_ref_frame", "base")), str(arm.get("type", "")),
                          arm, akey + ".input_type", "robosuite>=1.5")
  if "control_delta" not in cc:
    raise ConventionUnknown(f"{where}: cannot tell absolute from delta actions: missing key "
                            f"'{key}.control_delta'", key + ".control_delta")
  conv = "delta" if bool(cc["control_delta"]) else "absolute"
  return ControllerInfo(conv, "world", str(cc.get("type", "")), cc, key + ".control_delta",
                        "robosuite<=1.4")


def suggested_output(path: str, suffix: str = "_abs") -> str:
  root, ext = os.path.splitext(str(path))
  return f"{root}{suffix}{ext or '.hdf5'}"


def conversion_command(path: str, to: str = "absolute") -> str:
  out = suggested_output(path, "_abs" if to == "absolute" else f"_{to}")
  return (f"python experiments/convert_dataset.py --input={path} --output={out} --to={to}")


def check_action_convention(env_args: Mapping, path: str, *, file_convention: str | None = None,
                            expected: str | None = None, what: str = "env_args",
                            declare: str | None = None) -> str:
  """Accept only absolute world-frame end-effector actions (returns 'absolute').

  `file_convention`: a format-level record (our `action_convention` attribute / metadata),
  used when env_args carry no controller. `expected`: None = the data must say it is absolute;
  'absolute' = the caller vouches for absolute actions when the data says nothing (data that
  says 'delta' is still refused); 'any' = no check (returns what is known, or 'unknown').
  `declare` tells, in the refusal of unknown data, where a user can record the convention.
  """
  where = f"{path}: {what}"
  try:
    info = controller_info(env_args, where)
  except ConventionUnknown as e:
    if file_convention is not None:
      info = None
    elif expected in ("absolute", "any"):
      return "absolute" if expected == "absolute" else "unknown"
    else:
      declare = declare or "data.attrs['action_convention'] = 'absolute'"
      raise ConventionUnknown(f"{e}; if the actions are absolute world-frame grip-site targets "
                              f"[pos, axis-angle, gripper], record it ({declare}), else "
                              f"convert them", e.missing_key) from None
  if info is None:
    if expected == "any":
      return str(file_convention)
    if file_convention == "joint_pos":
      raise DatasetError(f"{where}: the actions are joint positions (action_convention="
                         f"'joint_pos'), not end-effector targets; train on them with "
                         f"config.benchmark='dataset' and config.robot.action_space='joint_pos'")
    if file_convention not in CONVENTIONS:
      raise DatasetError(f"{where}: action_convention={file_convention!r} is neither 'absolute' "
                         f"nor 'delta'")
    conv, key, frame, ctype = file_convention, "action_convention", "world", "OSC_POSE"
  else:
    conv, key, frame, ctype = info.convention, info.key, info.ref_frame, info.type
  if expected == "any":
    return conv
  src = str(path)
  if conv == "delta":
    raise DatasetError(f"{where}: actions are DELTA OSC commands ({key} says delta); the policy "
                       f"needs absolute world-frame end-effector targets. Convert first: "
                       f"{conversion_command(src)}")
  if frame != "world":
    raise DatasetError(f"{where}: absolute actions in the robot '{frame}' frame ({key}; "
                       f"input_ref_frame={frame!r}); the policy needs world-frame targets")
  if ctype and ctype not in ("OSC_POSE",):
    raise DatasetError(f"{where}: controller type {ctype!r} ({key}); the policy needs OSC_POSE "
                       f"end-effector pose actions")
  return "absolute"


# ----------------------------------------------------------------------------- writing
def _atomic_target(path: str) -> str:
  os.makedirs(os.path.dirname(os.path.abspath(path)) or ".", exist_ok=True)
  tmp = f"{path}.tmp"
  if os.path.exists(tmp):
    os.remove(tmp)
  return tmp


def _write_demo_group(grp: h5py.Group, demo: Mapping, compress_images: bool = True) -> int:
  actions = np.asarray(demo["actions"])
  t = int(actions.shape[0])
  grp.create_dataset("actions", data=actions)
  for k in ("states", "rewards", "dones"):
    if k in demo and demo[k] is not None:
      grp.create_dataset(k, data=np.asarray(demo[k]))
  for k, v in dict(demo.get("extra", {})).items():    # e.g. actions_delta of converted files
    grp.create_dataset(k, data=np.asarray(v))
  obs_grp = grp.create_group("obs")
  for k, v in demo["obs"].items():
    v = np.asarray(v)
    if v.shape[0] != t:
      raise DatasetError(f"obs '{k}' has {v.shape[0]} frames, actions have {t}")
    if is_image_key(k) and compress_images:
      obs_grp.create_dataset(k, data=v, chunks=(1,) + v.shape[1:], compression="gzip",
                             compression_opts=4)
    else:
      obs_grp.create_dataset(k, data=v)
  grp.attrs["num_samples"] = t
  if demo.get("seed") is not None:
    grp.attrs["seed"] = int(demo["seed"])
  for k, v in dict(demo.get("attrs", {})).items():
    grp.attrs[k] = v
  return t


def _stamp_convention(data: h5py.Group, env_args: Mapping | None, action_convention: str,
                      where: str) -> None:
  """Record the action convention; env_args' controller (when present) wins and must agree."""
  if action_convention not in CONVENTIONS:
    raise ValueError(f"action_convention must be one of {CONVENTIONS}, got {action_convention!r}")
  conv = action_convention
  try:
    info = controller_info(env_args or {}, where)
  except ConventionUnknown:
    info = None
  if info is not None:
    conv = info.convention
  data.attrs["action_convention"] = conv


def write_demo_shard(path: str, demo: Mapping, *, env_args: Mapping | None = None,
                     action_convention: str = "absolute") -> None:
  """Write one demo (dict with actions/states/rewards/dones/obs[/seed/attrs/extra]) atomically.

  A shard is a robomimic file with a single `data/demo_0`, so it is itself loadable.
  """
  tmp = _atomic_target(path)
  with h5py.File(tmp, "w") as f:
    data = f.create_group("data")
    t = _write_demo_group(data.create_group("demo_0"), demo)
    data.attrs["total"] = t
    if env_args is not None:
      data.attrs["env_args"] = json.dumps(env_args)
    _stamp_convention(data, env_args, action_convention, path)
  os.replace(tmp, path)


def _split(names: Sequence[str], valid_fraction: float, seed: int = 0) -> dict[str, list[str]]:
  n = len(names)
  n_valid = int(round(n * valid_fraction))
  if valid_fraction > 0 and n >= 2:
    n_valid = max(1, n_valid)
  n_valid = min(n_valid, max(n - 1, 0))
  perm = np.random.default_rng(seed).permutation(n)
  valid = set(perm[:n_valid].tolist())
  return {"train": [names[i] for i in range(n) if i not in valid],
          "valid": [names[i] for i in range(n) if i in valid]}


def _write_masks(f: h5py.File, masks: Mapping[str, Sequence[str]]):
  grp = f.require_group("mask")
  for k, names in masks.items():
    grp.create_dataset(k, data=np.array([n.encode() for n in names], dtype="S"))


def merge_shards(shard_paths: Sequence[str], out_path: str, env_args: Mapping | None = None, *,
                 valid_fraction: float = 0.1, names: Sequence[str] | None = None,
                 masks: Mapping[str, Sequence[str]] | None = None,
                 attrs: Mapping[str, str] | None = None,
                 action_convention: str = "absolute") -> int:
  """Merge single-demo shards (in the given order) into one robomimic file, atomically.

  Datasets are copied with h5py (streamed, compression kept). `env_args` defaults to the first
  shard's; demos are named `names` (default demo_0..N-1); `masks` default to a random
  train/valid split; `attrs` are extra string attributes of `data` (e.g. provenance).
  """
  if not shard_paths:
    raise DatasetError(f"{out_path}: no shards to merge")
  names = list(names) if names is not None else [f"demo_{i}" for i in range(len(shard_paths))]
  if len(names) != len(shard_paths) or len(set(names)) != len(names):
    raise ValueError(f"{out_path}: need {len(shard_paths)} distinct demo names, got {names}")
  tmp = _atomic_target(out_path)
  total = 0
  with h5py.File(tmp, "w") as f:
    data = f.create_group("data")
    for name, sp in zip(names, shard_paths):
      with h5py.File(sp, "r") as s:
        if env_args is None and "env_args" in s["data"].attrs:
          env_args = json.loads(s["data"].attrs["env_args"])
        src_names = sorted(s["data"].keys(), key=demo_sort_key)
        if len(src_names) != 1:
          raise DatasetError(f"{sp}: a shard must hold exactly one demo, found {src_names}")
        s.copy(s["data"][src_names[0]], data, name=name)
        total += int(data[name].attrs.get("num_samples", data[name]["actions"].shape[0]))
    data.attrs["total"] = total
    data.attrs["env_args"] = json.dumps(env_args or {})
    _stamp_convention(data, env_args, action_convention, out_path)
    for k, v in dict(attrs or {}).items():
      data.attrs[k] = v
    _write_masks(f, masks if masks is not None else _split(names, valid_fraction))
  os.replace(tmp, out_path)
  return len(names)


# ----------------------------------------------------------------------------- reading
def _open(path: str) -> h5py.File:
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path}: no such dataset file")
  if os.path.getsize(path) == 0:
    raise DatasetError(f"{path}: empty file (0 bytes)")
  try:
    return h5py.File(path, "r")
  except OSError as e:
    raise DatasetError(f"{path}: not a readable HDF5 file ({e})") from e


def list_demos(path_or_file, filter_key: str | None = None) -> list[str]:
  """Demo names (numeric order) of a file path or an open `h5py.File`."""
  if isinstance(path_or_file, h5py.File):
    return demo_names(path_or_file, path_or_file.filename, filter_key)
  with _open(path_or_file) as f:
    return demo_names(f, path_or_file, filter_key)


def demo_names(f: h5py.File, path: str, filter_key: str | None) -> list[str]:
  if "data" not in f:
    raise DatasetError(f"{path}: no 'data' group (empty file or not a robomimic dataset)")
  present = [k for k in f["data"].keys() if isinstance(f["data"][k], h5py.Group)]
  if filter_key:
    if "mask" not in f or filter_key not in f["mask"]:
      avail = sorted(f["mask"].keys()) if "mask" in f else []
      raise DatasetError(f"{path}: filter key 'mask/{filter_key}' not found (available: {avail})")
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in f["mask"][filter_key][()]]
    missing = [n for n in names if n not in f["data"]]
    if missing:
      raise DatasetError(f"{path}: mask/{filter_key} names demos not in 'data': {missing[:5]}")
  else:
    names = present
  names = sorted(names, key=demo_sort_key)
  if not names:
    what = f"in mask/{filter_key}" if filter_key else "under 'data'"
    raise DatasetError(f"{path}: no demos {what}")
  return names


def file_env_args(f: h5py.File, path: str = "<hdf5>") -> dict:
  """env_args of a robomimic file, or rebuilt from a robosuite collection file's env/env_info
  (then with '_origin' naming that attribute, for error messages)."""
  attrs = f["data"].attrs if "data" in f else {}
  try:
    if "env_args" in attrs:
      return json.loads(attrs["env_args"])
    if "env_info" in attrs or "env" in attrs:
      info = json.loads(attrs["env_info"]) if "env_info" in attrs else {}
      env_name = str(attrs["env"]) if "env" in attrs else info.get("env_name", "")
      kwargs = {k: v for k, v in info.items() if k != "env_name"}
      out = {"env_name": env_name, "type": 1, "env_kwargs": kwargs,
             "_origin": "data.attrs['env_info']"}
      if "repository_version" in attrs:
        out["env_version"] = str(attrs["repository_version"])
      return out
  except (json.JSONDecodeError, TypeError) as e:
    raise DatasetError(f"{path}: data attrs env_args/env_info are not valid JSON ({e})") from e
  return {}


def file_action_convention(f: h5py.File) -> str | None:
  v = f["data"].attrs.get("action_convention") if "data" in f else None
  return None if v is None else (v.decode() if isinstance(v, bytes) else str(v))


def _resolve(g: h5py.Group, spec: str, is_action: bool) -> str | None:
  """A dataset path in a demo group: 'a/b' as given; a plain name under obs/ first (actions:
  at the demo level first), then the other place."""
  cands = [spec] if "/" in spec else (
      [spec, f"obs/{spec}"] if is_action else [f"obs/{spec}", spec])
  for c in cands:
    if c in g and isinstance(g[c], h5py.Dataset):
      return c
  return None


def read_demos(path: str, specs: Mapping[str, str], *, filter_key: str | None = None,
               image_fields: Sequence[str] = (), action_field: str | None = "actions",
               action_convention: str | None = None,
               demos: Sequence[str] | None = None, lazy_images: bool = False) -> EpisodeData:
  """Read `specs` (output field -> dataset path in each demo group, see `_resolve`) of every
  demo into `EpisodeData`.

  `action_field` names the output field holding the env actions (checked finite and 2-D; it
  defines each demo's length); `image_fields` are checked (T, H, W, 3) uint8; other fields
  become float32 (1-D -> (T, 1)). `action_convention` as in `check_action_convention`.
  `lazy_images`: image fields become `data.lazy.LazyFrames` read from the file on demand
  (datasets larger than RAM); their shape and dtype are still checked here.
  attrs: env_args, demo_names, total, action_convention.
  """
  path = str(path)
  image_fields = set(image_fields)
  with _open(path) as f:
    names = list(demos) if demos is not None else demo_names(f, path, filter_key)
    env_args = file_env_args(f, path)
    conv = check_action_convention(env_args, path, expected=action_convention,
                                   file_convention=file_action_convention(f),
                                   what="data attrs")
    order = ([action_field] if action_field in specs else []) + [
        k for k in specs if k != action_field]
    chunks: dict[str, list[np.ndarray]] = {k: [] for k in order}
    lengths = []
    for name in names:
      if name not in f["data"]:
        raise DatasetError(f"{path}: data/{name}: no such demo")
      g = f["data"][name]
      where = f"{path}: data/{name}"
      t = None
      for k in order:
        spec = specs[k]
        rel = _resolve(g, spec, k == action_field)
        if rel is None:
          if k == action_field:
            raise DatasetError(f"{where}: missing key '{spec}' (has {sorted(g.keys())})")
          obs = g["obs"] if "obs" in g else None
          avail = sorted(obs.keys()) if obs is not None else []
          hint = ("; the file holds no observations: regenerate them with "
                  f"{conversion_command(path)}" if obs is None and "states" in g else "")
          shown = spec[4:] if spec.startswith("obs/") else spec
          raise DatasetError(f"{where}/obs: missing key '{shown}' (available: {avail}){hint}")
        if lazy_images and k in image_fields:
          ds = g[rel]
          if len(ds.shape) != 4 or ds.shape[-1] != 3 or ds.dtype != np.uint8:
            raise DatasetError(f"{where}/{rel}: expected uint8 images (T, H, W, 3), got "
                               f"{ds.dtype} {ds.shape}")
          if t is not None and ds.shape[0] != t:
            raise DatasetError(f"{where}/{rel}: mismatched lengths: {ds.shape[0]} frames vs "
                               f"{t} actions")
          if chunks[k] and chunks[k][0][1] != ds.shape[1:]:
            raise DatasetError(f"{where}/{rel}: shape {ds.shape[1:]} per frame differs from "
                               f"data/{names[0]}'s {chunks[k][0][1]} (wrong image shape)")
          chunks[k].append((ds.name, ds.shape[1:], ds.shape[0]))
          continue
        v = np.asarray(g[rel][()])
        if k == action_field:
          if v.ndim != 2 or v.shape[0] == 0:
            raise DatasetError(f"{where}/{rel}: expected shape (T>0, D), got {v.shape}")
          bad = ~np.isfinite(v)
          if bad.any():
            rows = np.unique(np.nonzero(bad)[0])
            raise DatasetError(f"{where}/{rel}: {int(bad.sum())} non-finite values (NaN/inf) "
                               f"at rows {rows[:10].tolist()}")
          t = v.shape[0]
          ns = g.attrs.get("num_samples", None)
          if ns is not None and int(ns) != t:
            raise DatasetError(f"{where}: mismatched lengths: attr num_samples={int(ns)} but "
                               f"'{rel}' has {t} rows")
          v = v.astype(np.float32)
        else:
          if t is not None and v.shape[0] != t:
            raise DatasetError(f"{where}/{rel}: mismatched lengths: {v.shape[0]} frames vs "
                               f"{t} actions")
          t = v.shape[0] if t is None else t
          v = check_field(v, image=k in image_fields, what=f"{where}/{rel}")
        if chunks[k] and chunks[k][0].shape[1:] != v.shape[1:]:
          raise DatasetError(f"{where}/{rel}: shape {v.shape[1:]} per frame differs from "
                             f"data/{names[0]}'s {chunks[k][0].shape[1:]}"
                             + (" (wrong image shape)" if k in image_fields else ""))
        chunks[k].append(v)
      if t is None or t == 0:
        raise DatasetError(f"{where}: empty demo (no frames)")
      lengths.append(t)
    total = int(f["data"].attrs.get("total", sum(lengths)))
  fields = {}
  for k, v in chunks.items():
    if lazy_images and k in image_fields:
      from decoupled_jax.data.lazy import LazyFrames
      fields[k] = LazyFrames(path, [c[0] for c in v], [c[2] for c in v], v[0][1])
    else:
      fields[k] = np.concatenate(v, axis=0)
  return EpisodeData(fields, np.cumsum(lengths), source=path,
                     attrs={"env_args": env_args, "demo_names": names, "total": total,
                            "action_convention": conv})


def load_robomimic_hdf5(path: str, obs_keys: Sequence[str], *, filter_key: str | None = None,
                        load_images: bool = True,
                        action_convention: str | None = None) -> EpisodeData:
  """Read demos of a robomimic/MimicGen file into `EpisodeData`.

  Fields: every key of `obs_keys` (read from `obs/<key>`; image keys are skipped when
  `load_images=False`) plus 'actions'. Low-dim fields become float32, images stay uint8
  (T, H, W, 3). Demos are in numeric order (demo_0, demo_1, ..., demo_10). attrs: env_args
  (dict), demo_names, total, action_convention. Files with delta (or undeclared) actions are
  refused with the conversion command (see module docstring; `action_convention`).
  """
  keys = [k for k in obs_keys if load_images or not is_image_key(k)]
  specs = {"actions": "actions"}
  specs.update({k: f"obs/{k}" for k in keys})
  return read_demos(path, specs, filter_key=filter_key,
                    image_fields=[k for k in keys if is_image_key(k)],
                    action_convention=action_convention)
