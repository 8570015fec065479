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
  lerobot    a LeRobot v2.1 directory (meta/info.json, data/chunk-*/episode_*.parquet,
             videos/...) written by `data/lerobot.py` or by LeRobot itself.

`key_map` maps a policy key to a dataset key; keys it does not mention use the format's
default (`default_key(format, key)`). Dataset keys are written in the format's own naming:
  robomimic  a name under `data/<demo>/obs/` ("agentview_rgb", "ee_pos" for LIBERO files), or
             a path relative to the demo group when it holds a '/' ("obs/ee_pos"); for
             `actions` a demo-level dataset name ("actions", "actions_abs").
  rlds       a path inside a step, '/'-separated ("observation/image", "action").
  lerobot    a column / feature name ("observation.state", "observation.images.top", "action").
Any dataset key may end in a slice of its last axis, `[a:b]`, `[a:]`, `[:b]` or `[i]`
(low-dimensional keys only), e.g. {"robot0_eef_pos": "observation.state[0:3]",
"robot0_gripper_qpos": "observation.state[6:8]"}; several policy keys may slice one dataset key.

Action conventions: only absolute world-frame end-effector targets are accepted; delta data
is refused with the conversion command and data that does not say is refused naming the
missing key (`robomimic_hdf5.check_action_convention`). `action_convention='absolute'` lets a
caller vouch for data that does not say; 'any' skips the check (stage-1 pairs, which use only
observations and the gripper column).

Every malformed input raises `robomimic_hdf5.DatasetError`, one line naming the file, the
demo/episode and the key.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Mapping, Sequence

import numpy as np

from decoupled_jax.data.episodes import EpisodeData
from decoupled_jax.data.robomimic_hdf5 import DatasetError, is_image_key

FORMATS = ("robomimic", "rlds", "lerobot")
ACTIONS = "actions"

_SLICE_RE = re.compile(r"^(?P<base>.+?)\[(?P<a>-?\d*)(?P<colon>:?)(?P<b>-?\d*)\]$")


@dataclasses.dataclass(frozen=True)
class KeySpec:
  """A dataset key plus an optional slice of the last axis."""
  base: str
  index: slice | int | None = None
  text: str = ""

  def apply(self, v: np.ndarray, where: str) -> np.ndarray:
    if self.index is None:
      return v
    if v.ndim < 2:
      raise DatasetError(f"{where}: key '{self.text}': cannot slice a per-frame scalar "
                         f"(shape {v.shape})")
    d = v.shape[-1]
    if isinstance(self.index, int):
      if not -d <= self.index < d:
        raise DatasetError(f"{where}: key '{self.text}': index {self.index} out of range for "
                           f"per-frame size {d}")
      return np.ascontiguousarray(v[..., self.index:self.index + 1] if self.index != -1
                                  else v[..., -1:])
    out = v[..., self.index]
    lo, hi, _ = self.index.indices(d)
    if out.shape[-1] == 0 or (self.index.stop is not None and abs(self.index.stop) > d):
      raise DatasetError(f"{where}: key '{self.text}': slice [{lo}:{self.index.stop}] out of "
                         f"range for per-frame size {d}")
    return np.ascontiguousarray(out)


def parse_key(text: str) -> KeySpec:
  """'name', 'name[a:b]', 'name[i]' -> KeySpec (slices act on the last axis)."""
  text = str(text).strip()
  m = _SLICE_RE.match(text)
  if not m:
    if "[" in text or "]" in text:
      raise ValueError(f"dataset key {text!r}: slices must look like name[a:b] or name[i]")
    return KeySpec(text, None, text)
  a, colon, b = m.group("a"), m.group("colon"), m.group("b")
  if not colon:
    if not a:
      raise ValueError(f"dataset key {text!r}: empty index")
    return KeySpec(m.group("base"), int(a), text)
  return KeySpec(m.group("base"), slice(int(a) if a else None, int(b) if b else None), text)


def default_key(fmt: str, key: str) -> str:
  """The dataset key a policy key maps to when `key_map` does not say (what our writers use)."""
  if fmt == "robomimic":
    return key
  if fmt == "rlds":
    from decoupled_jax.data import rlds
    return rlds.default_key(key)
  if fmt == "lerobot":
    from decoupled_jax.data import lerobot
    return lerobot.default_key(key)
  raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")


def _as_dict(key_map) -> dict[str, str]:
  if key_map is None:
    return {}
  items = key_map.items() if hasattr(key_map, "items") else dict(key_map).items()
  return {str(k): str(v) for k, v in items if v is not None and str(v) != ""}


def resolve_keys(fmt: str, keys: Sequence[str], key_map=None) -> dict[str, KeySpec]:
  """policy key -> KeySpec for `keys` (+ 'actions')."""
  km = _as_dict(key_map)
  out = {}
  for k in list(keys) + [ACTIONS]:
    spec = parse_key(km.get(k, default_key(fmt, k)))
    if spec.index is not None and is_image_key(k):
      raise ValueError(f"key_map[{k!r}] = {spec.text!r}: image keys cannot be sliced")
    out[k] = spec
  return out


