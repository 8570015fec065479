"""One entry point for every dataset format: `load_episodes(path, obs_keys, format=, key_map=)`.

Returns `EpisodeData` whose fields are named by the POLICY keys (robomimic names:
robot0_eef_pos, robot0_eef_quat (xyzw), robot0_gripper_qpos, robot0_joint_pos, object,
agentview_image, robot0_eye_in_hand_image) plus `actions` = 7-D absolute env actions
[pos(3), axis-angle(3), gripper] in our frame (README "Frames"), with attrs env_args (dict,
at least env_name when the source knows the task), demo_names, action_convention.

Formats (`format=`):
  robomimic  HDF5 (`data/robomimic_hdf5.py`); also robosuite collection files once converted.
  rlds       a TFDS array_record directory written by `data/rlds.py` (or any RLDS builder
             directory stored as array_record with Tensor features); read without TensorFlow.
  lerobot    a LeRobot v3.0 or v2.1 directory (meta/info.json names the version; data/,
             videos/...) written by `data/lerobot.py` or by LeRobot itself.

`key_map` maps a policy key to a dataset key; keys it does not mention, or map to '' (the
config's default: `config.data.key_map` lists every policy key), use the format's default
(`default_key(format, key, path)`: robomimic the same name; RLDS and LeRobot what our writers
use, for LeRobot the dataset's own recorded map or its version's naming). Dataset keys are
written in the format's own naming:
  robomimic  a name under `data/<demo>/obs/` ("agentview_rgb", "ee_pos" for LIBERO files), or
             a path relative to the demo group when it holds a '/' ("obs/ee_pos"); for
             `actions` a demo-level dataset name ("actions", "actions_abs").
  rlds       a path inside a step, '/'-separated ("observation/image", "action").
  lerobot    a column / feature name ("observation.state", "observation.images.top", "action").
Any dataset key may end in a slice of its last axis, `[a:b]`, `[a:]`, `[:b]` or `[i]`, or in
several of them, concatenated in order (`[0:6,7:13,6,13]`: a reordering; low-dimensional keys
only), e.g. {"robot0_eef_pos": "observation.state[0:3]",
"robot0_gripper_qpos": "observation.state[6:8]"}; several policy keys may slice one dataset key.

Action conventions: only absolute world-frame end-effector targets are accepted; delta data
is refused with the conversion command and data that does not say is refused naming the
missing key (`robomimic_hdf5.check_action_convention`) and the command that writes a copy
which says it (`convert(..., assume_actions=)`, experiments/convert_dataset.py
--assume_actions). `action_convention='absolute'` lets a caller vouch for data that does not
say; 'any' skips the check (stage-1 pairs, which use only observations and the gripper column).

Conversion between formats (`convert`, experiments/convert_dataset.py --to=hdf5|rlds|lerobot):
every observation field, the actions and rewards/dones when known, demo names, filter keys and
env_args; low-dim values keep their dtype where the target can hold it (HDF5, LeRobot v3.0;
RLDS and LeRobot v2.1 store float32), so hdf5 -> lerobot (PNG images) -> hdf5 is bit-exact.

Every malformed input raises `robomimic_hdf5.DatasetError`, one line naming the file, the
demo/episode and the key.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Mapping, Sequence

import numpy as np

from decoupled_jax.data.episodes import EpisodeData
from decoupled_jax.data.robomimic_hdf5 import ConventionUnknown, DatasetError, is_image_key

FORMATS = ("robomimic", "rlds", "lerobot")
TARGETS = ("hdf5", "rlds", "lerobot")         # `convert`'s outputs (hdf5 = robomimic layout)
ACTIONS = "actions"
EXTRA = ("rewards", "dones")

_KEY_RE = re.compile(r"^(?P<base>.+?)\[(?P<parts>[^\[\]]*)\]$")
_PART_RE = re.compile(r"^(?P<a>-?\d*)(?P<colon>:?)(?P<b>-?\d*)$")
Index = slice | int


@dataclasses.dataclass(frozen=True)
class KeySpec:
  """A dataset key plus an optional selection on the last axis: one slice or index, or several
  (comma-separated, concatenated in the order given, e.g. a reordering)."""
  base: str
  index: Index | tuple[Index, ...] | None = None
  text: str = ""

  def _one(self, v: np.ndarray, index: Index, where: str) -> np.ndarray:
    d = v.shape[-1]
    if isinstance(index, int):
      if not -d <= index < d:
        raise DatasetError(f"{where}: key '{self.text}': index {index} out of range for "
                           f"per-frame size {d}")
      return v[..., index:index + 1] if index != -1 else v[..., -1:]
    out = v[..., index]
    lo, hi, _ = index.indices(d)
    if out.shape[-1] == 0 or (index.stop is not None and abs(index.stop) > d):
      raise DatasetError(f"{where}: key '{self.text}': slice [{lo}:{index.stop}] out of "
                         f"range for per-frame size {d}")
    return out

  def apply(self, v: np.ndarray, where: str) -> np.ndarray:
    if self.index is None:
      return v
    if v.ndim < 2:
      raise DatasetError(f"{where}: key '{self.text}': cannot slice a per-frame scalar "
                         f"(shape {v.shape})")
    parts = self.index if isinstance(self.index, tuple) else (self.index,)
    return np.ascontiguousarray(np.concatenate([self._one(v, i, where) for i in parts], -1))


def parse_key(text: str) -> KeySpec:
  """'name', 'name[a:b]', 'name[i]', 'name[0:6,7:13,6,13]' -> KeySpec (selections act on the
  last axis; several are concatenated in order)."""
  text = str(text).strip()
  m = _KEY_RE.match(text)
  if not m:
    if "[" in text or "]" in text:
      raise ValueError(f"dataset key {text!r}: slices must look like name[a:b], name[i] or "
                       f"name[a:b,i,...]")
    return KeySpec(text, None, text)
  parts = []
  for part in m.group("parts").split(","):
    pm = _PART_RE.match(part.strip())
    if not pm or not (pm.group("a") or pm.group("colon")):
      raise ValueError(f"dataset key {text!r}: {part.strip()!r} is not a slice a:b or an index")
    a, colon, b = pm.group("a"), pm.group("colon"), pm.group("b")
    parts.append(int(a) if not colon else slice(int(a) if a else None, int(b) if b else None))
  index = parts[0] if len(parts) == 1 else tuple(parts)
  return KeySpec(m.group("base"), index, text)


def default_key(fmt: str, key: str, path: str | None = None) -> str:
  """The dataset key a policy key maps to when `key_map` does not say (what our writers use;
  LeRobot: the map the dataset at `path` records, else its version's naming)."""
  if fmt == "robomimic":
    return key
  if fmt == "rlds":
    from decoupled_jax.data import rlds
    return rlds.default_key(key)
  if fmt == "lerobot":
    from decoupled_jax.data import lerobot
    return lerobot.default_key(key, path)
  raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")


def _as_dict(key_map) -> dict[str, str]:
  if key_map is None:
    return {}
  items = key_map.items() if hasattr(key_map, "items") else dict(key_map).items()
  return {str(k): str(v) for k, v in items if v is not None and str(v) != ""}


def resolve_keys(fmt: str, keys: Sequence[str], key_map=None,
                 path: str | None = None) -> dict[str, KeySpec]:
  """policy key -> KeySpec for `keys` (+ 'actions'); '' in `key_map` = the default."""
  km = _as_dict(key_map)
  defaults = {}
  if fmt == "lerobot" and path is not None and any(k not in km for k in list(keys) + [ACTIONS]):
    from decoupled_jax.data import lerobot
    defaults = {k: lerobot.default_key(k, path) for k in list(keys) + [ACTIONS] if k not in km}
  out = {}
  for k in list(keys) + [ACTIONS]:
    spec = parse_key(km.get(k) or defaults.get(k) or default_key(fmt, k))
    if spec.index is not None and is_image_key(k):
      raise ValueError(f"key_map[{k!r}] = {spec.text!r}: image keys cannot be sliced")
    out[k] = spec
  return out


def _read(path, fmt, bases, filter_key, image_bases, action_base, action_convention,
          lazy_images) -> EpisodeData:
  if fmt == "robomimic":
    from decoupled_jax.data import robomimic_hdf5
    return robomimic_hdf5.read_demos(path, {b: b for b in bases}, filter_key=filter_key,
                                     image_fields=image_bases, action_field=action_base,
                                     action_convention=action_convention,
                                     lazy_images=lazy_images)
  if lazy_images and image_bases:
    raise DatasetError(f"{path}: reading images on demand (config.data.lazy_images) is "
                       f"supported for robomimic HDF5 files; convert with "
                       f"experiments/convert_dataset.py or load the images into memory")
  if fmt == "rlds":
    from decoupled_jax.data import rlds
    return rlds.read_rlds(path, bases, filter_key=filter_key, image_fields=image_bases,
                          action_field=action_base, action_convention=action_convention)
  from decoupled_jax.data import lerobot
  return lerobot.read_lerobot(path, bases, filter_key=filter_key, image_fields=image_bases,
                              action_field=action_base, action_convention=action_convention)


def convention_hint(e: ConventionUnknown, path: str, fmt: str) -> ConventionUnknown:
  """The refusal of data that does not say absolute or delta, naming the flag that writes a
  copy which says it (instead of editing the file)."""
  from decoupled_jax.data.robomimic_hdf5 import suggested_output
  base = str(e).split("; if the actions are")[0]
  to = "hdf5" if fmt == "robomimic" else fmt
  out = suggested_output(path, "_abs") if fmt == "robomimic" else f"{str(path).rstrip('/')}_abs"
  delta = (" (delta OSC actions: --to=absolute --assume_actions=delta relabels them)"
           if fmt == "robomimic" else "")
  return ConventionUnknown(
      f"{base}; if the actions are absolute world-frame grip-site targets [pos, axis-angle, "
      f"gripper], write a copy that says so: python experiments/convert_dataset.py "
      f"--input={path} --output={out} --to={to} --assume_actions=absolute{delta}",
      e.missing_key)


def load_episodes(path: str, obs_keys: Sequence[str], *, format: str = "robomimic",  # noqa: A002
                  key_map: Mapping[str, str] | None = None, filter_key: str | None = None,
                  load_images: bool = True, action_convention: str | None = None,
                  lazy_images: bool = False, joint_actions: int | None = None) -> EpisodeData:
  """Load episodes of `path` (any of FORMATS) as `EpisodeData` keyed by policy keys.

  `filter_key`: robomimic mask name; for RLDS a recorded filter key or a split name; for
  LeRobot a recorded filter key (meta/info.json 'splits'). `load_images=False` skips image
  keys. `lazy_images` (robomimic HDF5 only) reads image frames from the file on demand
  (`data/lazy.py`) instead of loading them. See the module docstring for `key_map` and
  `action_convention`.
  `joint_actions=n`: the actions are n-D absolute joint positions + gripper(s) (a
  `joint_pos` robot, `config.robot.action_space`), not end-effector targets: their width is
  checked instead of the 7-D layout and no absolute/delta declaration is needed.
  """
  fmt = str(format or "robomimic")
  if joint_actions is not None:
    action_convention = "any"
  if fmt not in FORMATS:
    raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
  filter_key = filter_key or None
  keys = [k for k in dict.fromkeys(obs_keys) if load_images or not is_image_key(k)]
  specs = resolve_keys(fmt, keys, key_map, path=path if fmt == "lerobot" else None)
  bases = list(dict.fromkeys(s.base for s in specs.values()))
  image_bases = [specs[k].base for k in keys if is_image_key(k)]
  action_base = specs[ACTIONS].base
  try:
    raw = _read(path, fmt, bases, filter_key, image_bases, action_base, action_convention,
                lazy_images)
  except ConventionUnknown as e:
    raise convention_hint(e, path, fmt) from None
  fields = {}
  for k, spec in specs.items():
    v = raw.fields[spec.base]
    fields[k] = spec.apply(v, f"{path}: every episode")
  act = fields[ACTIONS]
  if joint_actions is not None:
    if act.ndim != 2 or act.shape[-1] != int(joint_actions):
      raise DatasetError(f"{path}: key '{specs[ACTIONS].text}' (actions): expected "
                         f"{int(joint_actions)}-D joint-position actions (the robot's joints + "
                         f"grippers) per frame, got shape {act.shape[1:]}")
  elif act.ndim != 2 or act.shape[-1] != 7:
    src = specs[ACTIONS].text
    raise DatasetError(f"{path}: key '{src}' (actions): expected 7-D env actions [pos, "
                       f"axis-angle, gripper] per frame, got shape {act.shape[1:]}")
  attrs = dict(raw.attrs)
  attrs["format"] = fmt
  attrs["key_map"] = {k: s.text for k, s in specs.items()}
  return EpisodeData(fields, raw.episode_ends.copy(), source=str(path), attrs=attrs)


# ----------------------------------------------------------------------------- conversion
def detect_format(path: str) -> str:
  """'robomimic' (an HDF5 file), 'lerobot' (a directory with meta/info.json) or 'rlds' (a TFDS
  directory)."""
  import os
  path = str(path)
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path}: no such dataset file or directory")
  if os.path.isdir(path):
    if os.path.isfile(os.path.join(path, "meta", "info.json")):
      return "lerobot"
    from decoupled_jax.data import rlds
    try:
      rlds.find_version_dir(path)
    except DatasetError:
      raise DatasetError(f"{path}: neither a LeRobot dataset (meta/info.json) nor an RLDS one "
                         f"(dataset_info.json in it or in <name>/<version> below it)") from None
    return "rlds"
  import h5py
  if not h5py.is_hdf5(path):
    raise DatasetError(f"{path}: not an HDF5 file, nor a LeRobot / RLDS directory")
  return "robomimic"


