"""Benchmark `libero` (docs/libero.md; method spec §1.4, §4.2, §6, §7.2), both stages.

Stage 1: observation-free pairs from a suite's demonstrations: condition = the window of the
end-effector state [pos(3), rot6d(axis-angle)(6), finger(1)] (signal 'eepose'; 'none' = zeros),
target = the same frames' delta actions as [dpos, rot6d, grip].
Stage 2: normal / decoupled / random_frozen on `config.data.suite`'s demos: low-dim state,
privileged object poses and/or the two cameras, plus the instruction one-hot (`data/libero.py`).
Normalisation (§6): action positions by the fixed delta-action range [-1, 1] (the controller's
input range; `config.data.position_box`) in both stages, so the frozen backbone sees one
action scale; state positions, finger and object poses by data limits; rotations raw.

Evaluation: the trained policy is served in-process (`serving.server.PolicyServer`, port 0)
and the LIBERO runner (`python -m decoupled_jax.libero.eval_main`) runs in the LIBERO venv
(`config.eval.libero_python`) against it; its per-task results land in
`<workdir>/libero_eval/`.
"""
from __future__ import annotations

import json
import logging
import os
import time

import jax
import numpy as np

from decoupled_jax.benchmarks import venv
from decoupled_jax.benchmarks.base import (COND_KEY, Stage1Data, Stage2Benchmark, TaskData,
                                           check_stage1_checkpoint, describe_stage1,
                                           mean_pose_baseline, pose_errors)
from decoupled_jax.data import libero as libero_data
from decoupled_jax.data import rotation
from decoupled_jax.data.episodes import EpisodeData
from decoupled_jax.data.normalizer import FieldStats, LimitsNormalizer
from decoupled_jax.data.windows import prepare_policy_dataset
from decoupled_jax.libero import suites
from decoupled_jax.training import sharding
from decoupled_jax.util import read_jsonl_by, seeded_batches, write_json

DELTA_POS_M = 0.05        # metres per unit of LIBERO's delta position action (OSC output_max)
STATE_KEYS = ("robot0_eef_pos", "robot0_eef_axis_angle", "robot0_gripper_qpos")
DATA_LIMIT_KEYS = ("robot0_eef_pos", "robot0_gripper_qpos", "object_poses", "robot0_joint_pos")
ACTION_LAYOUT = ("LIBERO delta OSC_POSE actions [dpos(3), d-axis-angle(3), gripper(1)] in "
                 "[-1, 1]")


def _action_stats(box) -> FieldStats:
  lo, hi = (np.asarray(b, np.float32) for b in box)
  return FieldStats.create(lo, hi, dims=slice(0, 3))


# ------------------------------------------------------------------------------ stage 1
def state_action_pairs(data: EpisodeData, signal: str) -> EpisodeData:
  """(cond (N, 10), target (N, 10)) per frame from a suite's episodes (spec §1.4)."""
  f = data.fields
  rot = rotation.axis_angle_to_rot6d(f["robot0_eef_axis_angle"].astype(np.float64))
  state = np.concatenate([f["robot0_eef_pos"], rot, f["robot0_gripper_qpos"][:, :1]], -1)
  cond = state.astype(np.float32) if signal == "eepose" else np.zeros_like(state, np.float32)
  target = rotation.env_action_to_model(f["actions"].astype(np.float64)).astype(np.float32)
  return EpisodeData({"cond": cond, "target": target}, data.episode_ends, source=data.source,
                     attrs=dict(data.attrs))


def load_stage1_pairs(config) -> tuple[EpisodeData, EpisodeData]:
  """(train, held-out) pairs over every suite in `config.data.suites`; the last
  `eval.holdout_fraction` of each suite's episodes are held out."""
  parts_train, parts_eval = [], []
  for suite in config.data.suites:
    data = libero_data.load_suite(config.data.dataset, suite, STATE_KEYS)
    pairs = state_action_pairs(data, config.data.signal)
    n = pairs.num_episodes
    k = max(1, int(round(n * float(config.eval.holdout_fraction)))) if n > 1 else 0
    parts_train.append(_episodes(pairs, 0, n - k))
    if k:
      parts_eval.append(_episodes(pairs, n - k, n))
  return _concat(parts_train), (_concat(parts_eval) if parts_eval else None)


