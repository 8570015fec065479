"""LeRobot datasets: v3.0 (what `lerobot` >= 0.4 reads and writes) and v2.1, written and read
with pyarrow + the ffmpeg of imageio-ffmpeg (no torch, no pandas). The reader detects the
version from meta/info.json `codebase_version`; `export_lerobot_v3` writes v3.0 (the
default of `sources.convert`), `export_lerobot` the older v2.1.

LeRobot v3.0 (`lerobot.datasets.LeRobotDataset` 0.4-0.6):

    meta/info.json            codebase_version 'v3.0', fps, features {name: {dtype, shape, names
                              [, info]}}, chunks_size, data_files_size_in_mb,
                              video_files_size_in_mb, data_path / video_path templates, totals
    meta/stats.json           {feature: {min, max, mean, std, count, q01, q10, q50, q90, q99}}
    meta/tasks.parquet        task_index, task (a pandas frame indexed by task)
    meta/episodes/chunk-000/file-000.parquet
                              one row per episode: episode_index, tasks, length,
                              data/{chunk,file}_index, dataset_{from,to}_index,
                              videos/<key>/{chunk_index, file_index, from_timestamp,
                              to_timestamp}, stats/<feature>/<stat>, meta/episodes/...
    meta/decoupled_jax.json   ours: env_args, action_convention, policy key -> column map with
                              each field's dtype and shape, filter keys, demo names, source
    data/chunk-000/file-000.parquet      many episodes back to back (one row group each); a
                              new file when one would pass data_files_size_in_mb, a new
                              chunk directory every chunks_size files
    videos/<key>/chunk-000/file-000.mp4  the episodes' frames back to back: an episode is the
                              [from_timestamp, to_timestamp) range of a shared file

v3.0 columns (LeRobot's standard names): action (7-D absolute [pos, axis-angle, gripper],
world frame), observation.state = eef_pos(3) + eef_quat(4, xyzw) + gripper_qpos(2) (or
eef_pos + eef_axis_angle(3) + gripper_qpos, LIBERO's 8-D state) when all parts are present,
observation.images.<camera> for <camera>_image, observation.environment_state for `object`,
observation.<key> for any other field, next.reward / next.done when known, and LeRobot's
timestamp, frame_index, episode_index, index, task_index. Low-dimensional columns keep the
source's float64 (else float32), so values round-trip bit for bit. Joint-position actions
(action_convention 'joint_pos') keep their width. `export_lerobot_v3(columns=,
feature_names=)` writes another robot's published naming instead (ALOHA: `data/aloha.py`).

LeRobot v2.1 (`LeRobotDataset` 0.3.x):

    meta/info.json            codebase_version 'v2.1', fps, features, data_path / video_path
    meta/episodes.jsonl       {"episode_index", "tasks": [str], "length"} per episode
    meta/episodes_stats.jsonl {"episode_index", "stats": {feature: {min, max, mean, std, count}}}
    meta/stats.json           the same over the whole dataset (v2.0 readers)
    meta/tasks.jsonl          {"task_index", "task"}
    meta/decoupled_jax.json   ours: env_args, action_convention, filter keys, demo names, source
    data/chunk-000/episode_000000.parquet
    videos/chunk-000/<feature>/episode_000000.mp4

v2.1 columns written for an `EpisodeData` of policy keys (the names of the paper's MimicGen
LeRobot datasets, spec §8): observation.image (agentview), observation.wrist_image
(eye-in-hand), observation.eePose = eef_pos(3) + eef_quat(4, xyzw) + gripper_qpos(2) (when
all three are present; otherwise each as observation.<key>), observation.joint_position,
observation.<key> for any other field (e.g. observation.object), actions (7-D absolute [pos,
axis-angle, gripper], world frame), next.reward / next.done when known, and LeRobot's
timestamp, frame_index, episode_index, index, task_index (float32 low-dim columns).

`default_key(key, path)` is the column a policy key is read from (`sources.load_episodes`
without a key_map entry): our metadata's map when the dataset has one, else the naming of
the dataset's version.

Images: `images='video'` (default, what LeRobot uses) encodes each camera of an episode as
H.264 (libx264, yuv420p, `crf`, keyframe every 2 frames, no B-frames) -- LOSSY. Tolerance,
measured on 482 84x84 robosuite renders (a real Lift demo, both cameras) at crf=18: mean
absolute error 1.4-1.7 levels (of 255), 99th percentile 8, max ~70 at sharp edges (crf=23:
mean 1.6-2.1, p99 10-12); tests assert a mean <= 3. LeRobot's own decoder (PyAV) returns the
same pixels as ours (checked bit for bit in the slow test). `images='png'` stores lossless PNGs
in the parquet ('image' features, bit-exact round trip, larger files). v3.0 videos are the
episodes' H.264 files joined without re-encoding (ffmpeg's concat demuxer, as LeRobot does).

Writes go to `<out_dir>.incomplete/` episode by episode (each file written to a temporary name
and renamed; a per-episode marker is written last), so an interrupted export resumes at the
first unfinished episode; the finished directory is renamed into place at the end (v3.0
joins the finished episodes into its shared files just before).
"""
from __future__ import annotations

import datetime
import hashlib
import io
import json
import os
import shutil
from typing import Mapping, Sequence

import numpy as np

from decoupled_jax import util
from decoupled_jax.data.episodes import EpisodeData, mask_indices
from decoupled_jax.data.robomimic_hdf5 import DatasetError, check_action_convention, check_field

CODEBASE_VERSION = "v2.1"
CHUNK_SIZE = 1000
DATA_PATH = "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet"
VIDEO_PATH = "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4"
OURS = "meta/decoupled_jax.json"
COLUMNS = {"agentview_image": "observation.image",
           "robot0_eye_in_hand_image": "observation.wrist_image",
           "robot0_joint_pos": "observation.joint_position",
           "actions": "actions", "rewards": "next.reward", "dones": "next.done"}
EEPOSE = "observation.eePose"
EEPOSE_PARTS = (("robot0_eef_pos", 0, 3), ("robot0_eef_quat", 3, 7),
                ("robot0_gripper_qpos", 7, 9))
NAMES = {EEPOSE: ["x", "y", "z", "qx", "qy", "qz", "qw", "gripper_left", "gripper_right"],
         "actions": ["x", "y", "z", "ax", "ay", "az", "gripper"],
         "observation.joint_position": [f"joint_{i}" for i in range(7)]}
DEFAULT_COLUMNS = ("timestamp", "frame_index", "episode_index", "index", "task_index")


def v21_column(key: str) -> str:
  """The v2.1 column (with a slice) a policy key is written to by `export_lerobot`."""
  for k, a, b in EEPOSE_PARTS:
    if key == k:
      return f"{EEPOSE}[{a}:{b}]"
  return COLUMNS.get(key, f"observation.{key}")


def _pa():
  import pyarrow as pa
  import pyarrow.parquet as pq
  return pa, pq


# ----------------------------------------------------------------------------- writing
def _write_json(path: str, obj, lines: bool = False) -> None:
  if lines:
    util.write_jsonl(path, obj, makedirs=True)
  else:
    util.write_json(path, obj, indent=2, makedirs=True)


def encode_video(frames: np.ndarray, path: str, fps: int, crf: int = 18,
                 pix_fmt: str = "yuv420p") -> dict:
  """uint8 (T, H, W, 3) -> H.264 mp4 at `path` (atomic). Returns LeRobot's video info."""
  import imageio_ffmpeg
  t, h, w, c = frames.shape
  if c != 3:
    raise ValueError(f"{path}: video frames must be RGB (T, H, W, 3), got {frames.shape}")
  if pix_fmt == "yuv420p" and (h % 2 or w % 2):
    raise ValueError(f"{path}: yuv420p needs even sizes, got {h}x{w} (use pix_fmt='yuv444p')")
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = path + ".tmp.mp4"
  writer = imageio_ffmpeg.write_frames(
      tmp, (w, h), fps=fps, codec="libx264", pix_fmt_in="rgb24", pix_fmt_out=pix_fmt,
      quality=None, macro_block_size=1, ffmpeg_log_level="error",
      output_params=["-crf", str(int(crf)), "-g", "2", "-bf", "0"])
  writer.send(None)
  for fr in frames:
    writer.send(np.ascontiguousarray(fr, np.uint8).tobytes())
  writer.close()
  os.replace(tmp, path)
  return {"video.fps": int(fps), "video.height": int(h), "video.width": int(w),
          "video.channels": 3, "video.codec": "h264", "video.pix_fmt": pix_fmt,
          "video.is_depth_map": False, "has_audio": False}