def _refuse_delta(path: str, fmt: str, to: str, assume: str | None) -> DatasetError:
  from decoupled_jax.data.robomimic_hdf5 import conversion_command
  how = (f"relabel them first: {conversion_command(path)}"
         + (" --assume_actions=delta" if assume == "delta" else "")
         if fmt == "robomimic" else "only robomimic HDF5 files with simulator states can "
         "be relabelled (experiments/convert_dataset.py --to=absolute)")
  return DatasetError(f"{path}: actions are DELTA OSC commands; {to} exports hold absolute "
                      f"world-frame end-effector targets: {how}")


def decide_convention(env_args: Mapping, path: str, *, file_convention: str | None,
                      assume: str | None, what: str, fmt: str,
                      refuse_delta_for: str | None = None) -> str:
  """'absolute' | 'delta' of data being converted. `assume` ('absolute' | 'delta' | None)
  applies to data that does not say; data that says otherwise is refused. Delta data is
  refused when `refuse_delta_for` names the target format."""
  conv = _decide_convention(env_args, path, file_convention=file_convention, assume=assume,
                            what=what, fmt=fmt)
  if conv == "delta" and refuse_delta_for:
    raise _refuse_delta(path, fmt, refuse_delta_for, assume)
  return conv


def _decide_convention(env_args: Mapping, path: str, *, file_convention: str | None,
                       assume: str | None, what: str, fmt: str) -> str:
  from decoupled_jax.data.robomimic_hdf5 import check_action_convention
  if assume not in (None, "absolute", "delta"):
    raise ValueError(f"assume_actions must be 'absolute', 'delta' or None, got {assume!r}")
  conv = check_action_convention(env_args, path, file_convention=file_convention,
                                 expected="any", what=what)
  if conv == "unknown":
    if assume is None:
      try:
        check_action_convention(env_args, path, file_convention=file_convention, what=what)
      except ConventionUnknown as e:
        raise convention_hint(e, path, fmt) from None
    return assume
  if assume is not None and assume != conv:
    raise DatasetError(f"{path}: {what}: the data says its actions are {conv}; "
                       f"--assume_actions={assume} is only for data that does not say")
  if conv == "absolute":   # the frame and controller checks
    check_action_convention(env_args, path, file_convention=file_convention, what=what)
  return conv