def _episodes(data: EpisodeData, a: int, b: int) -> EpisodeData:
  starts = data.episode_starts
  lo, hi = int(starts[a]), int(data.episode_ends[b - 1])
  return EpisodeData({k: v[lo:hi] for k, v in data.fields.items()},
                     data.episode_ends[a:b] - lo, source=data.source, attrs=data.attrs)


def _concat(parts) -> EpisodeData:
  lens = np.concatenate([np.diff(np.concatenate([[0], p.episode_ends])) for p in parts])
  return EpisodeData({k: np.concatenate([p.fields[k] for p in parts]) for k in parts[0].fields},
                     np.cumsum(lens), source="+".join(p.source for p in parts))


def stage1_normalizer(pairs: EpisodeData, box) -> LimitsNormalizer:
  """cond: data limits on position (0:3) and finger (9); rot6d raw. target: the box."""
  stats = {"actions": _action_stats(box)}
  if np.any(pairs.fields["cond"]):
    stats[COND_KEY] = LimitsNormalizer.fit(pairs.fields, {"cond": [0, 1, 2, 9]}).to_dict()[
        "fields"]["cond"]
  return LimitsNormalizer.from_stats(stats)


class LiberoPairs:
  """Stage-1 benchmark: every suite of `config.data.suites`; the last `eval.holdout_fraction`
  of each suite's episodes are held out and scored (delta positions in metres)."""
  name = "libero"

  def load(self, config) -> Stage1Data:
    from decoupled_jax.kinematics.demo_pairs import gather_windows
    horizon, batch = int(config.data.horizon), int(config.train.batch_size)
    train, held = load_stage1_pairs(config)
    norm = stage1_normalizer(train, config.data.position_box)
    logging.info("LIBERO stage 1 (%s): %d train episodes / %d frames, %d held-out episodes",
                 config.data.signal, train.num_episodes, train.num_frames,
                 held.num_episodes if held is not None else 0)
    cond_dim = train.fields["cond"].shape[-1]
    target_dim = train.fields["target"].shape[-1]
    e_cond = np.zeros((0, horizon, cond_dim), np.float32)
    e_target = np.zeros((0, horizon, target_dim), np.float32)
    baseline = {}
    if held is not None:
      rng = np.random.default_rng(10_000 + config.seed)
      ends = rng.integers(0, held.num_frames, size=min(int(config.eval.num_windows),
                                                       held.num_frames))
      e_cond, e_target = gather_windows(held, horizon, ends)
      _, ref_target = gather_windows(train, horizon, rng.integers(0, train.num_frames, 4096))
      baseline = mean_pose_baseline(_metres(ref_target), _metres(e_target))

    def errors(pred):
      return pose_errors(_metres(pred), _metres(e_target))

    meta = {"signal": config.data.signal, "source": "libero_demos",
            "suites": list(config.data.suites)}
    data = Stage1Data(norm=norm, cond_dim=cond_dim, action_dim=target_dim, meta=meta,
                      eval_cond=e_cond, eval_target=e_target, errors=errors,
                      baseline=lambda: dict(baseline), log_line="LIBERO stage-1 eval (dpos "
                      "mm/step)")

    def window(t):
      return jax.tree.map(np.asarray, data.normalise(*gather_windows(train, horizon, t)))

    data.host_batches = seeded_batches(train.num_frames, batch, config.seed, window,
                                       rows=sharding.process_rows(batch))
    return data

  def describe(self, config, summary: dict | None) -> str:
    """What a stage 1 of `config` saw, and its held-out delta-action error."""
    suites = " + ".join(config.get("data", {}).get("suites", ()))
    return describe_stage1(
        f"LIBERO demonstrations{f' of {suites}' if suites else ''} (state -> delta action)",
        config, summary,
        "held-out delta-action error {err:.1f} mm/step (mean-action baseline {baseline:.1f})")


def _metres(x):
  x = np.array(x)
  x[..., :3] *= DELTA_POS_M
  return x