def load_episodes(path: str, obs_keys: Sequence[str], *, format: str = "robomimic",  # noqa: A002
                  key_map: Mapping[str, str] | None = None, filter_key: str | None = None,
                  load_images: bool = True, action_convention: str | None = None,
                  lazy_images: bool = False) -> EpisodeData:
  """Load episodes of `path` (any of FORMATS) as `EpisodeData` keyed by policy keys.

  `filter_key`: robomimic mask name; for RLDS a recorded filter key or a split name; for
  LeRobot a recorded filter key (meta/info.json 'splits'). `load_images=False` skips image
  keys. `lazy_images` (robomimic HDF5 only) reads image frames from the file on demand
  (`data/lazy.py`) instead of loading them. See the module docstring for `key_map` and
  `action_convention`.
  """
  fmt = str(format or "robomimic")
  if fmt not in FORMATS:
    raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
  filter_key = filter_key or None
  keys = [k for k in dict.fromkeys(obs_keys) if load_images or not is_image_key(k)]
  specs = resolve_keys(fmt, keys, key_map)
  bases = list(dict.fromkeys(s.base for s in specs.values()))
  image_bases = [specs[k].base for k in keys if is_image_key(k)]
  action_base = specs[ACTIONS].base
  if fmt == "robomimic":
    from decoupled_jax.data import robomimic_hdf5
    raw = robomimic_hdf5.read_demos(path, {b: b for b in bases}, filter_key=filter_key,
                                    image_fields=image_bases, action_field=action_base,
                                    action_convention=action_convention,
                                    lazy_images=lazy_images)
  elif lazy_images and image_bases:
    raise DatasetError(f"{path}: reading images on demand (config.data.lazy_images) is "
                       f"supported for robomimic HDF5 files; convert with "
                       f"experiments/convert_dataset.py or load the images into memory")
  elif fmt == "rlds":
    from decoupled_jax.data import rlds
    raw = rlds.read_rlds(path, bases, filter_key=filter_key, image_fields=image_bases,
                         action_field=action_base, action_convention=action_convention)
  else:
    from decoupled_jax.data import lerobot
    raw = lerobot.read_lerobot(path, bases, filter_key=filter_key, image_fields=image_bases,
                               action_field=action_base, action_convention=action_convention)
  fields = {}
  for k, spec in specs.items():
    v = raw.fields[spec.base]
    fields[k] = spec.apply(v, f"{path}: every episode")
  act = fields[ACTIONS]
  if act.ndim != 2 or act.shape[-1] != 7:
    src = specs[ACTIONS].text
    raise DatasetError(f"{path}: key '{src}' (actions): expected 7-D env actions [pos, "
                       f"axis-angle, gripper] per frame, got shape {act.shape[1:]}")
  attrs = dict(raw.attrs)
  attrs["format"] = fmt
  attrs["key_map"] = {k: s.text for k, s in specs.items()}
  return EpisodeData(fields, raw.episode_ends.copy(), source=str(path), attrs=attrs)


def export_robomimic(input_path: str, output: str, *, to: str, filter_key: str | None = None,
                     num_demos: int | None = None, images: str = "video", crf: int = 18,
                     load_images: bool = True, overwrite: bool = False) -> str:
  """Export a robomimic HDF5 file (absolute actions, with observations) as RLDS (`to='rlds'`,
  `data/rlds.py`) or LeRobot v2.1 (`to='lerobot'`, `data/lerobot.py`).

  Every `obs/` key of the first demo is exported (images unless `load_images=False`), plus
  rewards/dones when every demo has them; demo names and masks are kept. `images` ('video' |
  'png') and `crf` apply to LeRobot. Returns the written directory (RLDS: the version dir).
  """
  import h5py

  from decoupled_jax.data import robomimic_hdf5 as rh
  if to not in ("rlds", "lerobot"):
    raise ValueError(f"to must be 'rlds' or 'lerobot', got {to!r}")
  with rh._open(input_path) as f:
    names = rh.demo_names(f, input_path, filter_key or None)
    rh.check_action_convention(rh.file_env_args(f, input_path), input_path,
                               file_convention=rh.file_action_convention(f), what="data attrs")
    if num_demos is not None:
      names = names[:int(num_demos)]
    g = f["data"][names[0]]
    if "obs" not in g:
      hint = f"; regenerate them with {rh.conversion_command(input_path)}" if "states" in g else ""
      raise DatasetError(f"{input_path}: data/{names[0]}: no observations (no 'obs' group){hint}")
    obs_keys = [k for k in g["obs"].keys() if isinstance(g["obs"][k], h5py.Dataset)]
    extra = [k for k in ("rewards", "dones") if all(k in f["data"][n] for n in names)]
    masks = {k: [m for m in (x.decode() if isinstance(x, bytes) else str(x)
                             for x in f["mask"][k][()]) if m in names]
             for k in (f["mask"].keys() if "mask" in f else [])}
  keys = [k for k in obs_keys if load_images or not is_image_key(k)]
  specs = {"actions": "actions", **{k: f"obs/{k}" for k in keys}, **{k: k for k in extra}}
  data = rh.read_demos(input_path, specs, image_fields=[k for k in keys if is_image_key(k)],
                       demos=names)
  if "dones" in data.fields:
    data.fields["dones"] = data.fields["dones"].reshape(-1)
  if "rewards" in data.fields:
    data.fields["rewards"] = data.fields["rewards"].reshape(-1)
  if to == "rlds":
    from decoupled_jax.data import rlds
    return rlds.export_rlds(data, output, masks=masks, source=input_path, overwrite=overwrite)
  from decoupled_jax.data import lerobot
  return lerobot.export_lerobot(data, output, masks=masks, source=input_path, images=images,
                                crf=crf, overwrite=overwrite)
