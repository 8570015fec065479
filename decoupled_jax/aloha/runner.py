"""Closed-loop ALOHA evaluation against a served policy (docs/aloha.md).

Runs in the ALOHA venv (numpy + gym-aloha + openpi-client; no jax). Per episode: the object
pose(s) come from gym-aloha's own sampler seeded with SeedSequence((eval seed, task index,
episode, EVAL_STREAM)) -- a stream disjoint from the demonstrations' -- then the policy is
asked for an action chunk whenever the previous one is used up (every `n_action_steps` env
steps, from the server's metadata) until the task's reward reaches its maximum (success; the
episode ends there, which counts exactly the episodes ACT counts: max reward over the
episode == 4) or `max_steps` (400, ACT's episode_len) run out.

What the policy is sent: its observation keys (the server's metadata says which; any of
qpos, qvel, env_state, top -- the top camera at the size in the metadata's obs_shapes; a policy
may call it `top_image`, our image-key naming, and gets it under that name), each
as the real (n_obs_steps, ...) history of consecutive env frames (the first frame repeated
at the start), and `seed`/`step` so that the sampling noise is a function of (eval seed,
task, episode, step): a rerun gives the same episodes. The env action is
`policy_action[action_permutation]` when the metadata has `action_permutation` (14 ints; the
policy may order its 14 dims differently from gym-aloha), else the policy's action.

Robustness: a server that answers a request with an error frame, or actions that make the
simulation diverge (dm_control's PhysicsError), fail that episode (the reason is logged in the
results) and the run goes on; a server that goes away is waited for
(reconnect, up to `reconnect_timeout_s`) and the interrupted episode is replayed from its
start; results are appended per episode (`<out>/<task>/episodes.jsonl`), so a killed
evaluation resumes where it stopped.
"""
from __future__ import annotations

import json
import logging
import os
import time
from typing import Optional

import numpy as np

from decoupled_jax.aloha import env as aloha_env
from decoupled_jax.sim_client import Client, ServerGone
from decoupled_jax.util import read_jsonl_by, wilson_interval, write_json

log = logging.getLogger("aloha_runner")
try:   # the simulator side's error for a diverged simulation (dm_control is in the ALOHA venv)
  from dm_control.rl.control import PhysicsError
except ImportError:   # pragma: no cover  (imported outside the venv: nothing to catch)
  class PhysicsError(Exception):
    pass
EVAL_STREAM = 0xE7A1      # keeps evaluation poses apart from the demos' (demos.attempt_seed)
VIDEO_SIZE = (240, 320)
IMAGE_SUFFIX = "_image"


def env_key(policy_key: str) -> str:
  """The env observation a policy key names: `top_image` (our policies' image naming) -> `top`."""
  return aloha_env.CAMERA if policy_key == aloha_env.CAMERA + IMAGE_SUFFIX else policy_key


def policy_request_spec(metadata: dict, task: str) -> tuple[list[str], Optional[tuple], np.ndarray]:
  """(obs keys, camera size or None, action permutation) from the server's metadata; raises
  ValueError naming the field at fault."""
  keys = list(metadata.get("obs_keys") or [])
  if not keys:
    raise ValueError("server metadata: 'obs_keys' is missing or empty")
  shapes = dict(metadata.get("obs_shapes") or {})
  # Our policies name the camera `top_image` (image keys end in '_image'); the env says `top`.
  keys = [env_key(k) for k in keys]
  shapes = {env_key(k): v for k, v in shapes.items()}
  bad = [k for k in keys if k not in aloha_env.OBS_KEYS]
  if bad:
    raise ValueError(f"server metadata: the policy takes observation key(s) {bad} that the "
                     f"ALOHA env does not provide; expected some of {list(aloha_env.OBS_KEYS)}")
  for k in ("qpos", "qvel", "env_state"):
    want = [14] if k != "env_state" else [aloha_env.ENV_STATE_DIM[task]]
    if k in keys and k in shapes and list(shapes[k]) != want:
      raise ValueError(f"server metadata: obs_shapes[{k!r}] is {list(shapes[k])}, the "
                       f"{task} env gives {want}")
  cam = None
  if aloha_env.CAMERA in keys:
    shape = list(shapes.get(aloha_env.CAMERA) or [])
    if len(shape) != 3 or shape[2] != 3 or min(shape[:2]) < 8:
      raise ValueError(f"server metadata: obs_shapes['top'] must be [H, W, 3], got {shape}")
    cam = (int(shape[0]), int(shape[1]))
  perm = metadata.get("action_permutation")
  if perm is None:
    perm = np.arange(14)
  else:
    try:
      perm = np.asarray(perm)
      ok = perm.shape == (14,) and np.issubdtype(perm.dtype, np.integer) and \
          sorted(perm.tolist()) == list(range(14))
    except (TypeError, ValueError):
      ok = False
    if not ok:
      raise ValueError(f"server metadata: action_permutation must be a permutation of "
                       f"0..13 (14 ints), got {metadata.get('action_permutation')!r:.120}")
  return keys, cam, perm.astype(np.int64)


