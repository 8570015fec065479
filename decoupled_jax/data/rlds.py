"""RLDS episodes through tensorflow-datasets, written and read WITHOUT TensorFlow.

`export_rlds(episodes, out_dir)` writes any `EpisodeData` (e.g. from `load_robomimic_hdf5`)
as a TFDS dataset in the RLDS layout, stored as array_record (`file_format='array_record'`),
so `tfds.builder_from_directory(dir).as_data_source()` reads it with numpy only (the platform
notes: without TF, array_record + Tensor features + data sources work; Image features and
tfrecord do not, so images are uint8 Tensor features, zlib-compressed).

    <out_dir>/<name>/<version>/{dataset_info.json, features.json, metadata.json,
                                <name>-train.array_record-00000-of-0000N}
    episode = {
      steps: Dataset({
        observation: {image (H,W,3) uint8       <- agentview_image
                      wrist_image (H,W,3) uint8 <- robot0_eye_in_hand_image
                      joint_state (7,)          <- robot0_joint_pos
                      state (9,)                = eef_pos(3) + eef_quat(4, xyzw) + gripper_qpos(2)
                      robot0_eef_pos, robot0_eef_quat, robot0_gripper_qpos, object, ... (float32,
                      every other field under its own name)},
        action (7,) float32    absolute [pos, axis-angle, gripper] world frame (README "Frames"),
        reward, discount float32, is_first, is_last, is_terminal bool,
        language_instruction text}),
      episode_metadata: {file_path, demo_name, episode_index (int64)}}

Feature names follow the Open-X / octo convention (image, wrist_image, state, joint_state,
action, language_instruction; `steps/...` + `episode_metadata/...`). Episodes keep their order
(`disable_shuffling`) and carry `episode_index`. `metadata.json` holds our section
`decoupled_jax`: env_args, action_convention ('absolute'), the policy-key -> feature map, the
robomimic filter keys (masks) as episode indices, the source file and the demo names.

`read_rlds` (used by `sources.load_episodes(path, format='rlds')`) returns fields keyed by step
paths ('observation/image', 'action', 'observation/state'), validating each like the HDF5
reader, with one-line `DatasetError`s naming the directory, episode and key. `path` may be the
version directory, the dataset directory or the export's `out_dir` (one dataset below it).
Before TFDS opens a directory, `check_feature_classes` refuses any feature class outside TFDS's
own (TFDS imports the module a features.json names: a dataset folder could carry code), and
every array_record shard is opened once so a truncated or corrupt file is named.
"""
from __future__ import annotations

import datetime
import glob
import json
import os
import re
import shutil
import tempfile
import types
from typing import Mapping, Sequence

import numpy as np

from decoupled_jax.data.episodes import EpisodeData, mask_indices
from decoupled_jax.data.robomimic_hdf5 import DatasetError, check_action_convention, check_field

FORMAT_TAG = "decoupled_jax.rlds.v1"
OBS_NAMES = {"agentview_image": "image", "robot0_eye_in_hand_image": "wrist_image",
             "robot0_joint_pos": "joint_state"}
STATE_PARTS = ("robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos")
NOT_OBS = ("actions", "rewards", "dones")
LANGUAGE = {"Lift": "lift the red cube", "Stack": "stack the red cube on the green cube",
            "NutAssemblySquare": "put the square nut on the square peg",
            "PickPlaceCan": "put the can into its bin"}


def default_key(key: str) -> str:
  """Step path that `export_rlds` writes a policy key to."""
  if key == "actions":
    return "action"
  return f"observation/{OBS_NAMES.get(key, key)}"


def _tfds():
  import tensorflow_datasets as tfds
  return tfds


def _snake(name: str) -> str:
  s = re.sub(r"[^0-9a-zA-Z]+", "_", name).strip("_").lower()
  return s if s and s[0].isalpha() else f"ds_{s}"


def _camel(snake: str) -> str:
  return "".join(p.capitalize() for p in snake.split("_")) or "Episodes"