def _raw_check(v: np.ndarray, what: str) -> np.ndarray:
  if v.dtype.kind not in "fiub":
    raise DatasetError(f"{what}: not numeric (dtype {v.dtype})")
  if v.dtype.kind == "f" and not np.isfinite(v).all():
    raise DatasetError(f"{what}: non-finite values (NaN/inf)")
  return v


def _read_hdf5_all(path: str, filter_key, num_demos, load_images, assume,
                   refuse_delta_for=None) -> EpisodeData:
  """Every obs field of a robomimic file (dtypes kept), actions, rewards/dones when every demo
  has them, demo names, masks and env_args."""
  import h5py

  from decoupled_jax.data import robomimic_hdf5 as rh
  with rh._open(path) as f:
    names = rh.demo_names(f, path, filter_key or None)
    env_args = rh.file_env_args(f, path)
    conv = decide_convention(env_args, path, file_convention=rh.file_action_convention(f),
                             assume=assume, what="data attrs", fmt="robomimic",
                             refuse_delta_for=refuse_delta_for)
    if num_demos is not None:
      names = names[:int(num_demos)]
    if not names:
      raise DatasetError(f"{path}: no demos" + (f" in mask {filter_key!r}" if filter_key else ""))
    g = f["data"][names[0]]
    if "obs" not in g:
      hint = (f"; regenerate them with {rh.conversion_command(path)}" if "states" in g else "")
      raise DatasetError(f"{path}: data/{names[0]}: no observations (no 'obs' group){hint}")
    obs_keys = [k for k in g["obs"].keys() if isinstance(g["obs"][k], h5py.Dataset)
                and (load_images or not is_image_key(k))]
    extra = [k for k in EXTRA if all(k in f["data"][n] for n in names)]
    masks = {k: [m for m in (x.decode() if isinstance(x, bytes) else str(x)
                             for x in f["mask"][k][()]) if m in names]
             for k in (f["mask"].keys() if "mask" in f else [])}
    out: dict[str, list] = {k: [] for k in [ACTIONS] + obs_keys + extra}
    lengths = []
    for n in names:
      g = f["data"][n]
      if ACTIONS not in g:
        raise DatasetError(f"{path}: data/{n}: missing key 'actions'")
      t = int(g[ACTIONS].shape[0])
      for k in out:
        src = g[k] if k in (ACTIONS,) + EXTRA else (g["obs"][k] if "obs" in g and k in g["obs"]
                                                     else None)
        where = f"{path}: data/{n}: key '{k}'"
        if src is None:
          raise DatasetError(f"{path}: data/{n}: missing key '{k}' (the first demo has it)")
        v = _raw_check(np.asarray(src[()]), where)
        if v.shape[:1] != (t,):
          raise DatasetError(f"{where}: {v.shape[0] if v.ndim else 0} frames, actions have {t}")
        if out[k] and out[k][0].shape[1:] != v.shape[1:]:
          raise DatasetError(f"{where}: shape {v.shape[1:]} per frame differs from the first "
                             f"demo's {out[k][0].shape[1:]}")
        out[k].append(v)
      lengths.append(t)
  fields = {k: np.concatenate(v) for k, v in out.items()}
  return EpisodeData(fields, np.cumsum(lengths), source=str(path),
                     attrs={"env_args": env_args, "demo_names": list(names), "masks": masks,
                            "action_convention": conv})