def task_index(task: str) -> int:
  return aloha_env.TASKS.index(aloha_env.check_task(task))


def episode_pose_seed(eval_seed: int, task: str, episode: int) -> int:
  """gym-aloha pose-sampler seed of evaluation episode `episode` (< 2**32)."""
  ss = np.random.SeedSequence([int(eval_seed), task_index(task), int(episode), EVAL_STREAM])
  return int(ss.generate_state(1, np.uint32)[0])


def episode_seed(eval_seed: int, task: str, episode: int) -> int:
  """The policy's sampling seed of one episode (sent with every request)."""
  return int(eval_seed) * 1_000_000 + task_index(task) * 1_000 + int(episode)


def policy_key(env_obs_key: str, names: Optional[dict]) -> str:
  return (names or {}).get(env_obs_key, env_obs_key)


def run_episode(task, client: Client, pose_seed: int, *, seed: int, obs_keys, n_obs: int,
                n_act: int, perm: np.ndarray, max_steps: int, video: bool = False,
                names: Optional[dict] = None) -> dict:
  """One episode; raises ServerGone if the server goes away mid-episode. Returns the result
  row (+ '_frames' when `video`)."""
  obs = task.reset(pose_seed)
  history: dict[str, list] = {}
  queue: list = []
  frames = []
  t0 = time.monotonic()
  infer_ms = []

  def done(r):
    r.update(seconds=round(time.monotonic() - t0, 3),
             infer_ms=float(np.mean(infer_ms)) if infer_ms else 0.0)
    if video:
      r["_frames"] = frames
    return r

  for step in range(max_steps):
    if video:
      frames.append(obs[aloha_env.CAMERA] if aloha_env.CAMERA in obs and
                    task.camera_size == VIDEO_SIZE else task.render(VIDEO_SIZE))
    for k in obs_keys:
      frame = obs[k] if k == aloha_env.CAMERA else np.asarray(obs[k], np.float32)
      h = history.setdefault(k, [frame] * n_obs)   # first frame repeated (as at reset)
      h.append(frame)
      del h[:-n_obs]
    if not queue:
      req = {policy_key(k, names): np.stack(history[k]) for k in obs_keys}
      req.update({"seed": int(seed), "step": int(step), "reset": step == 0})
      try:
        out = client.infer(req)
      except RuntimeError as e:         # the server's error frame: this episode fails
        return done({"success": False, "steps": step, "reward": task.reward,
                     "error": str(e).splitlines()[-1][:500]})
      infer_ms.append(float(out.get("server_timing", {}).get("infer_ms", 0.0)))
      acts = np.asarray(out["actions"], np.float64)
      if acts.ndim != 2 or acts.shape[-1] != 14 or len(acts) == 0 or \
          not np.all(np.isfinite(acts)):
        return done({"success": False, "steps": step, "reward": task.reward,
                     "error": f"server returned actions of shape {acts.shape} (expected "
                              f"(n, 14)) or non-finite ones"})
      queue = list(acts[:n_act])
    try:
      obs, ok = task.step(queue.pop(0)[perm])
    except PhysicsError as e:         # the policy's actions made the simulation diverge
      return done({"success": False, "steps": step, "reward": 0.0,
                   "error": f"physics diverged: {' '.join(str(e).split())[:300]}"})
    if ok:
      return done({"success": True, "steps": step + 1, "reward": task.reward})
  return done({"success": False, "steps": max_steps, "reward": task.reward})


