"""Scripted-expert demonstration generation in robosuite, written as robomimic HDF5 files.

For each task, episodes with seeds seed, seed+1, ... are rolled out by the scripted expert
(`decoupled_jax/sim/experts.py`) in `num_workers` processes (inline when <= 1). Every attempt
leaves one shard in `<output>/<Task>.hdf5.shards/`: `seed_XXXXXXX.hdf5` for a success (written
atomically) or `seed_XXXXXXX.fail`. Shards are append-only, so rerunning skips every seed
already tried and continues. Once `num_demos` successes exist, the first `num_demos` (by seed)
are merged into `<output>/<Task>.hdf5` atomically (tmp + os.replace), with masks train/valid,
and a summary `<Task>.hdf5.json` is written. `experiments/generate_demos.py` is the binary.

An attempt is a pure function of its seed: `env.reset(seed)` re-seeds everything random in
robosuite, rebuilding the model where it is random (Lift's cube size), and the expert's noise
restarts from the seed (`experts.run_expert_episode`). So a seed's demo (states, actions,
observations) is the same bit for bit whichever worker made it and whatever it ran before, and
each demo records its `seed` attribute (used by `evaluator.demo_initial_states`).
"""
from __future__ import annotations

import glob
import multiprocessing as mp
import os
import re
import time

_SHARD_RE = re.compile(r"seed_(\d+)\.(hdf5|fail)$")

# ----------------------------------------------------------------------------- worker side
_W: dict = {}


def _init_worker(task: str, images: bool, image_size: int, extra_steps: int):
  from decoupled_jax.sim import experts, robosuite_env
  _W["env"] = robosuite_env.make_env(task, use_images=images, image_size=image_size,
                                     offscreen=False)
  _W["expert"] = experts.make_expert(task)
  _W["extra"] = extra_steps


def _run_seed(seed: int, shard_dir: str):
  from decoupled_jax.data import robomimic_hdf5
  from decoupled_jax.sim import experts
  env, expert = _W["env"], _W["expert"]
  t0 = time.perf_counter()
  ep = experts.run_expert_episode(env, expert, seed,
                                  extra_steps_after_success=_W["extra"])
  if ep["success"]:
    robomimic_hdf5.write_demo_shard(os.path.join(shard_dir, f"seed_{seed:07d}.hdf5"), ep,
                                    env_args=env.env_args())
  else:
    with open(os.path.join(shard_dir, f"seed_{seed:07d}.fail"), "w") as f:
      f.write(f"length={ep['length']} phase={expert.phase_name}\n")
  return seed, ep["success"], ep["length"], time.perf_counter() - t0


# ----------------------------------------------------------------------------- driver
def _scan(shard_dir: str) -> dict[int, bool]:
  done = {}
  for p in os.listdir(shard_dir):
    m = _SHARD_RE.match(p)
    if m:
      done[int(m.group(1))] = m.group(2) == "hdf5"
  return done


def generate_task(task: str, out_dir: str, *, num_demos: int, num_workers: int = 1,
                  images: bool = False, image_size: int = 84, seed: int = 0,
                  max_attempts: int = 0, valid_fraction: float = 0.1,
                  extra_steps_after_success: int = 0, progress: bool = True) -> dict:
  """Generate (or resume) demos for one task; returns a summary dict."""
  from decoupled_jax import util
  from decoupled_jax.data import robomimic_hdf5
  from decoupled_jax.sim.robosuite_env import canonical_task
  task = canonical_task(task)
  out_path = os.path.join(out_dir, f"{task}.hdf5")
  shard_dir = out_path + ".shards"
  os.makedirs(shard_dir, exist_ok=True)
  for tmp in glob.glob(os.path.join(shard_dir, "*.tmp")):  # leftovers of a killed run
    os.remove(tmp)
  done = _scan(shard_dir)
  max_attempts = max_attempts or 3 * num_demos + 20

  def n_success():
    return sum(done.values())

  todo = [s for s in range(seed, seed + max_attempts) if s not in done]
  prev_success, prev_attempts = n_success(), len(done)
  t0 = time.perf_counter()
  new_attempts, new_success, lengths, ep_secs = 0, 0, [], []
  pbar = None
  if progress:
    from tqdm import tqdm
    pbar = tqdm(total=num_demos, initial=min(prev_success, num_demos), desc=task, unit="demo")

  def record(res):
    nonlocal new_attempts, new_success
    sd, ok, length, secs = res
    done[sd] = ok
    new_attempts += 1
    ep_secs.append(secs)
    if ok:
      new_success += 1
      lengths.append(length)
      if pbar is not None and n_success() <= num_demos:
        pbar.update(1)
    if pbar is not None:
      pbar.set_postfix(rate=f"{n_success() / max(len(done), 1):.2f}")

  if n_success() < num_demos and todo:
    if num_workers <= 1:
      _init_worker(task, images, image_size, extra_steps_after_success)
      for sd in todo:
        if n_success() >= num_demos:
          break
        record(_run_seed(sd, shard_dir))
    else:
      ctx = mp.get_context("spawn")
      with ctx.Pool(num_workers, initializer=_init_worker,
                    initargs=(task, images, image_size, extra_steps_after_success)) as pool:
        pending = []
        it = iter(todo)
        while True:
          # keep a bounded window of in-flight seeds; stop submitting once enough succeeded
          while (len(pending) < 2 * num_workers and
                 n_success() + len(pending) < num_demos + num_workers):
            sd = next(it, None)
            if sd is None:
              break
            pending.append(pool.apply_async(_run_seed, (sd, shard_dir)))
          if not pending:
            break
          pending[0].wait()
          for r in [r for r in pending if r.ready()]:
            pending.remove(r)
            record(r.get())
  if pbar is not None:
    pbar.close()
  elapsed = time.perf_counter() - t0

  ok_seeds = sorted(k for k, v in done.items() if v)
  keep = ok_seeds[:num_demos]
  summary = {
      "task": task, "output": out_path, "requested": num_demos, "written": 0,
      "attempts": len(done), "successes": len(ok_seeds),
      "expert_success_rate": len(ok_seeds) / max(len(done), 1),
      "this_run": {"attempts": new_attempts, "successes": new_success, "wall_s": elapsed,
                   "demos_per_min": 60 * new_success / elapsed if elapsed > 0 else None,
                   "mean_episode_s": sum(ep_secs) / len(ep_secs) if ep_secs else None,
                   "mean_success_length": sum(lengths) / len(lengths) if lengths else None},
      "resumed_from": {"attempts": prev_attempts, "successes": prev_success},
      "images": images,
  }
  if keep:
    robomimic_hdf5.merge_shards([os.path.join(shard_dir, f"seed_{k:07d}.hdf5") for k in keep],
                                out_path, valid_fraction=valid_fraction)
    summary["written"] = len(keep)
    ep = robomimic_hdf5.load_robomimic_hdf5(out_path, ["robot0_eef_pos"], load_images=False)
    lens = [int(x) for x in (ep.episode_ends - ep.episode_starts)]
    summary["demo_length"] = {"mean": sum(lens) / len(lens), "min": min(lens), "max": max(lens)}
  util.write_json(out_path + ".json", summary, indent=2)
  return summary