def _masks_from_indices(filter_keys: Mapping, all_names: Sequence[str],
                        kept: Sequence[str]) -> dict[str, list[str]]:
  keep = set(kept)
  out = {}
  for k, idx in dict(filter_keys or {}).items():
    out[k] = [all_names[int(i)] for i in idx
              if 0 <= int(i) < len(all_names) and all_names[int(i)] in keep]
  return out


def _read_lerobot_all(path, filter_key, load_images, assume,
                      refuse_delta_for=None) -> EpisodeData:
  from decoupled_jax.data import lerobot
  root, info, _, ours = lerobot._root_info(path)
  feats = dict(info.get("features") or {})
  cols = {k: c for k, c in lerobot.columns_of(root).items()
          if load_images or not is_image_key(k)}
  if ACTIONS not in cols:
    raise DatasetError(f"{root}: no action column (features: {sorted(feats)})")
  specs = {k: parse_key(c) for k, c in cols.items()}
  image_bases = [s.base for s in specs.values()
                 if feats.get(s.base, {}).get("dtype") in ("video", "image")]
  try:
    raw = lerobot.read_lerobot(root, list(dict.fromkeys(s.base for s in specs.values())),
                               filter_key=filter_key, image_fields=image_bases,
                               action_field=specs[ACTIONS].base, action_convention="any",
                               keep_dtype=True)
  except ConventionUnknown as e:
    raise convention_hint(e, root, "lerobot") from None
  a = dict(raw.attrs)
  a["action_convention"] = decide_convention(
      a["env_args"], root, file_convention=ours.get("action_convention"), assume=assume,
      what=f"{lerobot.OURS} env_args", fmt="lerobot", refuse_delta_for=refuse_delta_for)
  recorded = dict(ours.get("fields") or {})
  fields = {}
  for k, spec in specs.items():
    v = spec.apply(raw.fields[spec.base], f"{root}: every episode")
    if k in recorded:   # the writer's dtype and per-frame shape (lossless: values were upcast)
      v = v.astype(recorded[k]["dtype"]).reshape((len(v),) + tuple(recorded[k]["shape"]))
    elif k in EXTRA:
      v = v.reshape(len(v))
    fields[k] = v
  all_names = list(ours.get("demo_names") or [])
  a["masks"] = _masks_from_indices(ours.get("filter_keys"), all_names, a["demo_names"])
  return EpisodeData(fields, raw.episode_ends, source=root, attrs=a)