def decode_video(path: str, expect: int | None = None, where: str = "") -> np.ndarray:
  """mp4 -> uint8 (T, H, W, 3) with the ffmpeg of imageio-ffmpeg."""
  import imageio_ffmpeg
  if not os.path.exists(path):
    raise DatasetError(f"{where or path}: video file {path} is missing")
  try:
    gen = imageio_ffmpeg.read_frames(path, pix_fmt="rgb24")
    meta = gen.__next__()
    w, h = meta["size"]
    frames = [np.frombuffer(b, np.uint8).reshape(h, w, 3) for b in gen]
  except (RuntimeError, OSError, StopIteration) as e:
    raise DatasetError(f"{where or path}: cannot decode video {path} "
                       f"({type(e).__name__}: {e})") from e
  if expect is not None and len(frames) != expect:
    raise DatasetError(f"{where or path}: video {os.path.basename(path)} has {len(frames)} "
                       f"frames, the episode has {expect}")
  return np.stack(frames) if frames else np.zeros((0, 0, 0, 3), np.uint8)


def _png(img: np.ndarray) -> bytes:
  from PIL import Image
  buf = io.BytesIO()
  Image.fromarray(np.ascontiguousarray(img, np.uint8)).save(buf, format="PNG")
  return buf.getvalue()


def _stats(v: np.ndarray, image: bool) -> dict:
  if image:   # LeRobot: channel-first, scaled to [0, 1], stats per channel with shape (3, 1, 1)
    idx = np.round(np.linspace(0, len(v) - 1, min(len(v), 100))).astype(int)
    x = v[idx].astype(np.float64).transpose(0, 3, 1, 2) / 255.0
    ax = (0, 2, 3)
    st = {"min": x.min(ax, keepdims=True)[0], "max": x.max(ax, keepdims=True)[0],
          "mean": x.mean(ax, keepdims=True)[0], "std": x.std(ax, keepdims=True)[0]}
  else:
    x = v.astype(np.float64).reshape(len(v), -1)
    st = {"min": x.min(0), "max": x.max(0), "mean": x.mean(0), "std": x.std(0)}
  out = {k: np.asarray(s).tolist() for k, s in st.items()}
  out["count"] = [int(len(v))]
  return out


def _aggregate(per_episode: Sequence[dict]) -> dict:
  out = {}
  for key in per_episode[0]:
    ss = [s[key] for s in per_episode]
    n = np.array([s["count"][0] for s in ss], np.float64)
    mean = np.array([s["mean"] for s in ss], np.float64)
    std = np.array([s["std"] for s in ss], np.float64)
    w = (n / n.sum()).reshape((-1,) + (1,) * (mean.ndim - 1))
    m = (w * mean).sum(0)
    var = (w * (std ** 2 + (mean - m) ** 2)).sum(0)
    out[key] = {"min": np.min([s["min"] for s in ss], 0).tolist(),
                "max": np.max([s["max"] for s in ss], 0).tolist(),
                "mean": m.tolist(), "std": np.sqrt(var).tolist(), "count": [int(n.sum())]}
  return out


def _hf_feature(ft: dict, sequence: str = "Sequence") -> dict:
  """The `datasets` feature of a column: v2.1 files name fixed-length vectors 'Sequence',
  LeRobot 0.6's v3.0 files (`datasets` 4.x) 'List'."""
  if ft["dtype"] == "image":
    return {"_type": "Image"}
  if tuple(ft["shape"]) == (1,):
    return {"dtype": ft["dtype"], "_type": "Value"}
  return {"feature": {"dtype": ft["dtype"], "_type": "Value"}, "length": int(ft["shape"][0]),
          "_type": sequence}


def _field_feature(k: str, v: np.ndarray, images: str, dtype: str) -> dict:
  """The feature dict of one field's column: frames, a done flag or a numeric vector."""
  if v.dtype == np.uint8 and v.ndim == 4:
    return {"dtype": "video" if images == "video" else "image",
            "shape": list(v.shape[1:]), "names": ["height", "width", "channels"]}
  if k == "dones":
    return {"dtype": "bool", "shape": [1], "names": None}
  return {"dtype": dtype, "shape": [int(np.prod(v.shape[1:])) if v.ndim > 1 else 1],
          "names": None}


def _plan(episodes: EpisodeData, images: str):
  """column -> (source fields, feature dict) for every column but the defaults."""
  f = episodes.fields
  cols: dict[str, tuple[tuple[str, ...], dict]] = {}
  eepose = all(k in f for k, _, _ in EEPOSE_PARTS)
  if eepose and sum(f[k].shape[-1] for k, _, _ in EEPOSE_PARTS) != 9:
    eepose = False
  if eepose:
    cols[EEPOSE] = (tuple(k for k, _, _ in EEPOSE_PARTS),
                    {"dtype": "float32", "shape": [9], "names": NAMES[EEPOSE]})
  for k, v in f.items():
    if eepose and k in dict((p, 0) for p, _, _ in EEPOSE_PARTS):
      continue
    col = COLUMNS.get(k, f"observation.{k}")
    if "/" in col:
      raise ValueError(f"field {k!r}: LeRobot feature names cannot hold '/'")
    ft = _field_feature(k, v, images, "float32")
    if ft["dtype"] == "float32":
      ft["names"] = NAMES.get(col)
    cols[col] = ((k,), ft)
  return cols


def _v21_columns(cols) -> dict[str, str]:
  """policy key -> column (with a slice) of a v2.1 plan, as written."""
  out = {}
  for col, (src, _) in cols.items():
    if col == EEPOSE:
      out.update({k: f"{EEPOSE}[{a}:{b}]" for k, a, b in EEPOSE_PARTS})
    else:
      out[src[0]] = col
  return out


def _fingerprint(episodes: EpisodeData, cols, images: str, crf: int) -> str:
  h = hashlib.sha256()
  h.update(json.dumps({"cols": {c: [list(s), ft] for c, (s, ft) in cols.items()},
                       "ends": episodes.episode_ends.tolist(), "images": images,
                       "crf": crf}).encode())
  for k in sorted(episodes.fields):
    v = episodes.fields[k]
    if v.dtype != np.uint8:
      h.update(np.ascontiguousarray(v).tobytes())
  return h.hexdigest()


def _export_target(episodes: EpisodeData, out_dir: str, env_args, task, overwrite: bool):
  """(attrs, env_args, task) for a writer, after the checks both LeRobot writers share;
  None when `out_dir` already holds a finished dataset that is kept (no `overwrite`)."""
  attrs = dict(episodes.attrs)
  env_args = dict(env_args if env_args is not None else attrs.get("env_args") or {})
  conv = attrs.get("action_convention", "absolute")
  if conv not in ("absolute", "joint_pos"):
    raise DatasetError(f"{episodes.source}: refusing to export {conv!r} actions; convert to "
                       f"absolute first")
  act = episodes.fields.get("actions")
  if act is None or act.ndim != 2 or (conv == "absolute" and act.shape[1:] != (7,)):
    raise DatasetError(f"{episodes.source}: export needs 'actions' of shape (N, 7) (absolute "
                       f"end-effector targets) or (N, D) with action_convention 'joint_pos'")
  if os.path.exists(os.path.join(out_dir, "meta", "info.json")):
    if not overwrite:
      return None
    shutil.rmtree(out_dir)
  elif os.path.isdir(out_dir) and os.listdir(out_dir):
    raise FileExistsError(f"{out_dir}: exists and is not a LeRobot dataset; not overwriting it")
  elif os.path.exists(out_dir) and not os.path.isdir(out_dir):
    raise FileExistsError(f"{out_dir}: exists and is not a directory")
  from decoupled_jax.data.rlds import LANGUAGE
  env_name = str(env_args.get("env_name", ""))
  task = task if task is not None else LANGUAGE.get(env_name, env_name.lower() or "task")
  return attrs, env_args, task