# ------------------------------------------------------------------------------ stage 2
def policy_normalizer(episodes: EpisodeData, lowdim_keys, box) -> LimitsNormalizer:
  fields = {k: None for k in lowdim_keys if k in DATA_LIMIT_KEYS}
  return LimitsNormalizer.fit(episodes, fields, overrides={"actions": _action_stats(box)})


class LiberoSuite(Stage2Benchmark):
  """Stage-2 benchmark: one suite's demonstrations, evaluated by the LIBERO runner."""
  name = "libero"

  def load(self, config) -> TaskData:
    d = config.data
    image_keys, lowdim_keys = tuple(d.image_keys), tuple(d.lowdim_keys)
    obs_keys = image_keys + lowdim_keys
    tasks = suites.parse_task_list(d.tasks, d.suite)
    raw = libero_data.load_suite(d.dataset, d.suite, obs_keys, tasks=tasks,
                                 num_demos=int(d.num_demos))
    episodes = prepare_policy_dataset(raw, obs_keys)
    norm = policy_normalizer(episodes, lowdim_keys, d.position_box)
    language = ({"key": libero_data.TASK_KEY, "instructions": raw.attrs["instructions"]}
                if libero_data.TASK_KEY in lowdim_keys else None)
    extra = {"suite": d.suite, "tasks": tasks, "action_layout": ACTION_LAYOUT,
             "max_steps": suites.MAX_STEPS[d.suite], "language": language}
    if image_keys:   # the evaluation renders its cameras at the size the policy trained on
      extra["image_size"] = int(episodes.fields[image_keys[0]].shape[-3])
    return TaskData(episodes, norm, task=d.suite, extra_meta=extra)

  def check_stage1(self, config, data: TaskData) -> dict:
    """A LIBERO stage-1 checkpoint (state -> delta action, same action scale) or, as the
    demonstration-free alternative, a stage-1 checkpoint on our generated Panda FK data: with
    delta-action targets (`data.fk.target='delta'`, the same action form and scale), or
    absolute poses in its workspace box (each stage's targets normalised to [-1, 1] by its own
    scale; the paper's DROID stage 1 for LIBERO maps joints to delta velocities)."""
    return check_stage1_checkpoint(
        config, data, benchmarks=("libero", "fk"), same_action_scale=("libero",),
        fk_targets=("absolute", "delta"))

  def evaluators(self, config, data: TaskData, runner):
    def final_evaluate(params, workdir, step):
      if int(config.eval.episodes_per_task) <= 0:
        return {}
      meta = dict(data.extra_meta)
      out_dir = os.path.join(workdir, "libero_eval")
      summary = served_evaluation(runner(params), meta, config, out_dir)
      # The per-episode outcomes where every benchmark keeps them (the tables' records read it).
      write_json(os.path.join(workdir, "eval.json"),
                 dict(summary, episodes=episode_outcomes(out_dir, summary)))
      return summary
    return None, final_evaluate

  # ---------------------------------------------------------------- chain hooks (pipelines/paper.py)
  def chain_demos_folder(self, chain) -> str:
    return "demos_images" if chain.demos.cameras else "demos"

  def chain_demos(self, chain, demos_dir: str, suites) -> dict:
    """{suite: {'output': the demos directory, 'tasks': per-task sidecars}}."""
    out = generate_demos(chain, demos_dir, suites)
    return {s: {"output": out["dir"], "tasks": out["suites"][s]} for s in suites}

  def chain_stage2(self, c, chain, suite: str, dataset: str) -> None:
    c.data.dataset, c.data.suite, c.data.tasks = dataset, suite, chain.libero_tasks

  def chain_notes(self, results: dict) -> str:
    """Per-task successes of every run and the scripted experts' success per task."""
    lines = ["", "Per task (successes / episodes):", "", "| suite | mode | seed | per task |",
             "|---|---|---|---|"]
    for r in results["rows"]:
      per = " ".join(f"{int(t['successes'])}/{int(t['episodes'])}" for _, t in sorted(
          (r.get("per_task") or {}).items(), key=lambda kv: int(kv[0])))
      lines.append(f"| {r['task']} | {r['mode']} | {r['seed']} | {per or '(not evaluated)'} |")
    lines += ["", "Expert (scripted demonstrations) success per task:", "",
              "| suite | task | demos | attempts | expert success |", "|---|---|---|---|---|"]
    for suite, d in results["demos"].items():
      for t in d.get("tasks", []):
        lines.append(f"| {suite} | {t.get('task_id')} | {t.get('num_demos', t.get('written'))} "
                     f"| {t.get('attempts')} | {100 * float(t.get('success_rate', 0)):.0f}% |")
    return "\n".join(lines) + "\n"


