"""Benchmark `aloha` (stage 2; docs/aloha.md): bimanual ALOHA tasks of gym-aloha, closed loop.

Data: a task's demonstrations (`config.data.dataset`): our HDF5 from the scripted experts
(`decoupled_jax.aloha.demos_main`, robomimic layout) or LeRobot v3.0 with the schema of
LeRobot's published `aloha_sim_*` datasets (`data.format='lerobot'`), read as the `dataset`
benchmark reads any dataset (benchmarks/dataset.py): low-dim keys by data limits except the
joint state `qpos`, which takes the actions' scale (`state_in_action_scale`), 14-D
`joint_pos` actions of the packaged robot (`config.robot`, kinematics/robot.py
`packaged_robot_config('aloha')`) normalised by its joint limits and gripper range — the scale
of an ALOHA stage 1 (`configs/pretrain.py:robot=aloha`), so its frozen expert fits. The key map
reorders gym-aloha's action [left 6, left gripper, right 6, right gripper] into the robot's
[12 arm joints, 2 grippers] (`data/aloha.py: aloha_key_map`); the evaluation sends the
inverse permutation to the simulator side (`action_permutation` in the server's metadata).

Evaluation: the trained policy is served in-process on a free port and the ALOHA runner
(`python -m decoupled_jax.aloha.eval_main`, gym-aloha in `.venv-aloha`: `make aloha-env`) rolls
out `eval.num_episodes` episodes of `eval.max_steps` steps from object poses drawn from seeds
100000 + i; results in `<workdir>/aloha_eval/`, the per-episode outcomes in `<workdir>/eval.json`.
"""
from __future__ import annotations

import json
import os
import time

import numpy as np

from decoupled_jax.benchmarks import venv
from decoupled_jax.benchmarks.base import TaskData
from decoupled_jax.benchmarks.dataset import PlainDataset
from decoupled_jax.data.normalizer import FieldStats, LimitsNormalizer
from decoupled_jax.data.sources import parse_key
from decoupled_jax.errors import ConfigError
from decoupled_jax.util import wilson_interval, write_json

EVAL_DIR = "aloha_eval"
STATE_KEY = "qpos"     # the 14 joint positions, gym-aloha's order (normalised as the actions)


def action_permutation(key: str, dim: int = 14) -> list[int]:
  """The simulator's action from the policy's: env_action = policy_action[perm], for the
  key-map entry `key` that built the policy's actions from the dataset's (e.g.
  'actions[0:6,7:13,6,13]' -> [0..5, 12, 6..11, 13])."""
  spec = parse_key(key)
  order = np.arange(dim)[None]
  picked = spec.apply(order, f"config.data.key_map.actions={key!r}")[0] if spec.index is not None \
      else order[0]
  if sorted(picked.tolist()) != list(range(dim)):
    raise ConfigError(f"config.data.key_map.actions={key!r}: selects {picked.tolist()}, not a "
                      f"reordering of the simulator's {dim} action dims")
  return np.argsort(picked).tolist()


def state_in_action_scale(norm: LimitsNormalizer, perm) -> LimitsNormalizer:
  """`norm` with the joint-state observation (`qpos`, gym-aloha's order) normalised like the
  actions (the robot's joint limits and gripper range, `perm` = the simulator's order of the
  policy's action dims) instead of by the demos' min/max. Why (docs/aloha.md, "Observation
  scale"): some joints barely move in the scripted demos (the left waist spans 0.013 rad in
  transfer_cube's), so min/max scaling multiplied their closed-loop drift ~150x into
  observations far outside training, and the policy's answers diverged the simulation."""
  a = norm.stats["actions"]
  if a.dims is not None or np.shape(a.min) != (len(perm),):
    raise ConfigError(f"the action normaliser has shape {np.shape(a.min)} (dims {a.dims}); "
                      f"the {STATE_KEY!r} observation needs a per-dim {len(perm)}-D one")
  idx = np.asarray(perm)
  stats = dict(norm.stats)
  stats[STATE_KEY] = FieldStats.create(np.asarray(a.min)[idx], np.asarray(a.max)[idx])
  return LimitsNormalizer(stats)