def _staging(out_dir: str, fp: str) -> str:
  """`<out_dir>.incomplete` with its `.episodes/` folder, kept across a resumed export only
  when it was started for the same input and settings (`fp`); returns its path."""
  tmp = out_dir.rstrip("/") + ".incomplete"
  fp_path = os.path.join(tmp, ".fingerprint")
  if os.path.exists(tmp) and (not os.path.exists(fp_path) or open(fp_path).read() != fp):
    shutil.rmtree(tmp)   # left over from another input or settings: start over
  os.makedirs(os.path.join(tmp, ".episodes"), exist_ok=True)
  util.write_bytes(fp_path, fp.encode(), makedirs=True)
  return tmp


def _features(cols, sequence: str) -> tuple[dict, dict]:
  """(features incl. LeRobot's default columns, the parquet schema metadata) of a plan."""
  features = {c: dict(ft) for c, (_, ft) in cols.items()}
  features.update({
      "timestamp": {"dtype": "float32", "shape": [1], "names": None},
      "frame_index": {"dtype": "int64", "shape": [1], "names": None},
      "episode_index": {"dtype": "int64", "shape": [1], "names": None},
      "index": {"dtype": "int64", "shape": [1], "names": None},
      "task_index": {"dtype": "int64", "shape": [1], "names": None}})
  hf = {c: _hf_feature(ft, sequence) for c, ft in features.items() if ft["dtype"] != "video"}
  return features, {b"huggingface": json.dumps({"info": {"features": hf}}).encode()}


def export_lerobot(episodes: EpisodeData, out_dir: str, *, fps: int = 20,
                   env_args: Mapping | None = None, task: str | None = None,
                   images: str = "video", crf: int = 18,
                   masks: Mapping[str, Sequence[str]] | None = None, source: str | None = None,
                   robot_type: str = "panda", overwrite: bool = False,
                   progress: bool = False) -> str:
  """Write `episodes` (policy keys + 'actions' [+ 'rewards', 'dones']) as LeRobot v2.1 at
  `out_dir` (resumable, atomic; see the module docstring). Returns `out_dir`."""
  pa, pq = _pa()
  if images not in ("video", "png"):
    raise ValueError(f"images must be 'video' or 'png', got {images!r}")
  prep = _export_target(episodes, out_dir, env_args, task, overwrite)
  if prep is None:
    return out_dir
  attrs, env_args, task = prep
  names = list(attrs.get("demo_names") or [f"demo_{i}" for i in range(episodes.num_episodes)])
  cols = _plan(episodes, images)
  tmp = _staging(out_dir, _fingerprint(episodes, cols, images, crf))
  features, schema_meta = _features(cols, "Sequence")
  starts, ends = episodes.episode_starts, episodes.episode_ends
  it = range(episodes.num_episodes)
  if progress:
    from tqdm import tqdm
    it = tqdm(it, desc="lerobot", unit="episode")
  video_info: dict[str, dict] = {}
  for i in it:
    marker = os.path.join(tmp, ".episodes", f"episode_{i:06d}.json")
    if os.path.exists(marker):
      video_info.update(json.load(open(marker)).get("video_info", {}))
      continue
    s, e = int(starts[i]), int(ends[i])
    t = e - s
    chunk = i // CHUNK_SIZE
    arrays, stats, vinfo = {}, {}, {}
    for col, (src, ft) in cols.items():
      v = (np.concatenate([np.asarray(episodes.fields[k][s:e], np.float32).reshape(t, -1)
                           for k in src], -1) if len(src) > 1 else episodes.fields[src[0]][s:e])
      if ft["dtype"] == "video":
        vinfo[col] = encode_video(np.asarray(v), os.path.join(tmp, VIDEO_PATH.format(
            episode_chunk=chunk, video_key=col, episode_index=i)), fps, crf)
        stats[col] = _stats(np.asarray(v), True)
      elif ft["dtype"] == "image":
        arrays[col] = pa.array([{"bytes": _png(im), "path": None} for im in v],
                               pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
        stats[col] = _stats(np.asarray(v), True)
      elif ft["dtype"] == "bool":
        b = np.asarray(v).reshape(t) > 0
        arrays[col] = pa.array(b, pa.bool_())
        stats[col] = _stats(b.astype(np.float64)[:, None], False)
      else:
        x = np.asarray(v, np.float32).reshape(t, -1)
        arrays[col] = pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1), pa.float32()),
                                                        x.shape[1])
        stats[col] = _stats(x, False)
    frame = np.arange(t)
    ts = (frame / fps).astype(np.float32)
    arrays.update({"timestamp": pa.array(ts, pa.float32()),
                   "frame_index": pa.array(frame, pa.int64()),
                   "episode_index": pa.array(np.full(t, i), pa.int64()),
                   "index": pa.array(np.arange(s, e), pa.int64()),
                   "task_index": pa.array(np.zeros(t, np.int64), pa.int64())})
    for c, a in (("timestamp", ts), ("frame_index", frame), ("episode_index", np.full(t, i)),
                 ("index", np.arange(s, e)), ("task_index", np.zeros(t))):
      stats[c] = _stats(np.asarray(a, np.float64)[:, None], False)
    table = pa.table(arrays).replace_schema_metadata(schema_meta)
    ppath = os.path.join(tmp, DATA_PATH.format(episode_chunk=chunk, episode_index=i))
    os.makedirs(os.path.dirname(ppath), exist_ok=True)
    pq.write_table(table, ppath + ".tmp")
    os.replace(ppath + ".tmp", ppath)
    video_info.update(vinfo)
    _write_json(marker, {"length": t, "stats": stats, "video_info": vinfo})

  per_ep = [json.load(open(os.path.join(tmp, ".episodes", f"episode_{i:06d}.json")))
            for i in range(episodes.num_episodes)]
  for c, vi in video_info.items():
    features[c]["info"] = vi
  n_video = sum(1 for ft in features.values() if ft["dtype"] == "video")
  n = episodes.num_episodes
  info = {"codebase_version": CODEBASE_VERSION, "robot_type": robot_type,
          "total_episodes": n, "total_frames": int(episodes.num_frames), "total_tasks": 1,
          "total_videos": n_video * n, "total_chunks": (n - 1) // CHUNK_SIZE + 1,
          "chunks_size": CHUNK_SIZE, "fps": int(fps), "splits": {"train": f"0:{n}"},
          "data_path": DATA_PATH, "video_path": VIDEO_PATH if n_video else None,
          "features": features}
  _write_json(os.path.join(tmp, "meta", "info.json"), info)
  _write_json(os.path.join(tmp, "meta", "episodes.jsonl"),
              [{"episode_index": i, "tasks": [task], "length": p["length"]}
               for i, p in enumerate(per_ep)], lines=True)
  _write_json(os.path.join(tmp, "meta", "episodes_stats.jsonl"),
              [{"episode_index": i, "stats": p["stats"]} for i, p in enumerate(per_ep)],
              lines=True)
  _write_json(os.path.join(tmp, "meta", "stats.json"), _aggregate([p["stats"] for p in per_ep]))
  _write_json(os.path.join(tmp, "meta", "tasks.jsonl"), [{"task_index": 0, "task": task}],
              lines=True)
  filter_keys = mask_indices(masks or attrs.get("masks"), names)
  _write_json(os.path.join(tmp, OURS), {
      "format": "decoupled_jax.lerobot.v1", "env_args": env_args, "action_convention": "absolute",
      "action_space": "absolute [pos(3), axis-angle(3), gripper] of the grip site, world frame",
      "columns": _v21_columns(cols),
      "filter_keys": filter_keys, "demo_names": names, "source": str(source or episodes.source),
      "images": images, "crf": crf if images == "video" else None,
      "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")})
  shutil.rmtree(os.path.join(tmp, ".episodes"))
  os.remove(os.path.join(tmp, ".fingerprint"))
  if os.path.isdir(out_dir):
    os.rmdir(out_dir)          # empty (checked above)
  os.replace(tmp, out_dir)
  return out_dir