def server_extras(meta: dict) -> dict:
  """Metadata a LIBERO policy's server sends besides the generic fields."""
  return {k: meta[k] for k in ("suite", "action_layout", "language", "max_steps")
          if meta.get(k) is not None}


def served_evaluation(runner, meta: dict, config, out_dir: str) -> dict:
  """Serves `runner` on a free local port and runs the LIBERO runner against it."""
  e = config.eval
  py = venv.python(e.libero_python, "libero", "config.eval.libero_python")
  t0 = time.time()
  tasks = "+".join(str(t) for t in meta["tasks"])

  def cmd(port):
    out = [py, "-m", "decoupled_jax.libero.eval_main", f"--address=127.0.0.1:{port}",
           f"--suite={meta['suite']}", f"--tasks={tasks}",
           f"--episodes={int(e.episodes_per_task)}", f"--eval_seed={int(e.eval_seed)}",
           f"--out_dir={out_dir}"]
    if meta.get("image_size"):
      out.append(f"--image_size={int(meta['image_size'])}")
    return out

  venv.run_served(runner, server_extras(meta), cmd, os.path.join(out_dir, "runner.log"),
                  "LIBERO runner")
  with open(os.path.join(out_dir, meta["suite"], "summary.json")) as f:
    summary = json.load(f)
  summary["wall_time_s"] = time.time() - t0
  return summary


def episode_outcomes(out_dir: str, summary: dict) -> list[dict]:
  """The episodes the LIBERO runner's `summary` counts, from its resumable per-task files
  (`out_dir/<suite>/task_<id>.jsonl`, read as the runner reads them: a rerun episode's last row
  wins), in (task, episode) order: task, episode, LIBERO init state, seed, success, length (and
  the error, if the episode ended on one)."""
  rows = []
  for tid, t in sorted(summary["tasks"].items(), key=lambda kv: int(kv[0])):
    done = read_jsonl_by(os.path.join(out_dir, summary["suite"], f"task_{int(tid)}.jsonl"))
    for e in range(int(t["episodes"])):
      r = done[e]
      rows.append({"task_id": int(r["task_id"]), "episode": e,
                   "init_index": r.get("init_index"), "seed": r.get("seed"),
                   "success": bool(r["success"]), "length": int(r["steps"]),
                   **({"error": r["error"]} if r.get("error") else {})})
  return rows


def generate_demos(config, out_dir: str, suites) -> dict:
  """Scripted demonstrations of `suites` (`decoupled_jax.libero.demos_main` in the LIBERO
  venv; resumable per task) in `config.demos.dataset_dir` or `out_dir`. Returns
  {"dir": the demos directory, "suites": {suite: [per-task sidecar dicts]}}."""
  d = config.demos
  out_dir = d.dataset_dir or out_dir
  py = venv.python(d.libero_python, "libero", "config.demos.libero_python")
  info = {}
  for suite in suites:
    cmd = [py, "-m", "decoupled_jax.libero.demos_main", f"--suite={suite}",
           f"--tasks={config.libero_tasks}", f"--num_demos={int(d.num_demos)}",
           f"--out_dir={out_dir}", f"--seed={int(d.seed)}"]
    if tuple(d.cameras):
      cmd += [f"--cameras={','.join(d.cameras)}", f"--image_size={int(d.image_size)}"]
    venv.run(cmd, os.path.join(out_dir, f"{suite}.log"), f"LIBERO demo generation ({suite})")
    info[suite] = [json.load(open(p)) for p in sorted(
        os.path.join(out_dir, suite, n) for n in os.listdir(os.path.join(out_dir, suite))
        if n.endswith("_demo.hdf5.json"))]
  return {"dir": out_dir, "suites": info}
