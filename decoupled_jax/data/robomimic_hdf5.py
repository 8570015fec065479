"""robomimic / MimicGen HDF5 files: atomic writer, resumable per-demo shards, validating reader.

Layout (the one robomimic and MimicGen write, and the one we write):

    data                       attrs: env_args (JSON {"env_name", "env_version", "type": 1,
                                      "env_kwargs": {...}}), total (sum of num_samples)
    data/demo_N                attrs: num_samples (T) [, seed: reset seed of our generated demos]
    data/demo_N/actions        (T, 7) float  [pos, axis-angle, gripper]
    data/demo_N/states         (T, S) float  flattened MuJoCo state
    data/demo_N/rewards        (T,)
    data/demo_N/dones          (T,)
    data/demo_N/obs/<key>      (T, ...)  robot0_eef_pos (3), robot0_eef_quat (4, xyzw),
                               robot0_gripper_qpos (2), robot0_joint_pos (7), object (D),
                               agentview_image / robot0_eye_in_hand_image (T, H, W, 3) uint8
    mask/train, mask/valid     byte strings of demo names (robomimic filter keys)

Writes go to `<path>.tmp` and are moved into place with `os.replace`, so a reader never sees
a half-written file. Generation writes one shard per demo (`write_demo_shard`, each atomic and
append-only: existing shards are never rewritten) and merges them with `merge_shards`.

`load_robomimic_hdf5` returns an `EpisodeData` and raises `DatasetError` naming the file, demo
and key on: unreadable/empty files, no demos, missing keys, mismatched lengths, NaN/inf
actions, wrong image shapes/dtypes and inconsistent per-demo shapes.
"""
from __future__ import annotations

import json
import os
import re
from typing import Iterable, Mapping, Sequence

import h5py
import numpy as np

from decoupled_jax.data.episodes import EpisodeData

IMAGE_SUFFIX = "_image"


class DatasetError(ValueError):
  """A dataset file does not have the expected robomimic layout or content."""


def is_image_key(key: str) -> bool:
  return key.endswith(IMAGE_SUFFIX)


def demo_sort_key(name: str):
  m = re.search(r"(\d+)$", name)
  return (0, int(m.group(1)), name) if m else (1, 0, name)


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


def write_demo_shard(path: str, demo: Mapping, *, env_args: Mapping | None = None) -> None:
  """Write one demo (dict with actions/states/rewards/dones/obs[/seed]) atomically.

  A shard is a robomimic file with a single `data/demo_0`, so it is itself loadable.
  """
  tmp = _atomic_target(path)
  with h5py.File(tmp, "w") as f:
    data = f.create_group("data")
    t = _write_demo_group(data.create_group("demo_0"), demo)
    data.attrs["total"] = t
    if env_args is not None:
      data.attrs["env_args"] = json.dumps(env_args)
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


def write_robomimic_hdf5(path: str, demos: Iterable[Mapping], env_args: Mapping, *,
                         valid_fraction: float = 0.1,
                         masks: Mapping[str, Sequence[str]] | None = None) -> int:
  """Write demos as data/demo_0..N-1 atomically; returns the number of demos."""
  tmp = _atomic_target(path)
  names, total = [], 0
  with h5py.File(tmp, "w") as f:
    data = f.create_group("data")
    for i, demo in enumerate(demos):
      name = f"demo_{i}"
      total += _write_demo_group(data.create_group(name), demo)
      names.append(name)
    data.attrs["total"] = total
    data.attrs["env_args"] = json.dumps(env_args)
    _write_masks(f, masks if masks is not None else _split(names, valid_fraction))
  os.replace(tmp, path)
  return len(names)


def merge_shards(shard_paths: Sequence[str], out_path: str, env_args: Mapping | None = None, *,
                 valid_fraction: float = 0.1) -> int:
  """Merge single-demo shards (in the given order) into one robomimic file, atomically.

  Datasets are copied with h5py (streamed, compression kept). `env_args` defaults to the first
  shard's.
  """
  if not shard_paths:
    raise DatasetError(f"{out_path}: no shards to merge")
  tmp = _atomic_target(out_path)
  names, total = [], 0
  with h5py.File(tmp, "w") as f:
    data = f.create_group("data")
    for i, sp in enumerate(shard_paths):
      with h5py.File(sp, "r") as s:
        if env_args is None and "env_args" in s["data"].attrs:
          env_args = json.loads(s["data"].attrs["env_args"])
        src_names = sorted(s["data"].keys(), key=demo_sort_key)
        if len(src_names) != 1:
          raise DatasetError(f"{sp}: a shard must hold exactly one demo, found {src_names}")
        name = f"demo_{i}"
        s.copy(s["data"][src_names[0]], data, name=name)
        total += int(data[name].attrs.get("num_samples", data[name]["actions"].shape[0]))
        names.append(name)
    data.attrs["total"] = total
    data.attrs["env_args"] = json.dumps(env_args or {})
    _write_masks(f, _split(names, valid_fraction))
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