def _write_video(path: str, frames, fps: int = aloha_env.FPS):
  import imageio
  tmp = path + ".tmp.mp4"
  with imageio.get_writer(tmp, fps=fps, codec="libx264", macro_block_size=8) as w:
    for fr in frames:
      w.append_data(np.asarray(fr, np.uint8))
  os.replace(tmp, path)


def evaluate(address: str, task: str, out_dir: str, *, episodes: int = 50, eval_seed: int = 0,
             max_steps: int = aloha_env.EPISODE_LEN, num_videos: int = 0,
             reconnect_timeout_s: float = 300.0, max_episode_retries: int = 2,
             progress=None) -> dict:
  """Evaluates the served policy on `task`; returns (and writes) `<out_dir>/<task>/summary.json`."""
  task = aloha_env.check_task(task)
  if episodes <= 0:
    raise ValueError(f"episodes must be > 0, got {episodes}")
  if max_steps <= 0:
    raise ValueError(f"max_steps must be > 0, got {max_steps}")
  t_start = time.time()
  client = Client(address, reconnect_timeout_s=reconnect_timeout_s)
  md = client.connect()
  obs_keys, cam, perm = policy_request_spec(md, task)
  names = {env_key(k): k for k in md.get("obs_keys") or []}   # env key -> the policy's name
  n_obs, n_act = int(md["n_obs_steps"]), int(md["n_action_steps"])
  if n_obs < 1 or n_act < 1:
    raise ValueError(f"server metadata: n_obs_steps={n_obs}, n_action_steps={n_act} must be >= 1")
  tdir = os.path.join(out_dir, task)
  os.makedirs(tdir, exist_ok=True)
  path = os.path.join(tdir, "episodes.jsonl")
  done = read_jsonl_by(path)
  env = None
  try:
    for e in range(episodes):
      if e in done:
        continue
      if env is None:
        env = aloha_env.AlohaTask(task, "joint", camera_size=cam)
      pose_seed = episode_pose_seed(eval_seed, task, e)
      seed = episode_seed(eval_seed, task, e)
      video = e < num_videos
      for attempt in range(max_episode_retries + 1):
        try:
          r = run_episode(env, client, pose_seed, seed=seed, obs_keys=obs_keys, n_obs=n_obs,
                          n_act=n_act, perm=perm, max_steps=max_steps, video=video,
                          names=names)
          break
        except ServerGone as err:
          log.warning("%s episode %d: server connection lost (%s); reconnecting", task, e, err)
          client.connect()               # raises ServerGone after the timeout: run stops
          client.reconnects += 1
      else:
        r = {"success": False, "steps": 0,
             "error": f"server connection lost {max_episode_retries + 1} times"}
      frames = r.pop("_frames", None)
      if frames:
        vpath = os.path.join(tdir, "videos", f"episode_{e}.mp4")
        os.makedirs(os.path.dirname(vpath), exist_ok=True)
        _write_video(vpath, frames)
        r["video"] = os.path.relpath(vpath, tdir)
      r.update(episode=e, task=task, pose_seed=pose_seed, seed=seed,
               object_pose=[round(float(v), 6) for v in env.object_pose]
               if env.object_pose is not None else None)
      with open(path, "a") as f:
        f.write(json.dumps(r) + "\n")
      done[e] = r
      if progress:
        progress(task, e, r)
  finally:
    if env is not None:
      env.close()
    client.close()
  rows = [done[e] for e in range(episodes)]
  s = sum(bool(r["success"]) for r in rows)
  lo, hi = wilson_interval(s, episodes)
  summary = {"task": task, "episodes": episodes, "successes": s, "success_rate": s / episodes,
             "ci95": [lo, hi], "outcomes": [bool(r["success"]) for r in rows],
             "errors": sum(1 for r in rows if r.get("error")),
             "mean_steps": float(np.mean([r["steps"] for r in rows])),
             "eval_seed": int(eval_seed), "max_steps": int(max_steps),
             "episode_seconds": round(float(sum(r.get("seconds", 0.0) for r in rows)), 1),
             "wall_seconds": round(time.time() - t_start, 1), "reconnects": client.reconnects,
             "obs_keys": obs_keys, "n_obs_steps": n_obs, "n_action_steps": n_act,
             "action_permutation": perm.tolist(),
             "server": {k: md.get(k) for k in ("task", "backbone", "mode", "step", "policy")
                        if k in md}}
  write_json(os.path.join(tdir, "summary.json"), summary, indent=1)
  return summary