# ----------------------------------------------------------------------------- reading
def _load_json(path: str, where: str):
  if not os.path.exists(path):
    raise DatasetError(f"{where}: missing {os.path.relpath(path, where)}")
  try:
    with open(path) as f:
      if path.endswith(".jsonl"):
        return [json.loads(line) for line in f if line.strip()]
      return json.load(f)
  except json.JSONDecodeError as e:
    raise DatasetError(f"{where}: {os.path.relpath(path, where)} is not valid JSON ({e})") from e


def _column_array(col, t: int, where: str, key: str) -> np.ndarray:
  import pyarrow as pa
  import pyarrow.compute as pc
  col = col.combine_chunks() if hasattr(col, "combine_chunks") else col
  if pa.types.is_list(col.type) or pa.types.is_fixed_size_list(col.type) or \
     pa.types.is_large_list(col.type):
    lens = np.asarray(pc.list_value_length(col).to_numpy(zero_copy_only=False))
    if len(lens) and (lens != lens[0]).any():
      raise DatasetError(f"{where}: key '{key}': rows of different lengths {sorted(set(lens))[:4]}")
    flat = np.asarray(pc.list_flatten(col).to_numpy(zero_copy_only=False))
    return flat.reshape(t, -1)
  return np.asarray(col.to_numpy(zero_copy_only=False)).reshape(t, -1)


def _root_info(path: str) -> tuple[str, dict, str, dict]:
  """(root, info.json, codebase_version, our metadata or {}) of a LeRobot directory."""
  root = str(path).rstrip("/")
  if not os.path.isdir(root):
    if os.path.exists(root):
      raise DatasetError(f"{root}: a LeRobot dataset is a directory, not a file")
    raise FileNotFoundError(f"{root}: no such dataset directory")
  info = _load_json(os.path.join(root, "meta", "info.json"), root)
  if not isinstance(info, dict):
    raise DatasetError(f"{root}: meta/info.json is not a JSON object")
  version = str(info.get("codebase_version", ""))
  if not (version.startswith("v2") or version.startswith("v3")):
    raise DatasetError(f"{root}: meta/info.json codebase_version={version!r}; this reader "
                       f"handles LeRobot v2.0/v2.1/v3.0")
  for k in ("fps", "data_path"):
    if k not in info:
      raise DatasetError(f"{root}: meta/info.json: missing key '{k}'")
  ours = (_load_json(os.path.join(root, OURS), root)
          if os.path.exists(os.path.join(root, OURS)) else {})
  return root, info, version, dict(ours) if isinstance(ours, dict) else {}


def _select(root: str, info: dict, ours: dict, indices: list[int],
            filter_key: str | None) -> list[int]:
  if filter_key:
    fk = dict(ours.get("filter_keys") or {})
    splits = dict(info.get("splits") or {})
    if filter_key in fk:
      keep = set(int(i) for i in fk[filter_key])
    elif filter_key in splits:
      keep = set()
      for part in str(splits[filter_key]).split(","):
        a, b = part.split(":")
        keep.update(range(int(a), int(b)))
    else:
      raise DatasetError(f"{root}: filter key {filter_key!r} not found (recorded: "
                         f"{sorted(fk)}, splits: {sorted(splits)})")
    indices = [i for i in indices if i in keep]
  if not indices:
    raise DatasetError(f"{root}: no episodes" + (f" in filter key {filter_key!r}"
                                                  if filter_key else ""))
  return indices


def _checked(v: np.ndarray, *, image: bool, what: str, keep_dtype: bool) -> np.ndarray:
  """`check_field` (float32 low-dim) or, with `keep_dtype`, the same checks keeping the dtype."""
  if image or not keep_dtype:
    return check_field(v, image=image, what=what, expand_1d=False)
  if v.dtype.kind not in "fiub":
    raise DatasetError(f"{what}: not numeric (dtype {v.dtype})")
  if v.dtype.kind == "f" and not np.isfinite(v).all():
    check_field(v, image=False, what=what, expand_1d=False)   # raises, naming the frames
  return v


def _decode_png_rows(rows, where: str, key: str) -> np.ndarray:
  from PIL import Image
  try:
    return np.stack([np.asarray(Image.open(io.BytesIO(r["bytes"])).convert("RGB"))
                     for r in rows])
  except Exception as e:  # noqa: BLE001
    raise DatasetError(f"{where}: key '{key}': cannot decode image "
                       f"({type(e).__name__}: {e})") from e


def _stored_column(ft: dict, column, t: int, where: str, key: str) -> np.ndarray:
  """One episode's PNG frames or numbers from its parquet column."""
  if ft["dtype"] == "image":
    return _decode_png_rows(column.to_pylist(), where, key)
  return _column_array(column, t, where, key)


def _append_episode(out: dict, k: str, v: np.ndarray, where: str, *, image: bool,
                    keep_dtype: bool) -> None:
  """Checks one episode's field and appends it (the same per-frame shape as the first's)."""
  v = _checked(v, image=image, what=f"{where}: key '{k}'", keep_dtype=keep_dtype)
  if out[k] and out[k][0].shape[1:] != v.shape[1:]:
    raise DatasetError(f"{where}: key '{k}': shape {v.shape[1:]} per frame differs from "
                       f"the first episode's {out[k][0].shape[1:]}")
  out[k].append(v)


def read_lerobot(path: str, keys: Sequence[str], *, filter_key: str | None = None,
                 image_fields: Sequence[str] = (), action_field: str = "actions",
                 action_convention: str | None = None, keep_dtype: bool = False) -> EpisodeData:
  """Episodes of a LeRobot v2.x or v3.0 directory; fields keyed by the column names in `keys`.

  Low-dim columns come back float32 (the policy's dtype) unless `keep_dtype` (converters).
  attrs: env_args, demo_names, total, action_convention, fps, tasks (one per episode),
  lerobot_version.
  """
  root, info, version, ours = _root_info(path)
  feats = dict(info.get("features") or {})
  env_args = dict(ours.get("env_args") or {})
  conv = check_action_convention(env_args, root, file_convention=ours.get("action_convention"),
                                 expected=action_convention,
                                 what=f"{OURS} env_args",
                                 declare=(f"python experiments/convert_dataset.py --input={root} "
                                          f"--output={root}_abs --to=lerobot "
                                          f"--assume_actions=absolute writes a copy that says so"))
  image_fields = set(image_fields)
  order = [action_field] + [k for k in keys if k != action_field]
  for k in order:
    if k not in feats:
      raise DatasetError(f"{root}: meta/info.json: missing key '{k}' (features: "
                         f"{sorted(feats)})")
  if version.startswith("v3"):
    out, lengths, names, tasks = _read_v3(root, info, ours, order, filter_key, image_fields,
                                          keep_dtype)
  else:
    out, lengths, names, tasks = _read_v2(root, info, ours, order, filter_key, image_fields,
                                          keep_dtype)
  fields = {k: np.concatenate(v) for k, v in out.items()}
  return EpisodeData(fields, np.cumsum(lengths), source=root,
                     attrs={"env_args": env_args, "demo_names": names,
                            "total": int(sum(lengths)), "action_convention": conv,
                            "fps": int(info["fps"]), "tasks": tasks,
                            "lerobot_version": version})


