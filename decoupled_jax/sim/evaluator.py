"""Closed-loop policy evaluation (MimicGen protocol, docs/method.md §7.1) with batched inference.

    result = evaluate_policy(policy_fn, 'stack', num_episodes=50, n_obs_steps=2,
                             n_action_steps=8, max_steps=270, num_workers=4)
    train = evaluate_policy(policy_fn, 'stack', num_episodes=50,
                            initial_states=demo_initial_states('Stack.hdf5', 50))

Policy contract:
* `policy_fn(obs_batch, seeds=seeds, steps=steps) -> actions`. `obs_batch[key]` is (N, To, ...)
  for the N envs that are still running (low-dim float32, images uint8 (N, To, H, W, 3));
  `seeds` is int64 (N,): the episode seed of row i; `steps` is int64 (N,): the number of env
  steps already taken in that episode when this chunk is requested (0 at the first call). A
  stochastic policy must draw row i's noise from (seeds[i], steps[i]) only (e.g. the JAX
  runner's key fold_in(fold_in(base_key, seed), step); the tests' random policy uses
  np.random.default_rng((base_seed, seed, step))), never from call order or batch composition,
  so an episode does not depend on which other episodes share its batch or worker. Row i's
  actions must also be computed from row i alone, bitwise: XLA's batched kernels round
  differently with the batch size (and row position), so the JAX runner samples each row with
  one compiled batch-1 program (`inference.PolicyRunner` with `batch_size=1`, what every
  evaluation path uses; a runner with `batch > 1` is warned about, as its episodes can change
  with the worker count).
  It returns (N, >=Ta, 7) env actions [pos, axis-angle, gripper] *starting at the current step*
  (a diffusion policy slices its prediction [To-1, To-1+Ta) itself). It is called in the main
  process, once per replanning round for all active envs together.
* A plain `policy_fn(obs_batch)` (no `seeds`/`steps` parameters, no **kwargs; detected with
  `inspect.signature`) is still accepted; its episodes are reproducible only if it is
  deterministic.

Episodes:
* 'test' mode (default): episode i resets with `seeds[i]` (MimicGen test seeds 100000 + i). An
  episode is a pure function of its seed and the policy: the env re-seeds everything random,
  including the model build (Lift's cube size), at each seeded reset (see
  `sim/robosuite_env.py`), so results do not depend on the worker count or on which episodes
  ran before in the same process.
* 'train' mode (`initial_states=[(name, flat_state), ...]`, e.g. from `demo_initial_states`):
  the paper's rollouts from the demonstrations' initial states. Each episode resets the env,
  then sets the flat MuJoCo state (`sim.set_state_from_flattened` + `forward`, as robomimic's
  `reset_to`). The reset seed (which fixes the model, e.g. Lift's cube size, and the policy's
  noise key) is the demo's generating seed when `demo_initial_states` found one
  (`InitialState.seed`, or a 3-tuple `(name, state, seed)`), else DEFAULT_TRAIN_SEED_BASE + i.
  In that last case (downloaded robomimic / MimicGen files) Lift's cube is the seed's, not the
  demo's: its size is not in `states` (only in the demo's `model_file` XML, unused here).
  Records carry the demo name.

Loop:
* Each env lives in a worker process ('spawn' context; one env per worker, stepped on
  command). With `num_workers <= 1` the env runs inline in the calling process (cheap tests).
  When an episode ends, its worker takes the next episode, so N shrinks only at the very end.
* Observation history is real: the last To observations; at reset the first frame is repeated.
* Ta actions are executed per inference; an episode stops at the first success
  (`env._check_success()`, equivalent to MimicGen's max-reward score) or at `max_steps`.
* Reports: mode, success rate with a 95 % Wilson interval, mean episode length, policy latency
  (ms per call), env steps/s (aggregate over workers: env steps / wall clock spent stepping,
  resets excluded, video rendering included), per-episode records (episode, seed, [demo],
  success, length, sha1 of the flat MuJoCo state at the start and the end of the episode);
  mp4 videos (agentview, upright, `video_size`²) of the first `num_videos` episodes.
"""
from __future__ import annotations