def list_demos(path: str, filter_key: str | None = None) -> list[str]:
  with _open(path) as f:
    return _demo_names(f, path, filter_key)


def _demo_names(f: h5py.File, path: str, filter_key: str | None) -> list[str]:
  if "data" not in f:
    raise DatasetError(f"{path}: no 'data' group (empty file or not a robomimic dataset)")
  present = [k for k in f["data"].keys() if isinstance(f["data"][k], h5py.Group)]
  if filter_key is not None:
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


def read_env_args(path: str) -> dict:
  with _open(path) as f:
    if "data" not in f or "env_args" not in f["data"].attrs:
      return {}
    return json.loads(f["data"].attrs["env_args"])


def load_robomimic_hdf5(path: str, obs_keys: Sequence[str], *, filter_key: str | None = None,
                        load_images: bool = True) -> EpisodeData:
  """Read demos of a robomimic/MimicGen file into `EpisodeData`.

  Fields: every key of `obs_keys` (image keys are skipped when `load_images=False`) plus
  'actions'. Low-dim fields become float32, images stay uint8 (T, H, W, 3). Demos are in
  numeric order (demo_0, demo_1, ..., demo_10). attrs: env_args (dict), demo_names, total.
  """
  keys = [k for k in obs_keys if load_images or not is_image_key(k)]
  with _open(path) as f:
    names = _demo_names(f, path, filter_key)
    chunks: dict[str, list[np.ndarray]] = {k: [] for k in ["actions", *keys]}
    lengths = []
    for name in names:
      g = f["data"][name]
      where = f"{path}: data/{name}"
      if "actions" not in g:
        raise DatasetError(f"{where}: missing key 'actions' (has {sorted(g.keys())})")
      act = np.asarray(g["actions"][()])
      if act.ndim != 2 or act.shape[0] == 0:
        raise DatasetError(f"{where}/actions: expected shape (T>0, D), got {act.shape}")
      bad = ~np.isfinite(act)
      if bad.any():
        rows = np.unique(np.nonzero(bad)[0])
        raise DatasetError(f"{where}/actions: {int(bad.sum())} non-finite values (NaN/inf) "
                           f"at rows {rows[:10].tolist()}")
      t = act.shape[0]
      ns = g.attrs.get("num_samples", None)
      if ns is not None and int(ns) != t:
        raise DatasetError(f"{where}: mismatched lengths: attr num_samples={int(ns)} but "
                           f"'actions' has {t} rows")
      chunks["actions"].append(act.astype(np.float32))
      obs = g["obs"] if "obs" in g else None
      for k in keys:
        if obs is None or k not in obs:
          avail = sorted(obs.keys()) if obs is not None else []
          raise DatasetError(f"{where}/obs: missing key '{k}' (available: {avail})")
        v = np.asarray(obs[k][()])
        if v.shape[0] != t:
          raise DatasetError(f"{where}/obs/{k}: mismatched lengths: {v.shape[0]} frames vs "
                             f"{t} actions")
        if is_image_key(k):
          if v.ndim != 4 or v.shape[-1] != 3:
            raise DatasetError(f"{where}/obs/{k}: wrong image shape {v.shape}, expected "
                               f"(T, H, W, 3)")
          if v.dtype != np.uint8:
            raise DatasetError(f"{where}/obs/{k}: images must be uint8, got {v.dtype}")
        else:
          v = v.astype(np.float32)
          if v.ndim == 1:
            v = v[:, None]
          if not np.all(np.isfinite(v)):
            raise DatasetError(f"{where}/obs/{k}: non-finite values (NaN/inf)")
        if chunks[k] and chunks[k][0].shape[1:] != v.shape[1:]:
          raise DatasetError(f"{where}/obs/{k}: shape {v.shape[1:]} per frame differs from "
                             f"data/{names[0]}'s {chunks[k][0].shape[1:]}"
                             + (" (wrong image shape)" if is_image_key(k) else ""))
        chunks[k].append(v)
      if chunks["actions"][0].shape[1:] != act.shape[1:]:
        raise DatasetError(f"{where}/actions: dim {act.shape[1]} differs from data/{names[0]}'s "
                           f"{chunks['actions'][0].shape[1]}")
      lengths.append(t)
    env_args = json.loads(f["data"].attrs["env_args"]) if "env_args" in f["data"].attrs else {}
    total = int(f["data"].attrs.get("total", sum(lengths)))
  fields = {k: np.concatenate(v, axis=0) for k, v in chunks.items()}
  return EpisodeData(fields, np.cumsum(lengths), source=str(path),
                     attrs={"env_args": env_args, "demo_names": names, "total": total})
