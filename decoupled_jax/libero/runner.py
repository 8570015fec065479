"""The paper's LIBERO evaluation protocol against a served policy (method spec §7.2).

Runs in the LIBERO venv (numpy + libero + openpi-client; no jax). Per task: episodes start
from LIBERO's bundled init states (episode e uses init state e mod 50), 10 settling steps
with an open gripper, then the policy is asked for an action chunk whenever the previous
one is used up (every `n_action_steps` = 8 env steps), until LIBERO reports success
(`done`) or the suite's max steps (280 / 280 / 300 / 520) run out.

What the policy is sent: its observation keys (the server's metadata says which), each as
the real (n_obs_steps, ...) history of consecutive env frames (the paper's runner tiles the
current frame instead: docs/libero.md), the instruction as the policy's language key
(one-hot over the instructions in the server's metadata), and `seed`/`step` so that the
sampling noise is a function of (eval seed, task, episode, step): a rerun gives the same
episodes.

Robustness: a server that answers a request with an error frame fails that episode (the
reason is logged in the results) and the run goes on; a server that goes away is waited for
(reconnect, up to `reconnect_timeout_s`) and the interrupted episode is replayed from its
init state; results are appended per episode (`<out>/<suite>/task_<id>.jsonl`), so a
killed evaluation resumes where it stopped.
"""
from __future__ import annotations

import json
import logging
import os
import time
from typing import Optional, Sequence

import numpy as np

from decoupled_jax.libero import suites
from decoupled_jax.sim_client import Client, ServerGone
from decoupled_jax.util import read_jsonl_by, wilson_interval, write_json

log = logging.getLogger("libero_runner")
IMAGE_SUFFIX = "_image"


def policy_request_spec(metadata: dict) -> tuple[list[str], list[str], Optional[dict]]:
  """(obs keys, cameras, language spec) from the server's metadata."""
  keys = list(metadata["obs_keys"])
  lang = metadata.get("language")
  cams = [k[:-len(IMAGE_SUFFIX)] for k in keys if k.endswith(IMAGE_SUFFIX)]
  return keys, cams, lang


def episode_seed(eval_seed: int, task_id: int, episode: int) -> int:
  return int(eval_seed) * 1_000_000 + int(task_id) * 1_000 + int(episode)


def run_episode(task, client: Client, init_state, *, seed: int, lang_vec, lang_key,
                obs_keys, n_obs: int, n_act: int, replan: int) -> dict:
  """One episode; raises ServerGone if the server goes away mid-episode."""
  raw = task.reset_to(init_state)
  raw = task.wait(raw)
  history: dict[str, list] = {}
  queue: list = []
  t0 = time.monotonic()
  infer_ms = []
  for step in range(task.max_steps):
    obs = task.policy_obs(raw)
    for k in obs_keys:
      if k == lang_key:
        continue
      h = history.setdefault(k, [obs[k]] * n_obs)   # first frame repeated (as at reset)
      h.append(obs[k])
      del h[:-n_obs]
    if not queue:
      req = {k: np.stack(history[k]) for k in obs_keys if k != lang_key}
      if lang_key:
        req[lang_key] = np.broadcast_to(lang_vec, (n_obs,) + lang_vec.shape).copy()
      req.update({"seed": int(seed), "step": int(step), "reset": step == 0,
                  "prompt": task.instruction})
      try:
        out = client.infer(req)
      except RuntimeError as e:         # the server's error frame: this episode fails
        return {"success": False, "steps": step, "error": str(e).splitlines()[-1][:500]}
      infer_ms.append(float(out.get("server_timing", {}).get("infer_ms", 0.0)))
      acts = np.asarray(out["actions"], np.float64)
      if acts.ndim != 2 or acts.shape[-1] != 7 or not np.all(np.isfinite(acts)):
        return {"success": False, "steps": step,
                "error": f"server returned actions of shape {acts.shape} / non-finite"}
      queue = list(acts[:min(replan, n_act)])
    raw, done = task.step(np.clip(queue.pop(0), -1.0, 1.0))
    if done:
      return {"success": True, "steps": step + 1, "seconds": time.monotonic() - t0,
              "infer_ms": float(np.mean(infer_ms)) if infer_ms else 0.0}
  return {"success": False, "steps": task.max_steps, "seconds": time.monotonic() - t0,
          "infer_ms": float(np.mean(infer_ms)) if infer_ms else 0.0}