def _read_v2(root, info, ours, order, filter_key, image_fields, keep_dtype):
  _, pq = _pa()
  feats = dict(info.get("features") or {})
  eps = _load_json(os.path.join(root, "meta", "episodes.jsonl"), root)
  eps = sorted(eps, key=lambda e: int(e["episode_index"]))
  indices = _select(root, info, ours, [int(e["episode_index"]) for e in eps], filter_key)
  lengths_meta = {int(e["episode_index"]): int(e.get("length", -1)) for e in eps}
  tasks_of = {int(e["episode_index"]): (list(e.get("tasks") or []) or [""])[0] for e in eps}
  names_all = list(ours.get("demo_names") or [])
  chunks_size = int(info.get("chunks_size", CHUNK_SIZE))
  out: dict[str, list[np.ndarray]] = {k: [] for k in order}
  lengths, names, tasks = [], [], []
  for ep in indices:
    name = names_all[ep] if ep < len(names_all) else f"episode_{ep:06d}"
    where = f"{root}: episode {ep} ({name})"
    chunk = ep // chunks_size
    ppath = os.path.join(root, info["data_path"].format(episode_chunk=chunk, episode_index=ep))
    if not os.path.exists(ppath):
      raise DatasetError(f"{where}: parquet file {os.path.relpath(ppath, root)} is missing")
    table_cols = [k for k in order if feats[k]["dtype"] != "video"]
    try:
      table = pq.read_table(ppath, columns=table_cols)
    except Exception as e:  # noqa: BLE001  (pyarrow raises several kinds)
      raise DatasetError(f"{where}: cannot read {os.path.relpath(ppath, root)} "
                         f"({type(e).__name__}: {str(e).splitlines()[0]})") from e
    t = table.num_rows
    if lengths_meta.get(ep, t) not in (-1, t):
      raise DatasetError(f"{where}: mismatched lengths: meta/episodes.jsonl says "
                         f"{lengths_meta[ep]} frames, the parquet has {t}")
    if t == 0:
      raise DatasetError(f"{where}: no frames")
    for k in order:
      ft = feats[k]
      if ft["dtype"] == "video":
        vt = info.get("video_path")
        if not vt:
          raise DatasetError(f"{where}: key '{k}' is a video but meta/info.json has no "
                             "video_path")
        v = decode_video(os.path.join(root, vt.format(episode_chunk=chunk, video_key=k,
                                                      episode_index=ep)), t, f"{where}: key '{k}'")
      else:
        v = _stored_column(ft, table.column(k), t, where, k)
      _append_episode(out, k, v, where, image=k in image_fields, keep_dtype=keep_dtype)
    lengths.append(t)
    names.append(name)
    tasks.append(tasks_of.get(ep, ""))
  return out, lengths, names, tasks


def _template(info: dict, key: str, where: str, **kw) -> str:
  try:
    return str(info[key]).format(**kw)
  except (KeyError, IndexError, ValueError) as e:
    raise DatasetError(f"{where}: meta/info.json {key}={info.get(key)!r} is not a v3.0 path "
                       f"template ({type(e).__name__}: {e})") from e


def _read_v3(root, info, ours, order, filter_key, image_fields, keep_dtype):
  import glob
  _, pq = _pa()
  feats = dict(info.get("features") or {})
  ep_files = sorted(glob.glob(os.path.join(root, "meta", "episodes", "*", "*.parquet")))
  if not ep_files:
    raise DatasetError(f"{root}: codebase_version='v3.0' (meta/info.json) but meta/episodes/ "
                       f"holds no parquet files")
  by_index: dict[int, dict] = {}
  for p in ep_files:
    rel = os.path.relpath(p, root)
    try:
      cols = [c for c in pq.ParquetFile(p).schema_arrow.names if not c.startswith("stats/")]
      rows = pq.read_table(p, columns=cols).to_pylist()
    except Exception as e:  # noqa: BLE001  (pyarrow raises several kinds)
      raise DatasetError(f"{root}: cannot read {rel} ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''})") from e
    for r in rows:
      if "episode_index" not in r:
        raise DatasetError(f"{root}: {rel}: missing column 'episode_index'")
      i = int(r["episode_index"])
      if i in by_index:
        raise DatasetError(f"{root}: {rel}: episode {i} is listed twice in meta/episodes/")
      by_index[i] = r
  indices = _select(root, info, ours, sorted(by_index), filter_key)
  names_all = list(ours.get("demo_names") or [])
  fps = float(info["fps"])
  table_cols = [k for k in order if feats[k]["dtype"] != "video"]
  out: dict[str, list[np.ndarray]] = {k: [] for k in order}
  lengths, names, tasks = [], [], []
  data_cache: tuple = ("", None, None)            # (path, table, episode_index column)
  video_cache: dict[str, tuple[str, np.ndarray]] = {}
  for ep in indices:
    r = by_index[ep]
    name = names_all[ep] if ep < len(names_all) else f"episode_{ep:06d}"
    where = f"{root}: episode {ep} ({name})"

    def need(col, r=r, where=where):
      if r.get(col) is None:
        raise DatasetError(f"{where}: meta/episodes/: missing column '{col}'")
      return r[col]
    dpath = os.path.join(root, _template(info, "data_path", where,
                                         chunk_index=int(need("data/chunk_index")),
                                         file_index=int(need("data/file_index"))))
    if data_cache[0] != dpath:
      if not os.path.exists(dpath):
        raise DatasetError(f"{where}: parquet file {os.path.relpath(dpath, root)} is missing")
      try:
        table = pq.read_table(dpath, columns=list(dict.fromkeys(table_cols + ["episode_index"])))
      except Exception as e:  # noqa: BLE001
        raise DatasetError(f"{where}: cannot read {os.path.relpath(dpath, root)} "
                           f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
                           ) from e
      data_cache = (dpath, table, np.asarray(table.column("episode_index").to_numpy()))
    _, table, epcol = data_cache
    rows_idx = np.nonzero(epcol == ep)[0]
    t = len(rows_idx)
    if t == 0:
      raise DatasetError(f"{where}: no frames in {os.path.relpath(dpath, root)}")
    if (np.diff(rows_idx) != 1).any():
      raise DatasetError(f"{where}: its rows in {os.path.relpath(dpath, root)} are not "
                         f"contiguous")
    if int(need("length")) != t:
      raise DatasetError(f"{where}: mismatched lengths: meta/episodes/ says {r['length']} "
                         f"frames, {os.path.relpath(dpath, root)} has {t}")
    sub = table.slice(int(rows_idx[0]), t)
    for k in order:
      ft = feats[k]
      if ft["dtype"] == "video":
        vt = info.get("video_path")
        if not vt:
          raise DatasetError(f"{where}: key '{k}' is a video but meta/info.json has no "
                             "video_path")
        vpath = os.path.join(root, _template(
            info, "video_path", where, video_key=k,
            chunk_index=int(need(f"videos/{k}/chunk_index")),
            file_index=int(need(f"videos/{k}/file_index"))))
        if video_cache.get(k, ("",))[0] != vpath:
          video_cache[k] = (vpath, decode_video(vpath, None, f"{where}: key '{k}'"))
        frames = video_cache[k][1]
        vfps = float((ft.get("info") or {}).get("video.fps") or fps)
        start = int(round(float(need(f"videos/{k}/from_timestamp")) * vfps))
        if start < 0 or start + t > len(frames):
          raise DatasetError(f"{where}: key '{k}': video {os.path.relpath(vpath, root)} has "
                             f"{len(frames)} frames, the episode needs frames {start} to "
                             f"{start + t - 1}")
        v = frames[start:start + t]
      else:
        v = _stored_column(ft, sub.column(k), t, where, k)
      _append_episode(out, k, v, where, image=k in image_fields, keep_dtype=keep_dtype)
    lengths.append(t)
    names.append(name)
    tasks.append((list(r.get("tasks") or []) or [""])[0])
  return out, lengths, names, tasks