def _features(tfds, obs_specs: Mapping[str, tuple[tuple, np.dtype]]):
  obs = {}
  for name, (shape, dtype) in obs_specs.items():
    if dtype == np.uint8 and len(shape) == 3:
      obs[name] = tfds.features.Tensor(shape=shape, dtype=np.uint8, encoding="zlib")
    else:
      obs[name] = tfds.features.Tensor(shape=shape, dtype=np.float32)
  return tfds.features.FeaturesDict({
      "steps": tfds.features.Dataset({
          "observation": tfds.features.FeaturesDict(obs),
          "action": tfds.features.Tensor(shape=(7,), dtype=np.float32),
          "reward": tfds.features.Scalar(dtype=np.float32),
          "discount": tfds.features.Scalar(dtype=np.float32),
          "is_first": tfds.features.Scalar(dtype=np.bool_),
          "is_last": tfds.features.Scalar(dtype=np.bool_),
          "is_terminal": tfds.features.Scalar(dtype=np.bool_),
          "language_instruction": tfds.features.Text(),
      }),
      "episode_metadata": tfds.features.FeaturesDict({
          "file_path": tfds.features.Text(),
          "demo_name": tfds.features.Text(),
          "episode_index": tfds.features.Scalar(dtype=np.int64),
      }),
  })


def _builder_class(name: str, version: str, features, metadata: dict, description: str,
                   episodes_fn):
  tfds = _tfds()

  def body(ns):
    ns["name"] = name
    ns["VERSION"] = tfds.core.Version(version)
    ns["RELEASE_NOTES"] = {version: "decoupled_jax export"}

    def _info(self):
      return tfds.core.DatasetInfo(builder=self, description=description, features=features,
                                   disable_shuffling=True,
                                   metadata=tfds.core.MetadataDict(metadata))

    def _split_generators(self, dl_manager):
      del dl_manager
      return {"train": self._generate_examples()}

    def _generate_examples(self):
      yield from episodes_fn()

    ns.update(_info=_info, _split_generators=_split_generators,
              _generate_examples=_generate_examples)

  return types.new_class(_camel(name), (tfds.core.GeneratorBasedBuilder,),
                         {"skip_registration": True}, body)