import hashlib
import inspect
import logging
import multiprocessing as mp
import os
import time
import traceback
from typing import Callable, Sequence

import numpy as np

from decoupled_jax import util
from decoupled_jax.sim.robosuite_env import EnvSpec, make_env_from_spec, make_spec
from decoupled_jax.util import wilson_interval  # noqa: F401  (re-exported; its home is util)

log = logging.getLogger(__name__)

# Test seeds of the MimicGen runner (docs/method.md §7.1): 100000 + i.
DEFAULT_SEED_BASE = 100000
# Reset seeds of 'train' episodes whose demo records no generating seed: 200000 + i.
DEFAULT_TRAIN_SEED_BASE = 200000
# max_steps = 2.5 x average demo length (docs/method.md §7.1 for Stack/Square; ours for Lift/Can).
DEFAULT_MAX_STEPS = {"Lift": 150, "Stack": 270, "NutAssemblySquare": 383, "PickPlaceCan": 400}


def state_sha1(state: np.ndarray) -> str:
  """sha1 of a flat MuJoCo state as float64 bytes (the per-episode fingerprints)."""
  return hashlib.sha1(np.ascontiguousarray(state, np.float64).tobytes()).hexdigest()


class InitialState(tuple):
  """A `(name, state)` pair (unpacks as one) that also carries the demo's generating `seed`."""

  def __new__(cls, name: str, state: np.ndarray, seed: int | None = None):
    self = super().__new__(cls, (name, state))
    self.seed = None if seed is None else int(seed)
    return self

  def __getnewargs__(self):
    return (self[0], self[1], self.seed)

  def __repr__(self):
    return f"InitialState({self[0]!r}, <state {np.shape(self[1])}>, seed={self.seed})"


def demo_initial_states(hdf5_path: str, num: int | None = None,
                        filter_key: str | None = None) -> list[InitialState]:
  """The first `num` demos' `states[0]` (robomimic order, `filter_key` mask), as `(name, state)`.

  Each item also has `.seed`: the demo's `seed` attribute (written by `sim/demos.py`), or None.
  """
  import h5py
  from decoupled_jax.data import robomimic_hdf5 as rh
  names = rh.list_demos(hdf5_path, filter_key)
  if num is not None:
    if num > len(names):
      raise ValueError(f"{hdf5_path}: asked for {num} initial states, "
                       f"only {len(names)} demos{f' in mask/{filter_key}' if filter_key else ''}")
    names = names[:num]
  out = []
  with h5py.File(hdf5_path, "r") as f:
    for n in names:
      g = f["data"][n]
      if "states" not in g or g["states"].shape[0] == 0:
        raise rh.DatasetError(f"{hdf5_path}: data/{n} has no 'states' (needed for initial states)")
      seed = g.attrs.get("seed")
      out.append(InitialState(n, np.asarray(g["states"][0], np.float64),
                              None if seed is None else int(seed)))
  return out


def _policy_takes_seeds(policy_fn) -> bool:
  """True if `policy_fn` accepts `seeds=` and `steps=` keywords (the current contract)."""
  try:
    params = inspect.signature(policy_fn).parameters.values()
  except (TypeError, ValueError):
    return False
  if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
    return True
  names = {p.name for p in params
           if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)}
  if ("seeds" in names) != ("steps" in names):
    raise TypeError("policy_fn must take both `seeds` and `steps` keywords, or neither "
                    f"(got {sorted(names & {'seeds', 'steps'})})")
  return "seeds" in names