class AlohaTask(PlainDataset):
  """Stage-2 benchmark: one gym-aloha task's demonstrations, evaluated closed loop."""
  name = "aloha"

  def load(self, config) -> TaskData:
    data = super().load(config)
    data.task = config.data.task
    key = config.data.key_map.to_dict().get("actions", "")
    perm = action_permutation(key) if key else list(range(data.action_dim))
    if STATE_KEY in data.norm:
      data.norm = state_in_action_scale(data.norm, perm)
    data.extra_meta.update(
        aloha_task=config.data.task,
        action_permutation=perm,
        action_layout="gym-aloha joint positions, reordered to [12 arm joints (left, right), "
                      "left gripper, right gripper]; grippers normalised (1 = open)")
    return data

  def evaluators(self, config, data: TaskData, runner):
    def final_evaluate(params, workdir, step):
      if int(config.eval.num_episodes) <= 0:
        return {}
      return served_evaluation(runner(params), data.extra_meta, config, workdir)
    return None, final_evaluate

  # ---------------------------------------------------------------- chain hooks (pipelines/paper.py)
  def chain_demos_folder(self, chain) -> str:
    return "demos_images" if chain.demos.images else "demos"

  def chain_demos(self, chain, demos_dir: str, tasks) -> dict:
    """{task: {'output': its HDF5, 'expert': the scripted expert's sidecar}}."""
    return generate_demos(chain, demos_dir, tasks)

  def chain_stage2(self, c, chain, task: str, dataset: str) -> None:
    c.data.dataset, c.data.task = dataset, task

  def chain_notes(self, results: dict) -> str:
    lines = ["", "Scripted expert (demonstrations kept / attempts):", "",
             "| task | demos | attempts | expert success | s / attempt |", "|---|---|---|---|---|"]
    for task, d in results["demos"].items():
      e = d.get("expert") or {}
      lines.append(f"| {task} | {e.get('num_demos', '?')} | {e.get('attempts', '?')} | "
                   f"{100 * float(e.get('success_rate', 0)):.0f}% | "
                   f"{float(e.get('seconds_per_attempt', float('nan'))):.2f} |")
    return "\n".join(lines) + "\n"


def server_extras(meta: dict) -> dict:
  """What the ALOHA runner reads from the server's metadata besides the generic fields."""
  return {"task": meta["aloha_task"], "action_permutation": meta["action_permutation"],
          "action_layout": meta["action_layout"]}


def served_evaluation(runner, meta: dict, config, workdir: str) -> dict:
  """Serves `runner` and runs the ALOHA runner against it; writes `<workdir>/eval.json`
  (success rate, Wilson interval, per-episode outcomes) and returns it."""
  e = config.eval
  py = venv.python(e.aloha_python, "aloha", "config.eval.aloha_python")
  out_dir = os.path.join(workdir, EVAL_DIR)
  task = meta["aloha_task"]
  t0 = time.time()

  def cmd(port):
    return [py, "-m", "decoupled_jax.aloha.eval_main", f"--address=127.0.0.1:{port}",
            f"--task={task}", f"--episodes={int(e.num_episodes)}", f"--seed={int(e.eval_seed)}",
            f"--max_steps={int(e.max_steps)}", f"--num_videos={int(e.num_videos)}",
            f"--out_dir={out_dir}"]

  venv.run_served(runner, server_extras(meta), cmd, os.path.join(out_dir, "runner.log"),
                  "ALOHA runner")
  tdir = os.path.join(out_dir, task)
  with open(os.path.join(tdir, "summary.json")) as f:
    summary = json.load(f)
  with open(os.path.join(tdir, "episodes.jsonl")) as f:
    rows = {r["episode"]: r for r in map(json.loads, filter(str.strip, f))}
  episodes = [{"episode": e, "seed": rows[e]["pose_seed"], "success": bool(rows[e]["success"]),
               "length": int(rows[e]["steps"]), **({"error": rows[e]["error"]}
                                                   if rows[e].get("error") else {})}
              for e in range(int(summary["episodes"]))]
  k, n = sum(r["success"] for r in episodes), len(episodes)
  out = {"task": task, "success_rate": k / max(n, 1), "ci95": list(wilson_interval(k, n)),
         "num_episodes": n, "successes": k,
         "mean_episode_length": float(np.mean([r["length"] for r in episodes])) if n else 0.0,
         "episodes": episodes, "wall_time_s": time.time() - t0,
         "policy_latency_ms": float(np.mean([rows[e].get("infer_ms", 0.0) for e in rows])),
         "videos": [os.path.join(tdir, rows[e]["video"]) for e in sorted(rows)
                    if rows[e].get("video")],
         "runner_summary": os.path.join(tdir, "summary.json")}
  write_json(os.path.join(workdir, "eval.json"), out)
  return out


def generate_demos(config, out_dir: str, tasks) -> dict:
  """Scripted demonstrations of `tasks` (`decoupled_jax.aloha.demos_main` in the ALOHA venv;
  resumable per task) in `config.demos.dataset_dir` or `out_dir`."""
  d = config.demos
  out_dir = d.dataset_dir or out_dir
  py = venv.python(d.aloha_python, "aloha", "config.demos.aloha_python")
  info = {}
  for task in tasks:
    cmd = [py, "-m", "decoupled_jax.aloha.demos_main", f"--task={task}",
           f"--num_demos={int(d.num_demos)}", f"--seed={int(d.seed)}", f"--out_dir={out_dir}"]
    if d.images:
      cmd.append(f"--camera_size={int(d.image_size[0])}x{int(d.image_size[1])}")
    venv.run(cmd, os.path.join(out_dir, f"{task}.log"), f"ALOHA demo generation ({task})")
    path = os.path.join(out_dir, f"{task}.hdf5")
    info[task] = {"output": path, "expert": json.load(open(path + ".json"))}
    if d.lerobot:   # the same demos as LeRobot v3.0 in the aloha_sim_* schema (data/aloha.py)
      from decoupled_jax.data.aloha import export_aloha_lerobot
      info[task]["lerobot"] = export_aloha_lerobot(path, os.path.join(out_dir, f"{task}_lerobot"),
                                                   task=task)
  return info