# ----------------------------------------------------------------------------- column names
V3 = "v3.0"
V3_DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
V3_VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
V3_EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
STATE = "observation.state"
IMAGES = "observation.images."
# observation.state layouts, the first whose parts are all present wins: ours (robosuite) and
# LIBERO's 8-D state. (policy key, per-part names)
STATE_LAYOUTS = (
    (("robot0_eef_pos", ("x", "y", "z")), ("robot0_eef_quat", ("qx", "qy", "qz", "qw")),
     ("robot0_gripper_qpos", ("gripper_left", "gripper_right"))),
    (("robot0_eef_pos", ("x", "y", "z")), ("robot0_eef_axis_angle", ("ax", "ay", "az")),
     ("robot0_gripper_qpos", ("gripper_left", "gripper_right"))))
V3_COLUMNS = {"actions": "action", "object": "observation.environment_state",
              "rewards": "next.reward", "dones": "next.done"}
ACTION_NAMES = ["x", "y", "z", "ax", "ay", "az", "gripper"]
IMAGE_SUFFIX = "_image"


def v3_column(key: str) -> str:
  """The v3.0 column of a policy field (state parts aside: see `state_layout`)."""
  if key in V3_COLUMNS:
    return V3_COLUMNS[key]
  if key.endswith(IMAGE_SUFFIX) and len(key) > len(IMAGE_SUFFIX):
    return IMAGES + key[:-len(IMAGE_SUFFIX)]
  return f"observation.{key}"


def v3_field(column: str) -> str:
  """The policy field a v3.0 column holds (the inverse of `v3_column`), for datasets without
  our metadata: observation.images.top -> top_image, observation.foo -> foo, next.success ->
  next_success."""
  inverse = {c: k for k, c in V3_COLUMNS.items()}
  if column in inverse:
    return inverse[column]
  if column.startswith(IMAGES) and len(column) > len(IMAGES):
    return column[len(IMAGES):].replace(".", "_") + IMAGE_SUFFIX
  if column.startswith("observation.") and len(column) > len("observation."):
    return column[len("observation."):].replace(".", "_")
  return column.replace(".", "_")


def state_layout(widths: Mapping[str, int]):
  """The observation.state layout [(policy key, start, end, names)] for fields of the given
  per-frame widths, or None."""
  for layout in STATE_LAYOUTS:
    if all(widths.get(k) == len(n) for k, n in layout):
      out, a = [], 0
      for k, n in layout:
        out.append((k, a, a + len(n), list(n)))
        a += len(n)
      return out
  return None


def _v21_guess(feats: Mapping[str, dict]) -> dict[str, str]:
  inverse = {c: k for k, c in COLUMNS.items()}
  out = {}
  for col in feats:
    if col in DEFAULT_COLUMNS:
      continue
    if col == EEPOSE and list((feats[col].get("shape") or [0]))[0] == 9:
      out.update({k: f"{EEPOSE}[{a}:{b}]" for k, a, b in EEPOSE_PARTS})
    elif col in inverse:
      out[inverse[col]] = col
    elif col.startswith("observation."):
      out[col[len("observation."):].replace(".", "_")] = col
    else:
      out[col.replace(".", "_")] = col
  return out


def _v3_guess(feats: Mapping[str, dict]) -> dict[str, str]:
  out = {}
  for col, ft in feats.items():
    if col in DEFAULT_COLUMNS:
      continue
    if col == STATE:
      names = list(ft.get("names") or [])
      layout = next((lay for lay in STATE_LAYOUTS if names == [x for _, n in lay for x in n]),
                    None)
      if layout is not None:
        a = 0
        for k, n in layout:
          out[k] = f"{STATE}[{a}:{a + len(n)}]"
          a += len(n)
        continue
    out[v3_field(col)] = col
  return out


def columns_of(path: str) -> dict[str, str]:
  """policy key -> column (with a slice) of a LeRobot directory: our metadata's map when it
  has one, else the naming of its version (v3.0: observation.state split by its `names` when
  they are one of STATE_LAYOUTS; v2.1: observation.eePose split)."""
  root, info, version, ours = _root_info(path)
  feats = dict(info.get("features") or {})
  guess = _v3_guess(feats) if version.startswith("v3") else _v21_guess(feats)
  cols = {k: str(c) for k, c in dict(ours.get("columns") or {}).items()
          if str(c).split("[")[0] in feats}      # what the dataset really holds
  if not cols:
    return guess
  cols.update({k: guess[k] for k in ("rewards", "dones") if k in guess and k not in cols})
  return cols


def default_key(key: str, path: str | None = None) -> str:
  """The column a policy key is read from when `key_map` does not say: `columns_of(path)`,
  else the dataset version's naming (without a path: what `export_lerobot_v3` writes for our
  robosuite keys)."""
  if path is not None:
    root, info, version, _ = _root_info(path)
    cols = columns_of(root)
    if key in cols:
      return cols[key]
    return v3_column(key) if version.startswith("v3") else v21_column(key)
  for k, a, b, _ in state_layout({k: len(n) for k, n in STATE_LAYOUTS[0]}):
    if key == k:
      return f"{STATE}[{a}:{b}]"
  return v3_column(key)


# ----------------------------------------------------------------------------- v3.0 writing
QUANTILES = (("q01", 0.01), ("q10", 0.10), ("q50", 0.50), ("q90", 0.90), ("q99", 0.99))


def _stats_v3(v: np.ndarray, image: bool, max_images: int = 100) -> dict:
  """LeRobot's per-feature stats (min, max, mean, std, count, q01..q99); images channel-first
  in [0, 1] with shape (3, 1, 1), over at most `max_images` evenly spaced frames."""
  if image:
    idx = np.round(np.linspace(0, len(v) - 1, min(len(v), max_images))).astype(int)
    x = np.asarray(v[idx], np.float64).transpose(3, 0, 1, 2).reshape(v.shape[-1], -1) / 255.0
    red = lambda f: f(x)[:, None, None]  # noqa: E731   (C,) -> (C, 1, 1)
    st = {"min": red(lambda a: a.min(1)), "max": red(lambda a: a.max(1)),
          "mean": red(lambda a: a.mean(1)), "std": red(lambda a: a.std(1))}
    for name, q in QUANTILES:
      st[name] = red(lambda a, q=q: np.quantile(a, q, axis=1))
  else:
    x = np.asarray(v, np.float64).reshape(len(v), -1)
    st = {"min": x.min(0), "max": x.max(0), "mean": x.mean(0), "std": x.std(0)}
    for name, q in QUANTILES:
      st[name] = np.quantile(x, q, axis=0)
  out = {k: np.asarray(s).tolist() for k, s in st.items()}
  out["count"] = [int(len(v))]
  return out