def evaluate(address: str, suite: str, task_ids: Sequence[int], out_dir: str, *,
             episodes: int = suites.EPISODES_PER_TASK, eval_seed: int = 0,
             replan: int = suites.REPLAN_EVERY, reconnect_timeout_s: float = 300.0,
             max_episode_retries: int = 2, image_size: int = 128, max_steps: int = 0,
             progress=None) -> dict:
  """Evaluates the served policy on `task_ids` of `suite`; returns (and writes) the suite
  summary `<out_dir>/<suite>/summary.json`."""
  from decoupled_jax.libero.env import LiberoTask
  suites.check_suite(suite)
  task_ids = suites.check_tasks(suite, task_ids)
  if episodes <= 0:
    raise ValueError(f"episodes must be > 0, got {episodes}")
  client = Client(address, reconnect_timeout_s=reconnect_timeout_s)
  md = client.connect()
  obs_keys, cams, lang = policy_request_spec(md)
  n_obs, n_act = int(md["n_obs_steps"]), int(md["n_action_steps"])
  lang_key = lang["key"] if lang else None
  vocab = list(lang["instructions"]) if lang else []
  sdir = os.path.join(out_dir, suite)
  os.makedirs(sdir, exist_ok=True)
  per_task = {}
  for tid in task_ids:
    path = os.path.join(sdir, f"task_{tid}.jsonl")
    done = read_jsonl_by(path)
    task = None
    try:
      for e in range(episodes):
        if e in done:
          continue
        if task is None:
          task = LiberoTask(suite, tid, cameras=cams, image_size=image_size)
          if max_steps:                  # a shorter episode (smoke tests); 0 = the suite's
            task.max_steps = int(max_steps)
          lang_vec = None
          if lang_key:
            if task.instruction not in vocab:
              raise ValueError(f"{suite} task {tid}: instruction {task.instruction!r} is not "
                               f"in the served policy's vocabulary ({len(vocab)} "
                               f"instructions); was it trained on this suite?")
            lang_vec = np.zeros(len(vocab), np.float32)
            lang_vec[vocab.index(task.instruction)] = 1.0
        init = task.init_states[e % len(task.init_states)]
        seed = episode_seed(eval_seed, tid, e)
        for attempt in range(max_episode_retries + 1):
          try:
            r = run_episode(task, client, init, seed=seed, lang_vec=lang_vec,
                            lang_key=lang_key, obs_keys=obs_keys, n_obs=n_obs, n_act=n_act,
                            replan=replan)
            break
          except ServerGone as err:
            log.warning("%s task %d episode %d: server connection lost (%s); reconnecting",
                        suite, tid, e, err)
            client.connect()             # raises ServerGone after the timeout: run stops
            client.reconnects += 1
        else:
          r = {"success": False, "steps": 0,
               "error": f"server connection lost {max_episode_retries + 1} times"}
        r.update(episode=e, init_index=e % len(task.init_states), seed=seed,
                 task_id=tid, suite=suite, instruction=task.instruction)
        with open(path, "a") as f:
          f.write(json.dumps(r) + "\n")
        done[e] = r
        if progress:
          progress(suite, tid, e, r)
    finally:
      if task is not None:
        task.close()
    rows = [done[e] for e in range(episodes)]
    s = sum(bool(r["success"]) for r in rows)
    lo, hi = wilson_interval(s, episodes)
    per_task[tid] = {"task_id": tid, "instruction": rows[0].get("instruction", ""),
                     "episodes": episodes, "successes": s, "success_rate": s / episodes,
                     "ci95": [lo, hi], "errors": sum(1 for r in rows if r.get("error")),
                     "mean_steps": float(np.mean([r["steps"] for r in rows]))}
  client.close()
  n = sum(v["episodes"] for v in per_task.values())
  s = sum(v["successes"] for v in per_task.values())
  summary = {"suite": suite, "tasks": per_task, "episodes": n, "successes": s,
             # the suite score: mean over tasks of the per-task rate (the paper's)
             "success_rate": float(np.mean([v["success_rate"] for v in per_task.values()])),
             "ci95_pooled": list(wilson_interval(s, n)), "eval_seed": eval_seed,
             "max_steps": int(max_steps) or suites.MAX_STEPS[suite],
             "reconnects": client.reconnects, "server": {k: md.get(k) for k in (
                 "task", "backbone", "mode", "step") if k in md}}
  write_json(os.path.join(sdir, "summary.json"), summary, indent=1)
  return summary