def _read_rlds_all(path, filter_key, load_images, assume,
                   refuse_delta_for=None) -> EpisodeData:
  from decoupled_jax.data import rlds
  ours = rlds.read_metadata(path)
  feature_of = dict(ours.get("obs_features") or {})
  if not feature_of:     # someone else's: every observation under its own name
    tfds = rlds._tfds()
    builder = tfds.builder_from_directory(rlds.find_version_dir(path))
    step = builder.info.features["steps"].feature
    inverse = {v: k for k, v in rlds.OBS_NAMES.items()}
    for name in step["observation"].keys():
      feature_of[inverse.get(name, name)] = f"observation/{name}"
    feature_of[ACTIONS] = "action"
  feature_of = {k: v for k, v in feature_of.items() if load_images or not is_image_key(k)}
  feature_of.update(rewards="reward", dones="is_terminal")
  image_paths = [v for k, v in feature_of.items() if is_image_key(k)]
  try:
    raw = rlds.read_rlds(path, list(dict.fromkeys(feature_of.values())), filter_key=filter_key,
                         image_fields=image_paths, action_field=feature_of[ACTIONS],
                         action_convention="any")
  except ConventionUnknown as e:
    raise convention_hint(e, path, "rlds") from None
  a = dict(raw.attrs)
  a["action_convention"] = decide_convention(
      a["env_args"], path, file_convention=ours.get("action_convention"), assume=assume,
      what="metadata.json decoupled_jax.env_args", fmt="rlds",
      refuse_delta_for=refuse_delta_for)
  fields = {k: raw.fields[v] for k, v in feature_of.items()}
  for k in EXTRA:
    fields[k] = fields[k].reshape(len(fields[k]))
  a["masks"] = _masks_from_indices(ours.get("filter_keys"), list(ours.get("demo_names") or []),
                                   a["demo_names"])
  return EpisodeData(fields, raw.episode_ends, source=str(path), attrs=a)