# ----------------------------------------------------------------------------- env runner
class _EnvRunner:
  """One env + its observation history; used inline or inside a worker process."""

  def __init__(self, spec: EnvSpec, n_obs_steps: int, video_size: int = 256, fps: int = 20):
    self.env = make_env_from_spec(spec)
    self.keys = spec.obs_keys
    self.n_obs = n_obs_steps
    self.video_size = video_size
    self.fps = fps
    self.history: list[dict] = []
    self.frames: list[np.ndarray] | None = None
    self.video_path = None

  def _obs(self, o):
    return {k: (o[k] if o[k].dtype == np.uint8 else o[k].astype(np.float32)) for k in self.keys}

  def _stacked(self):
    return {k: np.stack([h[k] for h in self.history[-self.n_obs:]]) for k in self.keys}

  def reset(self, seed: int, video_path: str | None = None, state: np.ndarray | None = None):
    if state is None:
      o = self._obs(self.env.reset(seed))
    else:
      o = self._obs(self.env.reset_to_state(state, seed))
    self.history = [o] * self.n_obs
    self.video_path = video_path
    self.frames = [self.env.render(size=self.video_size)] if video_path else None
    self.steps, self.success = 0, False
    return {"obs": self._stacked(), "initial_state_sha1": state_sha1(self.env.get_state())}

  def step_chunk(self, actions: np.ndarray, max_steps: int):
    t0 = time.perf_counter()
    n = 0
    for a in actions:
      if self.steps >= max_steps or self.success:
        break
      o, _, _, info = self.env.step(a)
      self.history.append(self._obs(o))
      self.history = self.history[-self.n_obs:]
      self.steps += 1
      n += 1
      self.success = bool(info["success"])
      if self.frames is not None:
        self.frames.append(self.env.render(size=self.video_size))
    done = self.success or self.steps >= max_steps
    if done and self.frames is not None:
      import imageio
      os.makedirs(os.path.dirname(os.path.abspath(self.video_path)), exist_ok=True)
      imageio.mimsave(self.video_path, self.frames, fps=self.fps, macro_block_size=1)
      self.frames = None
    out = {"obs": self._stacked(), "success": self.success, "steps": self.steps, "done": done,
           "n": n, "step_s": time.perf_counter() - t0}
    if done:
      out["final_state_sha1"] = state_sha1(self.env.get_state())
    return out

  def close(self):
    self.env.close()


def _worker_main(conn, spec, n_obs_steps, video_size):
  try:
    runner = _EnvRunner(spec, n_obs_steps, video_size)
    conn.send(("ok", None))
  except Exception:  # noqa: BLE001
    conn.send(("error", traceback.format_exc()))
    return
  while True:
    cmd, args = conn.recv()
    if cmd == "close":
      runner.close()
      conn.send(("ok", None))
      return
    try:
      conn.send(("ok", getattr(runner, cmd)(*args)))
    except Exception:  # noqa: BLE001
      conn.send(("error", traceback.format_exc()))


class _Proc:
  """Handle on a worker process with the same call interface as `_EnvRunner`."""

  def __init__(self, ctx, spec, n_obs_steps, video_size):
    self.conn, child = ctx.Pipe()
    self.proc = ctx.Process(target=_worker_main, args=(child, spec, n_obs_steps, video_size),
                            daemon=True)
    self.proc.start()
    child.close()

  def send(self, cmd, *args):
    self.conn.send((cmd, args))

  def recv(self):
    status, val = self.conn.recv()
    if status != "ok":
      raise RuntimeError(f"env worker {self.proc.pid} failed:\n{val}")
    return val

  def close(self):
    try:
      self.send("close")
      self.recv()
    except (EOFError, BrokenPipeError, OSError, RuntimeError):
      pass
    self.proc.join(timeout=10)
    if self.proc.is_alive():
      self.proc.terminate()


class _Inline:
  def __init__(self, runner):
    self.runner, self._result = runner, None

  def send(self, cmd, *args):
    self._result = getattr(self.runner, cmd)(*args)

  def recv(self):
    return self._result

  def close(self):
    self.runner.close()