def _plan_v3(episodes: EpisodeData, images: str, column_of: Mapping[str, str] | None = None,
             feature_names: Mapping[str, object] | None = None):
  """column -> (source fields, feature dict) for every column but LeRobot's defaults, and
  policy key -> column (with a slice). `column_of` (policy field -> column) overrides the
  naming of those fields (they then take no part in the observation.state layout);
  `feature_names` (column -> a feature's `names`) overrides the names written."""
  f = episodes.fields
  column_of = {str(k): str(c) for k, c in dict(column_of or {}).items() if k in f}
  widths = {k: int(np.prod(v.shape[1:])) for k, v in f.items()
            if v.ndim == 2 and k not in column_of}
  layout = state_layout(widths)
  cols: dict[str, tuple[tuple[str, ...], dict]] = {}
  columns: dict[str, str] = {}

  def low_dtype(keys):
    return "float64" if any(f[k].dtype == np.float64 for k in keys) else "float32"
  if "actions" in f:
    width = int(np.prod(f["actions"].shape[1:]))
    ee = episodes.attrs.get("action_convention", "absolute") != "joint_pos" and width == 7
    col = column_of.get("actions", "action")
    cols[col] = (("actions",), {"dtype": low_dtype(["actions"]), "shape": [width],
                                "names": ACTION_NAMES if ee else None})
    columns["actions"] = col
  if layout is not None:
    parts = tuple(k for k, _, _, _ in layout)
    cols[STATE] = (parts, {"dtype": low_dtype(parts), "shape": [layout[-1][2]],
                           "names": [n for _, _, _, ns in layout for n in ns]})
    columns.update({k: f"{STATE}[{a}:{b}]" for k, a, b, _ in layout})
  taken = set(columns)
  for k, v in f.items():
    if k in taken:
      continue
    col = column_of.get(k) or v3_column(k)
    if "/" in col:
      raise ValueError(f"field {k!r}: LeRobot feature names cannot hold '/'")
    if col in cols or col in DEFAULT_COLUMNS:
      raise ValueError(f"field {k!r}: its LeRobot column {col!r} is already taken")
    rgb = v.dtype == np.uint8 and v.ndim == 4 and v.shape[-1] == 3   # else stored as numbers
    if not rgb and k != "dones" and v.dtype.kind not in "fiub":
      raise DatasetError(f"{episodes.source}: field {k!r} is not numeric ({v.dtype})")
    cols[col] = ((k,), _field_feature(k, v if rgb or v.ndim != 4 else v.reshape(len(v), -1),
                                      images, low_dtype([k])))
    columns[k] = col
  for col, names in dict(feature_names or {}).items():
    if col in cols:
      cols[col][1]["names"] = names
  return cols, columns


def _column(v: np.ndarray, ft: dict, t: int):
  pa, _ = _pa()
  if ft["dtype"] == "image":
    return pa.array([{"bytes": _png(im), "path": None} for im in v],
                    pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
  if ft["dtype"] == "bool":
    return pa.array(np.asarray(v).reshape(t) > 0, pa.bool_())
  x = np.ascontiguousarray(np.asarray(v, ft["dtype"]).reshape(t, -1))
  typ = pa.float64() if ft["dtype"] == "float64" else pa.float32()
  if tuple(ft["shape"]) == (1,):
    return pa.array(x.reshape(t), typ)
  return pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1), typ), x.shape[1])


def concat_videos(paths: Sequence[str], out: str) -> None:
  """Join mp4 files of one codec/size/fps without re-encoding (ffmpeg's concat demuxer, what
  LeRobot's `concatenate_video_files` does), atomically."""
  import subprocess

  import imageio_ffmpeg
  os.makedirs(os.path.dirname(out), exist_ok=True)
  tmp = out + ".tmp.mp4"
  if len(paths) == 1:
    shutil.copyfile(paths[0], tmp)
  else:
    listing = out + ".concat.txt"
    with open(listing, "w") as f:
      for p in paths:
        f.write("file '" + os.path.abspath(p).replace("'", "'\\''") + "'\n")
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error", "-f", "concat",
           "-safe", "0", "-i", listing, "-c", "copy", "-movflags", "+faststart", tmp]
    r = subprocess.run(cmd, capture_output=True, text=True)
    os.remove(listing)
    if r.returncode != 0:
      raise RuntimeError(f"{out}: ffmpeg concat failed: {r.stderr.strip()[-500:]}")
  os.replace(tmp, out)


def _next_file(chunk: int, file: int, chunks_size: int) -> tuple[int, int]:
  return (chunk + 1, 0) if file + 1 >= chunks_size else (chunk, file + 1)


def _group_by_size(sizes: Sequence[int], limit_mb: float) -> list[list[int]]:
  """Consecutive items in files of at most `limit_mb` (a file holds at least one item)."""
  limit = float(limit_mb) * 1024 * 1024
  groups: list[list[int]] = []
  cur = 0.0
  for i, s in enumerate(sizes):
    if groups and groups[-1] and cur + s <= limit:
      groups[-1].append(i)
      cur += s
    else:
      groups.append([i])
      cur = float(s)
  return groups


def _write_tasks_parquet(path: str, tasks: Sequence[str]) -> None:
  """meta/tasks.parquet as pandas writes a frame indexed by `task` (LeRobot reads it with
  `pd.read_parquet`), without pandas."""
  pa, pq = _pa()
  pandas_meta = {"index_columns": ["task"], "column_indexes": [
      {"name": None, "field_name": None, "pandas_type": "unicode", "numpy_type": "object",
       "metadata": {"encoding": "UTF-8"}}],
      "columns": [{"name": "task_index", "field_name": "task_index", "pandas_type": "int64",
                   "numpy_type": "int64", "metadata": None},
                  {"name": "task", "field_name": "task", "pandas_type": "unicode",
                   "numpy_type": "object", "metadata": None}],
      "attributes": {}, "creator": {"library": "pyarrow", "version": pa.__version__},
      "pandas_version": "2.3.3"}
  table = pa.table({"task_index": pa.array(np.arange(len(tasks)), pa.int64()),
                    "task": pa.array(list(tasks), pa.string())})
  table = table.replace_schema_metadata({b"pandas": json.dumps(pandas_meta).encode()})
  pq.write_table(table, path + ".tmp")
  os.replace(path + ".tmp", path)