def read_all(path: str, *, input_format: str | None = None, filter_key: str | None = None,
             num_demos: int | None = None, load_images: bool = True,
             assume_actions: str | None = None,
             refuse_delta_for: str | None = None) -> EpisodeData:
  """Every field of a dataset in any format, keyed by policy names (+ actions, rewards, dones),
  with attrs env_args, demo_names, masks (filter key -> demo names), action_convention
  ('absolute' | 'delta', see `decide_convention`) [, tasks, fps]. Low-dim dtypes are kept
  where the format stores them (HDF5, LeRobot v3.0). `refuse_delta_for`: a target format
  that cannot hold delta actions (refused before any data is read)."""
  fmt = input_format or detect_format(path)
  if fmt not in FORMATS:
    raise ValueError(f"input format must be one of {FORMATS}, got {fmt!r}")
  if fmt == "robomimic":
    return _read_hdf5_all(path, filter_key, num_demos, load_images, assume_actions,
                          refuse_delta_for)
  data = (_read_lerobot_all if fmt == "lerobot" else _read_rlds_all)(
      path, filter_key or None, load_images, assume_actions, refuse_delta_for)
  if num_demos is not None and int(num_demos) < data.num_episodes:
    keep = list(range(int(num_demos)))
    sub = data.select_episodes(keep)
    names = [data.attrs["demo_names"][i] for i in keep]
    sub.attrs.update(demo_names=names, masks={k: [m for m in v if m in names]
                                              for k, v in data.attrs["masks"].items()})
    if data.attrs.get("tasks"):
      sub.attrs["tasks"] = [data.attrs["tasks"][i] for i in keep]
    data = sub
  return data