def export_rlds(episodes: EpisodeData, out_dir: str, *, name: str | None = None,
                version: str = "1.0.0", env_args: Mapping | None = None,
                language_instruction: str | None = None,
                masks: Mapping[str, Sequence[str]] | None = None, source: str | None = None,
                overwrite: bool = False, extra_metadata: Mapping | None = None) -> str:
  """Write `episodes` (fields: policy keys + 'actions' (N, 7) [+ 'rewards', 'dones']) as an
  RLDS array_record dataset under `out_dir`; returns the version directory.

  The write is atomic (TFDS prepares into `incomplete.*` and renames); an existing complete
  dataset is kept (returned as is) unless `overwrite`. `masks` maps filter keys to demo names
  (`episodes.attrs['demo_names']`). Actions must be absolute (`attrs['action_convention']`).
  """
  tfds = _tfds()
  attrs = dict(episodes.attrs)
  env_args = dict(env_args if env_args is not None else attrs.get("env_args") or {})
  conv = attrs.get("action_convention", "absolute")
  if conv != "absolute":
    raise DatasetError(f"{episodes.source}: refusing to export {conv!r} actions as RLDS; "
                       f"convert to absolute first")
  if "actions" not in episodes.fields or episodes.fields["actions"].shape[1:] != (7,):
    raise DatasetError(f"{episodes.source}: export needs 'actions' of shape (N, 7)")
  env_name = str(env_args.get("env_name", ""))
  name = _snake(name or (f"{env_name}_episodes" if env_name else "episodes"))
  version_dir = os.path.join(out_dir, name, version)
  if os.path.exists(os.path.join(version_dir, "dataset_info.json")):
    if not overwrite:
      return version_dir
    shutil.rmtree(version_dir)
  names = list(attrs.get("demo_names") or [f"demo_{i}" for i in range(episodes.num_episodes)])
  if len(names) != episodes.num_episodes:
    raise ValueError(f"{episodes.source}: {len(names)} demo names for {episodes.num_episodes} "
                     "episodes")
  lang = language_instruction if language_instruction is not None else LANGUAGE.get(
      env_name, env_name.lower())

  obs_fields = [k for k in episodes.fields if k not in NOT_OBS]
  obs_specs, feature_of = {}, {}
  for k in obs_fields:
    v = episodes.fields[k]
    fname = OBS_NAMES.get(k, k)
    if "/" in fname or fname in ("state",):
      raise ValueError(f"field name {k!r} cannot be an RLDS observation name")
    if v.dtype == np.uint8 and v.ndim == 4:
      obs_specs[fname] = (v.shape[1:], np.uint8)
    else:
      obs_specs[fname] = (v.shape[1:] if v.ndim > 1 else (1,), np.float32)
    feature_of[k] = f"observation/{fname}"
  with_state = all(k in episodes.fields for k in STATE_PARTS)
  if with_state:
    obs_specs["state"] = ((sum(episodes.fields[k].shape[-1] for k in STATE_PARTS),), np.float32)
  feature_of["actions"] = "action"

  filter_keys = mask_indices(masks or attrs.get("masks"), names)
  meta = {"decoupled_jax": {
      "format": FORMAT_TAG, "env_args": env_args, "action_convention": "absolute",
      "action_space": "absolute [pos(3), axis-angle(3), gripper] of the grip site, world frame",
      "obs_features": feature_of, "filter_keys": filter_keys, "demo_names": names,
      "source": str(source or episodes.source), "fps": 20,
      "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      **dict(extra_metadata or {})}}
  features = _features(tfds, obs_specs)
  starts, ends = episodes.episode_starts, episodes.episode_ends
  rewards = episodes.fields.get("rewards")
  dones = episodes.fields.get("dones")
  file_path = str(source or episodes.source)

  def episodes_fn():
    for i, (s, e) in enumerate(zip(starts, ends)):
      t = int(e - s)
      obs = {}
      for k in obs_fields:
        v = episodes.fields[k][s:e]
        obs[OBS_NAMES.get(k, k)] = (np.ascontiguousarray(v) if v.dtype == np.uint8 and v.ndim == 4
                                    else np.asarray(v, np.float32).reshape(t, -1))
      if with_state:
        obs["state"] = np.concatenate([np.asarray(episodes.fields[k][s:e], np.float32)
                                       for k in STATE_PARTS], axis=-1)
      last = np.arange(t) == t - 1
      rew = (np.asarray(rewards[s:e], np.float32).reshape(t) if rewards is not None
             else last.astype(np.float32))
      term = (np.asarray(dones[s:e]).reshape(t) > 0) if dones is not None else last
      steps = {"observation": obs,
               "action": np.asarray(episodes.fields["actions"][s:e], np.float32),
               "reward": rew, "discount": np.ones(t, np.float32),
               "is_first": np.arange(t) == 0, "is_last": last, "is_terminal": term,
               "language_instruction": [lang] * t}
      yield f"{i:08d}", {"steps": steps, "episode_metadata": {
          "file_path": file_path, "demo_name": names[i], "episode_index": i}}

  cls = _builder_class(name, version, features, meta,
                       f"{env_name or 'robot'} demonstrations exported by decoupled_jax "
                       f"({FORMAT_TAG})", episodes_fn)
  os.makedirs(out_dir, exist_ok=True)
  with tempfile.TemporaryDirectory(prefix="rlds_dl_") as dl:
    builder = cls(data_dir=out_dir, file_format="array_record")
    builder.download_and_prepare(download_dir=dl)
  return str(builder.data_path)


# ----------------------------------------------------------------------------- safety
# TFDS's own feature classes (tensorflow_datasets 4.9, `tensorflow_datasets.core.features`;
# `feature.Tensor` is its alias for old files). TFDS imports the module of any other class a
# features.json names, so a crafted dataset could run code when it is opened.
TFDS_FEATURE_CLASSES = frozenset(f"tensorflow_datasets.core.features.{c}" for c in (
    "audio_feature.Audio", "bounding_boxes.BBoxFeature", "class_label_feature.ClassLabel",
    "dataset_feature.Dataset", "feature.Tensor", "features_dict.FeaturesDict",
    "image_feature.Image", "labeled_image.LabeledImage", "scalar.Scalar",
    "sequence_feature.Sequence", "tensor_feature.Tensor", "text_feature.Text",
    "top_level_feature.TopLevelFeature", "translation_feature.Translation",
    "translation_feature.TranslationVariableLanguages", "video_feature.Video"))
# Keys that name a class: the proto JSON field (protobuf parses both spellings) and the legacy
# `{"type": ..., "content": ...}` form (TFDS imports any dotted 'type' there).
_CLASS_KEYS = ("pythonClassName", "python_class_name")
_STRUCTURE = {"featuresDict", "features_dict", "features", "sequence", "feature", "content",
              "jsonFeature", "json_feature", "json"}


class _Obj(list):
  """A JSON object as its (key, value) pairs, duplicate keys kept."""


def _load_pairs(text: str):
  return json.loads(text, object_pairs_hook=_Obj)


def _class_names(node, path: tuple = ()):
  """(feature path, class name) for every class a features tree names, at any depth and
  inside JSON-in-a-string (`jsonFeature`) too."""
  if isinstance(node, _Obj):
    for k, v in node:
      if k in _CLASS_KEYS or (k == "type" and isinstance(v, str) and "." in v):
        yield "/".join(path) or "<top>", v
      else:
        yield from _class_names(v, path if k in _STRUCTURE else path + (k,))
  elif isinstance(node, list):
    for v in node:
      yield from _class_names(v, path)
  elif isinstance(node, str) and node.lstrip()[:1] in ("{", "["):
    try:
      inner = _load_pairs(node)
    except ValueError:
      return
    yield from _class_names(inner, path)


def check_feature_classes(vdir: str) -> None:
  """DatasetError unless every feature class that features.json (and the `features` of
  dataset_info.json) names is one of TFDS's own; run before TFDS sees the directory."""
  for fname, section in (("features.json", None), ("dataset_info.json", "features")):
    p = os.path.join(vdir, fname)
    if not os.path.lexists(p):
      continue
    try:
      with open(p, encoding="utf-8") as f:
        tree = _load_pairs(f.read())
    except ValueError as e:
      raise DatasetError(f"{p}: not valid JSON ({e})") from e
    except OSError as e:
      raise DatasetError(f"{p}: cannot read ({type(e).__name__}: {e})") from e
    if section:
      tree = [v for k, v in tree if k == section] if isinstance(tree, _Obj) else []
    for where, name in _class_names(tree):
      if not isinstance(name, str) or name not in TFDS_FEATURE_CLASSES:
        shown = name if isinstance(name, str) else json.dumps(name)[:80]
        raise DatasetError(f"{p}: feature '{where}' names class {shown!r}, not one of "
                           f"TFDS's own feature classes; refusing to open the dataset (TFDS "
                           f"would import that module)")


def _shard_problem(path: str, expected: int) -> str | None:
  """Why an array_record shard cannot give `expected` records (None when it can)."""
  from array_record.python import array_record_module
  if not os.path.isfile(path):
    return "missing"
  reader = None
  try:
    reader = array_record_module.ArrayRecordReader(path, options="readahead_buffer_size:0",
                                                   file_reader_buffer_size=32768)
    n = reader.num_records() if reader.ok() else None
    if n is None:
      try:   # the reader keeps its reason to itself until asked for a record
        reader.read([0])
        why = "no readable record index"
      except Exception as e:  # noqa: BLE001
        why = str(e)
    elif n < expected:
      why = f"{n} records, dataset_info.json says {expected}"
    else:
      return None
  except Exception as e:  # noqa: BLE001  (the reader raises RuntimeError/ValueError/...)
    why = f"{type(e).__name__}: {e}"
  finally:
    if reader is not None:
      try:
        reader.close()
      except Exception:  # noqa: BLE001
        pass
  why = " ".join(why.split())
  return f"truncated or corrupt ({os.path.getsize(path)} bytes; {why})"


def _check_shards(builder, splits: Sequence[str]) -> list[list[tuple[int, str]]]:
  """Open every shard of `splits` once (DatasetError naming a missing, truncated or corrupt
  file); returns per split the (first episode, file) of each shard."""
  out = []
  for split in splits:
    starts, at = [], 0
    for fi in builder.info.splits[split].file_instructions:
      path = os.fspath(fi.filename)
      problem = _shard_problem(path, int(getattr(fi, "examples_in_shard", 0) or
                                          int(fi.skip) + int(fi.take)))
      if problem == "missing":
        raise DatasetError(f"{path}: array_record file of split {split!r} is missing")
      if problem:
        raise DatasetError(f"{path}: array_record file is {problem}")
      starts.append((at, path))
      at += int(fi.take)
    out.append(starts)
  return out


# ----------------------------------------------------------------------------- reading
def find_version_dir(path: str) -> str:
  """The TFDS version directory at/below `path` (dataset_info.json); DatasetError otherwise."""
  path = str(path)
  if not os.path.isdir(path):
    if os.path.exists(path):
      raise DatasetError(f"{path}: an RLDS dataset is a directory, not a file")
    raise FileNotFoundError(f"{path}: no such dataset directory")
  if os.path.isfile(os.path.join(path, "dataset_info.json")):
    return path
  found = sorted(set(os.path.dirname(p) for pat in ("*/dataset_info.json", "*/*/dataset_info.json")
                     for p in glob.glob(os.path.join(path, pat))))
  found = [d for d in found if "incomplete" not in os.path.basename(os.path.dirname(d))
           and "incomplete" not in os.path.basename(d)]
  if not found:
    raise DatasetError(f"{path}: no TFDS dataset (dataset_info.json) in it or in "
                       f"<name>/<version> below it")
  if len(found) > 1:
    raise DatasetError(f"{path}: several TFDS datasets below it ({found[:4]}); give one "
                       "version directory")
  return found[0]


def _get(step: Mapping, parts: Sequence[str]):
  v = step
  for p in parts:
    if not hasattr(v, "keys") or p not in v:
      return None
    v = v[p]
  return v


def _keys_of(step: Mapping, prefix: str = "") -> list[str]:
  out = []
  for k in step.keys():
    v = step[k]
    if hasattr(v, "keys"):
      out += _keys_of(v, f"{prefix}{k}/")
    else:
      out.append(f"{prefix}{k}")
  return out


def read_metadata(path: str) -> dict:
  """Our metadata section of an RLDS dataset ({} when written by someone else)."""
  vdir = find_version_dir(path)
  mp = os.path.join(vdir, "metadata.json")
  if not os.path.exists(mp):
    return {}
  try:
    return dict(json.load(open(mp)).get("decoupled_jax", {}))
  except (json.JSONDecodeError, AttributeError) as e:
    raise DatasetError(f"{mp}: not valid JSON ({e})") from e


def read_rlds(path: str, keys: Sequence[str], *, filter_key: str | None = None,
              image_fields: Sequence[str] = (), action_field: str = "action",
              action_convention: str | None = None) -> EpisodeData:
  """Episodes of an RLDS array_record dataset; fields keyed by the step paths in `keys`."""
  tfds = _tfds()
  path = str(path)
  vdir = find_version_dir(path)
  ours = read_metadata(vdir)
  check_feature_classes(vdir)
  try:
    builder = tfds.builder_from_directory(vdir)
  except Exception as e:  # noqa: BLE001  (tfds raises many kinds)
    raise DatasetError(f"{vdir}: not a readable TFDS dataset ({type(e).__name__}: {e})") from e
  fmt = getattr(builder.info, "file_format", None)
  fmt = str(getattr(fmt, "value", fmt) or "")
  if "array_record" not in fmt:
    raise DatasetError(f"{vdir}: stored as {fmt or 'unknown format'}; reading without "
                       f"TensorFlow needs file_format=array_record (re-export it)")
  if "steps" not in builder.info.features.keys():
    raise DatasetError(f"{vdir}: not an RLDS dataset (no 'steps' feature; has "
                       f"{sorted(builder.info.features.keys())})")
  env_args = dict(ours.get("env_args") or {})
  conv = check_action_convention(env_args, vdir, file_convention=ours.get("action_convention"),
                                 expected=action_convention,
                                 what="metadata.json decoupled_jax.env_args",
                                 declare="metadata.json: {\"decoupled_jax\": "
                                         "{\"action_convention\": \"absolute\"}}")
  splits = sorted(builder.info.splits.keys())
  filter_keys = dict(ours.get("filter_keys") or {})
  select = None
  if filter_key:
    if filter_key in filter_keys:
      use_splits, select = splits, set(int(i) for i in filter_keys[filter_key])
    elif filter_key in splits:
      use_splits = [filter_key]
    else:
      raise DatasetError(f"{vdir}: filter key {filter_key!r} not found (recorded filter keys: "
                         f"{sorted(filter_keys)}, splits: {splits})")
  else:
    use_splits = splits
  shards = _check_shards(builder, use_splits)
  sources = builder.as_data_source(split=use_splits)
  image_fields = set(image_fields)
  order = [action_field] + [k for k in keys if k != action_field]
  parts = {k: k.split("/") for k in order}
  recs = []   # (episode_index, demo_name, {key: array})
  for split, ds, starts in zip(use_splits, sources, shards):
    for j in range(len(ds)):
      try:
        ep = ds[j]
      except Exception as e:  # noqa: BLE001
        shard = next((p for at, p in reversed(starts) if at <= j), vdir)
        raise DatasetError(f"{shard}: split {split} episode {j}: cannot decode "
                           f"({type(e).__name__}: {e})") from e
      md = ep.get("episode_metadata", {}) if hasattr(ep, "get") else {}
      idx = int(md["episode_index"]) if "episode_index" in md else len(recs)
      if select is not None and idx not in select:
        continue
      dn = md.get("demo_name", None)
      dn = dn.decode() if isinstance(dn, bytes) else (str(dn) if dn is not None else
                                                      f"{split}[{j}]")
      where = f"{vdir}: episode {idx} ({dn})"
      steps = ep["steps"]
      n = len(steps)
      if n == 0:
        raise DatasetError(f"{where}: no steps")
      cols = {k: [] for k in order}
      first = steps[0]
      for k in order:
        if _get(first, parts[k]) is None:
          raise DatasetError(f"{where}: missing key '{k}' (available: {_keys_of(first)})")
      for s in range(n):
        st = steps[s]
        for k in order:
          cols[k].append(np.asarray(_get(st, parts[k])))
      arrays = {}
      for k in order:
        v = np.stack(cols[k])
        v = check_field(v, image=k in image_fields, what=f"{where}: key '{k}'")
        arrays[k] = v
      recs.append((idx, dn, arrays))
  if not recs:
    raise DatasetError(f"{vdir}: no episodes" + (f" in filter key {filter_key!r}"
                                                  if filter_key else ""))
  recs.sort(key=lambda r: r[0])
  for k in order:
    shapes = {r[2][k].shape[1:] for r in recs}
    if len(shapes) > 1:
      bad = next(r for r in recs if r[2][k].shape[1:] != recs[0][2][k].shape[1:])
      raise DatasetError(f"{vdir}: episode {bad[0]} ({bad[1]}): key '{k}': shape "
                         f"{bad[2][k].shape[1:]} per step differs from episode {recs[0][0]}'s "
                         f"{recs[0][2][k].shape[1:]}")
  fields = {k: np.concatenate([r[2][k] for r in recs]) for k in order}
  lengths = [len(r[2][action_field]) for r in recs]
  names = [r[1] for r in recs]
  return EpisodeData(fields, np.cumsum(lengths), source=vdir,
                     attrs={"env_args": env_args, "demo_names": names, "total": int(sum(lengths)),
                            "action_convention": conv})