# ----------------------------------------------------------------------------- evaluation
def _episode_plan(seeds, num_episodes, initial_states) -> tuple[str, list[dict]]:
  """[(seed, demo name, state)] per episode, and the mode ('test' or 'train')."""
  if initial_states is not None:
    if seeds is not None:
      raise ValueError("pass `seeds` or `initial_states`, not both (train episodes reset with "
                       "the demo's own seed, else DEFAULT_TRAIN_SEED_BASE + i)")
    plan = []
    for i, item in enumerate(initial_states):
      if len(item) not in (2, 3):
        raise ValueError(f"initial_states[{i}]: expected (name, state) or (name, state, seed)")
      name, state = item[0], np.asarray(item[1], np.float64).reshape(-1)
      seed = item[2] if len(item) == 3 else getattr(item, "seed", None)
      seed = DEFAULT_TRAIN_SEED_BASE + i if seed is None else int(seed)
      plan.append({"seed": seed, "demo": str(name), "state": state})
    mode = "train"
  else:
    if seeds is None:
      seeds = range(DEFAULT_SEED_BASE, DEFAULT_SEED_BASE + int(num_episodes or 50))
    plan = [{"seed": int(s), "demo": None, "state": None} for s in seeds]
    mode = "test"
  if num_episodes is not None:
    if num_episodes > len(plan):
      what = "len(initial_states)" if mode == "train" else "len(seeds)"
      raise ValueError(f"num_episodes={num_episodes} > {what}={len(plan)}")
    plan = plan[:num_episodes]
  if not plan:
    raise ValueError("no episodes to evaluate")
  bad = [e["seed"] for e in plan if not 0 <= e["seed"] < 2**63]
  if bad:
    raise ValueError(f"episode seeds must be non-negative int64, got {bad[:5]}")
  return mode, plan