def write_hdf5(data: EpisodeData, path: str, *, overwrite: bool = False) -> str:
  """`data` (policy keys + actions [+ rewards, dones]) as a robomimic HDF5 file, atomically:
  demo names, masks, env_args and the action convention are kept."""
  import json
  import os

  import h5py

  from decoupled_jax.data import robomimic_hdf5 as rh
  if os.path.exists(path) and not overwrite:
    raise FileExistsError(f"{path}: exists; pass --overwrite to replace it")
  attrs = dict(data.attrs)
  names = list(attrs.get("demo_names") or [])
  if len(names) != data.num_episodes or len(set(names)) != len(names) or \
     any("/" in n or not n for n in names):
    names = [f"demo_{i}" for i in range(data.num_episodes)]
  env_args = dict(attrs.get("env_args") or {})
  tmp = rh._atomic_target(path)
  with h5py.File(tmp, "w") as f:
    grp = f.create_group("data")
    for i, name in enumerate(names):
      ep = data.episode(i)
      demo = {"actions": ep[ACTIONS], "obs": {k: v for k, v in ep.items()
                                             if k != ACTIONS and k not in EXTRA}}
      demo.update({k: ep[k] for k in EXTRA if k in ep})
      rh._write_demo_group(grp.create_group(name), demo)
    grp.attrs["total"] = data.num_frames
    grp.attrs["env_args"] = json.dumps(env_args)
    rh._stamp_convention(grp, env_args, str(attrs.get("action_convention", "absolute")), path)
    masks = {k: [m for m in v if m in names] for k, v in dict(attrs.get("masks") or {}).items()}
    if masks:
      rh._write_masks(f, masks)
  os.replace(tmp, path)
  return path


def convert(input_path: str, output: str, *, to: str, input_format: str | None = None,
            assume_actions: str | None = None, filter_key: str | None = None,
            num_demos: int | None = None, images: str = "video", crf: int = 18,
            load_images: bool = True, overwrite: bool = False, progress: bool = False,
            lerobot_version: str = "v3.0", **lerobot_kw) -> str:
  """Convert any dataset (`detect_format`) to `to` in TARGETS: 'hdf5' (robomimic layout),
  'rlds' (`data/rlds.py`) or 'lerobot' (`data/lerobot.py`; v3.0, or v2.1 with
  `lerobot_version`). `assume_actions` declares the convention of data that does not say;
  delta actions can only go to HDF5 (then --to=absolute relabels them by replaying states).
  `images` ('video' | 'png') and `crf` apply to LeRobot, `lerobot_kw` to `export_lerobot_v3`
  (chunks_size, data_files_size_in_mb, video_files_size_in_mb). Returns the written path."""
  if to not in TARGETS:
    raise ValueError(f"to must be one of {TARGETS}, got {to!r}")
  if lerobot_version not in ("v3.0", "v2.1"):
    raise ValueError(f"lerobot_version must be 'v3.0' or 'v2.1', got {lerobot_version!r}")
  fmt = input_format or detect_format(input_path)
  data = read_all(input_path, input_format=fmt, filter_key=filter_key, num_demos=num_demos,
                  load_images=load_images, assume_actions=assume_actions,
                  refuse_delta_for=None if to == "hdf5" else to)
  act = data.fields[ACTIONS]
  if act.ndim != 2 or act.shape[-1] != 7:
    raise DatasetError(f"{input_path}: actions: expected 7-D env actions [pos, axis-angle, "
                       f"gripper] per frame, got shape {act.shape[1:]}")
  masks = data.attrs.get("masks") or {}
  if to == "hdf5":
    return write_hdf5(data, output, overwrite=overwrite)
  if to == "rlds":
    from decoupled_jax.data import rlds
    return rlds.export_rlds(data, output, masks=masks, source=input_path, overwrite=overwrite)
  from decoupled_jax.data import lerobot
  if lerobot_version == "v2.1":
    return lerobot.export_lerobot(data, output, masks=masks, source=input_path, images=images,
                                  crf=crf, overwrite=overwrite, progress=progress)
  return lerobot.export_lerobot_v3(data, output, masks=masks, source=input_path, images=images,
                                   crf=crf, overwrite=overwrite, progress=progress,
                                   fps=int(data.attrs.get("fps") or 20), **lerobot_kw)