def export_lerobot_v3(episodes: EpisodeData, out_dir: str, *, fps: int = 20,
                      env_args: Mapping | None = None, task: str | None = None,
                      images: str = "video", crf: int = 18,
                      masks: Mapping[str, Sequence[str]] | None = None, source: str | None = None,
                      robot_type: str = "panda", overwrite: bool = False,
                      progress: bool = False, chunks_size: int = CHUNK_SIZE,
                      data_files_size_in_mb: float = 100,
                      video_files_size_in_mb: float = 200,
                      columns: Mapping[str, str] | None = None,
                      feature_names: Mapping[str, object] | None = None) -> str:
  """Write `episodes` (policy keys + 'actions' [+ 'rewards', 'dones']) as LeRobot v3.0 at
  `out_dir` (resumable per episode, atomic; see the module docstring). Returns `out_dir`.

  Per-episode tasks come from `episodes.attrs['tasks']` (one string per episode) when given,
  else `task` (default: the env's language instruction).
  `columns` (policy field -> column) names those fields' columns instead of the default
  naming (`v3_column` / `STATE_LAYOUTS`), e.g. another robot's published schema
  (`data/aloha.py`); `feature_names` (column -> the `names` of its feature in meta/info.json:
  a list, a dict such as {"motors": [...]}, or None) overrides the names written. The action
  column's shape is the actions' width; its names are [x, y, z, ax, ay, az, gripper] for 7-D
  end-effector actions, else None unless `feature_names` says."""
  pa, pq = _pa()
  if images not in ("video", "png"):
    raise ValueError(f"images must be 'video' or 'png', got {images!r}")
  if int(chunks_size) < 1 or float(data_files_size_in_mb) <= 0 or \
     float(video_files_size_in_mb) <= 0:
    raise ValueError("chunks_size and the file sizes must be positive")
  prep = _export_target(episodes, out_dir, env_args, task, overwrite)
  if prep is None:
    return out_dir
  attrs, env_args, task = prep
  n = episodes.num_episodes
  ep_tasks = [str(x) for x in (attrs.get("tasks") or [])]
  if len(ep_tasks) != n or not all(ep_tasks):
    ep_tasks = [task] * n
  task_list = list(dict.fromkeys(ep_tasks))
  names = list(attrs.get("demo_names") or [f"demo_{i}" for i in range(n)])
  if len(names) != n:
    raise ValueError(f"{episodes.source}: {len(names)} demo names for {n} episodes")
  cols, columns = _plan_v3(episodes, images, columns, feature_names)
  tmp = _staging(out_dir, _fingerprint(episodes, cols, images, crf) + f"|{V3}|{ep_tasks}")
  work = os.path.join(tmp, ".episodes")
  features, schema_meta = _features(cols, "List")
  video_cols = [c for c, ft in features.items() if ft["dtype"] == "video"]
  starts, ends = episodes.episode_starts, episodes.episode_ends
  it = range(n)
  if progress:
    from tqdm import tqdm
    it = tqdm(it, desc="lerobot", unit="episode")
  for i in it:                                  # 1. every episode on its own (resumable)
    marker = os.path.join(work, f"episode_{i:06d}.json")
    if os.path.exists(marker):
      continue
    s, e = int(starts[i]), int(ends[i])
    t = e - s
    arrays, stats, vinfo = {}, {}, {}
    for col, (src, ft) in cols.items():
      v = (np.concatenate([np.asarray(episodes.fields[k][s:e]).reshape(t, -1) for k in src], -1)
           if len(src) > 1 else np.asarray(episodes.fields[src[0]][s:e]))
      if ft["dtype"] == "video":
        vinfo[col] = encode_video(v, os.path.join(work, f"episode_{i:06d}.{col}.mp4"), fps, crf)
      else:
        arrays[col] = _column(v, ft, t)
      stats[col] = _stats_v3(v if ft["dtype"] in ("video", "image") else
                             np.asarray(v, np.float64).reshape(t, -1),
                             ft["dtype"] in ("video", "image"))
    frame = np.arange(t)
    ts = (frame / fps).astype(np.float32)
    task_index = task_list.index(ep_tasks[i])
    defaults = {"timestamp": ts, "frame_index": frame, "episode_index": np.full(t, i),
                "index": np.arange(s, e), "task_index": np.full(t, task_index)}
    for c, a in defaults.items():
      arrays[c] = pa.array(a, pa.float32() if c == "timestamp" else pa.int64())
      stats[c] = _stats_v3(np.asarray(a, np.float64)[:, None], False)
    table = pa.table(arrays).replace_schema_metadata(schema_meta)
    ppath = os.path.join(work, f"episode_{i:06d}.parquet")
    pq.write_table(table, ppath + ".tmp")
    os.replace(ppath + ".tmp", ppath)
    _write_json(marker, {"length": t, "stats": stats, "video_info": vinfo})

  # 2. join the episodes into LeRobot's shared files (quick: no encoding)
  per_ep = [json.load(open(os.path.join(work, f"episode_{i:06d}.json"))) for i in range(n)]
  ep_meta = [{"episode_index": i, "tasks": [ep_tasks[i]], "length": int(p["length"])}
             for i, p in enumerate(per_ep)]
  ppaths = [os.path.join(work, f"episode_{i:06d}.parquet") for i in range(n)]
  chunk = file = 0
  for g, group in enumerate(_group_by_size([os.path.getsize(p) for p in ppaths],
                                           data_files_size_in_mb)):
    if g:
      chunk, file = _next_file(chunk, file, chunks_size)
    path = os.path.join(tmp, V3_DATA_PATH.format(chunk_index=chunk, file_index=file))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    writer = None
    for i in group:
      table = pq.read_table(ppaths[i])
      writer = writer or pq.ParquetWriter(path + ".tmp", table.schema, compression="snappy")
      writer.write_table(table)        # one row group per episode, as LeRobot writes
      ep_meta[i].update({"data/chunk_index": chunk, "data/file_index": file,
                         "dataset_from_index": int(starts[i]), "dataset_to_index": int(ends[i])})
    writer.close()
    os.replace(path + ".tmp", path)
  for col in video_cols:
    vpaths = [os.path.join(work, f"episode_{i:06d}.{col}.mp4") for i in range(n)]
    chunk = file = 0
    for g, group in enumerate(_group_by_size([os.path.getsize(p) for p in vpaths],
                                             video_files_size_in_mb)):
      if g:
        chunk, file = _next_file(chunk, file, chunks_size)
      concat_videos([vpaths[i] for i in group], os.path.join(tmp, V3_VIDEO_PATH.format(
          video_key=col, chunk_index=chunk, file_index=file)))
      frames = 0
      for i in group:
        t = ep_meta[i]["length"]
        ep_meta[i].update({f"videos/{col}/chunk_index": chunk, f"videos/{col}/file_index": file,
                           f"videos/{col}/from_timestamp": frames / fps,
                           f"videos/{col}/to_timestamp": (frames + t) / fps})
        frames += t
  for i, p in enumerate(per_ep):
    for col, st in p["stats"].items():
      for name, val in st.items():
        ep_meta[i][f"stats/{col}/{name}"] = val
    ep_meta[i].update({"meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0})
  epath = os.path.join(tmp, V3_EPISODES_PATH.format(chunk_index=0, file_index=0))
  os.makedirs(os.path.dirname(epath), exist_ok=True)
  pq.write_table(pa.Table.from_pylist(ep_meta), epath + ".tmp")
  os.replace(epath + ".tmp", epath)
  _write_tasks_parquet(os.path.join(tmp, "meta", "tasks.parquet"), task_list)

  all_stats = {}                                   # over the whole dataset, exactly
  for col, (src, ft) in cols.items():
    image = ft["dtype"] in ("video", "image")
    v = (np.concatenate([np.asarray(episodes.fields[k], np.float64).reshape(
        episodes.num_frames, -1) for k in src], -1) if len(src) > 1 or not image
        else episodes.fields[src[0]])
    all_stats[col] = _stats_v3(v, image, max_images=1000)
  frame_index = np.concatenate([np.arange(e - s) for s, e in zip(starts, ends)])
  ep_index = np.repeat(np.arange(n), ends - starts)
  for c, a in (("timestamp", (frame_index / fps).astype(np.float32)),
               ("frame_index", frame_index), ("episode_index", ep_index),
               ("index", np.arange(episodes.num_frames)),
               ("task_index", np.repeat([task_list.index(x) for x in ep_tasks], ends - starts))):
    all_stats[c] = _stats_v3(np.asarray(a, np.float64)[:, None], False)
  _write_json(os.path.join(tmp, "meta", "stats.json"), all_stats)
  for c in video_cols:
    vi = dict(per_ep[0]["video_info"][c])
    vi.pop("video.is_depth_map", None)
    features[c]["info"] = {**vi, "is_depth_map": False}
  info = {"codebase_version": V3, "fps": int(fps), "features": features,
          "total_episodes": n, "total_frames": int(episodes.num_frames),
          "total_tasks": len(task_list), "chunks_size": int(chunks_size),
          "data_files_size_in_mb": data_files_size_in_mb,
          "video_files_size_in_mb": video_files_size_in_mb,
          "data_path": V3_DATA_PATH, "video_path": V3_VIDEO_PATH if video_cols else None,
          "robot_type": robot_type, "splits": {"train": f"0:{n}"}}
  _write_json(os.path.join(tmp, "meta", "info.json"), info)
  filter_keys = mask_indices(masks or attrs.get("masks"), names)
  _write_json(os.path.join(tmp, OURS), {
      "format": "decoupled_jax.lerobot.v3", "env_args": env_args,
      "action_convention": attrs.get("action_convention", "absolute"),
      "action_space": ("absolute joint positions + gripper(s)"
                       if attrs.get("action_convention") == "joint_pos" else
                       "absolute [pos(3), axis-angle(3), gripper] of the grip site, world frame"),
      "columns": columns,
      "fields": {k: {"dtype": str(v.dtype), "shape": list(v.shape[1:])}
                 for k, v in episodes.fields.items()},
      "filter_keys": filter_keys, "demo_names": names, "source": str(source or episodes.source),
      "images": images, "crf": crf if images == "video" else None,
      "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")})
  shutil.rmtree(work)
  os.remove(os.path.join(tmp, ".fingerprint"))
  if os.path.isdir(out_dir):
    os.rmdir(out_dir)          # empty (checked above)
  os.replace(tmp, out_dir)
  return out_dir