def evaluate_policy(policy_fn: Callable[..., np.ndarray], task: str, *,
                    num_episodes: int | None = None, seeds: Sequence[int] | None = None,
                    initial_states: Sequence[tuple] | None = None,
                    n_obs_steps: int = 2, n_action_steps: int = 8, max_steps: int | None = None,
                    num_workers: int = 0, use_images: bool = False, image_size: int = 84,
                    video_dir: str | None = None, num_videos: int = 2, video_size: int = 256,
                    json_path: str | None = None, mp_context: str = "spawn",
                    progress: bool = False) -> dict:
  """Run the policy closed-loop; see the module docstring. Returns a JSON-able dict."""
  mode, plan = _episode_plan(seeds, num_episodes, initial_states)
  keyed = _policy_takes_seeds(policy_fn)
  if int(getattr(policy_fn, "batch", 1) or 1) > 1:
    log.warning("the policy runs batches of %d rows: an episode's actions can change (by "
                "float rounding) with the rows it shares a call with, i.e. with num_workers; "
                "use a batch_size=1 runner for worker-count-independent episodes",
                policy_fn.batch)
  videos_on = bool(video_dir) and num_videos > 0
  spec = make_spec(task, use_images=use_images, image_size=image_size, render_size=video_size,
                   offscreen=videos_on)
  max_steps = int(max_steps or DEFAULT_MAX_STEPS.get(spec.task, 400))
  n_envs = max(1, min(int(num_workers), len(plan)))

  t_start = time.perf_counter()
  if num_workers <= 1:
    slots = [_Inline(_EnvRunner(spec, n_obs_steps, video_size))]
  else:
    ctx = mp.get_context(mp_context)
    slots = [_Proc(ctx, spec, n_obs_steps, video_size) for _ in range(n_envs)]
    for s in slots:
      s.recv()  # construction status
  t_ready = time.perf_counter()

  queue = list(enumerate(plan))
  current: list[tuple[int, dict] | None] = [None] * len(slots)
  obs: list[dict | None] = [None] * len(slots)
  steps_taken = [0] * len(slots)
  initial_sha1: list[str | None] = [None] * len(slots)
  results: dict[int, dict] = {}
  videos: list[str] = []
  latencies: list[float] = []
  env_steps, env_time, reset_time = 0, 0.0, 0.0
  pbar = None
  if progress:
    from tqdm import tqdm
    pbar = tqdm(total=len(plan), desc=f"eval {spec.task} ({mode})")

  def start(idxs):
    for i in idxs:
      ep, e = queue.pop(0)
      current[i] = (ep, e)
      vp = None
      if videos_on and ep < num_videos:
        tag = f"seed{e['seed']}" if mode == "test" else f"train_{e['demo']}"
        vp = os.path.join(video_dir, f"{spec.task}_ep{ep:03d}_{tag}.mp4")
        videos.append(vp)
      slots[i].send("reset", e["seed"], vp, e["state"])
    for i in idxs:
      r = slots[i].recv()
      obs[i], initial_sha1[i], steps_taken[i] = r["obs"], r["initial_state_sha1"], 0

  try:
    t0 = time.perf_counter()
    start([i for i in range(len(slots)) if queue][: len(queue)])
    reset_time += time.perf_counter() - t0
    while any(c is not None for c in current):
      active = [i for i, c in enumerate(current) if c is not None]
      batch = {k: np.stack([obs[i][k] for i in active]) for k in spec.obs_keys}
      t0 = time.perf_counter()
      if keyed:
        actions = policy_fn(batch,
                            seeds=np.array([current[i][1]["seed"] for i in active], np.int64),
                            steps=np.array([steps_taken[i] for i in active], np.int64))
      else:
        actions = policy_fn(batch)
      actions = np.asarray(actions)
      latencies.append(time.perf_counter() - t0)
      if actions.ndim != 3 or actions.shape[0] != len(active) or actions.shape[2] != 7 \
         or actions.shape[1] < n_action_steps:
        raise ValueError(f"policy_fn returned shape {actions.shape}; expected "
                         f"({len(active)}, >={n_action_steps}, 7)")
      if not np.all(np.isfinite(actions)):
        raise ValueError("policy_fn returned non-finite actions")
      t0 = time.perf_counter()
      for j, i in enumerate(active):
        slots[i].send("step_chunk", actions[j, :n_action_steps].astype(np.float64), max_steps)
      finished = []
      for i in active:
        r = slots[i].recv()
        env_steps += r["n"]
        obs[i] = r["obs"]
        steps_taken[i] = int(r["steps"])
        if r["done"]:
          ep, e = current[i]
          rec = {"episode": ep, "seed": e["seed"]}
          if mode == "train":
            rec["demo"] = e["demo"]
          rec.update(success=bool(r["success"]), length=int(r["steps"]),
                     initial_state_sha1=initial_sha1[i], final_state_sha1=r["final_state_sha1"])
          results[ep] = rec
          current[i] = None
          finished.append(i)
          if pbar is not None:
            pbar.update(1)
      env_time += time.perf_counter() - t0
      if finished and queue:
        t0 = time.perf_counter()
        start(finished[: len(queue)])
        reset_time += time.perf_counter() - t0
  finally:
    for s in slots:
      s.close()
    if pbar is not None:
      pbar.close()

  eps = [results[i] for i in sorted(results)]
  k = sum(e["success"] for e in eps)
  n = len(eps)
  lo, hi = wilson_interval(k, n)
  lengths = [e["length"] for e in eps]
  out = {
      "task": spec.task, "mode": mode, "num_episodes": n, "successes": k, "success_rate": k / n,
      "ci95": [lo, hi], "mean_episode_length": float(np.mean(lengths)),
      "mean_success_length": float(np.mean([e["length"] for e in eps if e["success"]]))
      if k else None,
      "policy_latency_ms": 1000 * float(np.mean(latencies)) if latencies else None,
      "policy_calls": len(latencies), "policy_keyed": keyed, "env_steps": env_steps,
      "env_steps_per_s": env_steps / env_time if env_time > 0 else None,
      "reset_s": reset_time, "startup_s": t_ready - t_start,
      "wall_s": time.perf_counter() - t_start,
      "n_obs_steps": n_obs_steps, "n_action_steps": n_action_steps, "max_steps": max_steps,
      "num_workers": len(slots) if num_workers > 1 else 0, "use_images": use_images,
      "videos": videos, "episodes": eps,
  }
  if json_path:
    util.write_json(json_path, out, indent=2, makedirs=True)
  return out
