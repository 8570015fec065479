"""The paper's experiment end to end, resumable (the library's main job):

  on-device FK data -> stage-1 pretraining -> demonstrations (generated or reused) ->
  stage-2 decoupled and normal training (same seed and budget) -> closed-loop evaluation ->
  results table (Markdown + results.json), plot, TensorBoard logs, rollout videos.

Every stage writes its outputs under `workdir` and is skipped when they already exist
(a stage with checkpoints but no summary is resumed), so an interrupted run continues.
Layout:
  workdir/stage1/                 stage-1 run (checkpoints/, tensorboard/, summary.json)
  workdir/demos/<Task>.hdf5       demonstrations (unless config.demos.dataset_dir points elsewhere)
  workdir/<Task>/<mode>/          stage-2 runs (checkpoints/, tensorboard/, videos/, summary.json)
  workdir/results.{json,md,png}
"""
from __future__ import annotations

import json
import logging
import os
import time

import ml_collections
import numpy as np

from decoupled_jax.pipelines import common, run
from decoupled_jax.training import sharding
from decoupled_jax.training.workdir import WorkdirLock


def _done(path: str) -> bool:
  return os.path.exists(path)


def _resume_flag(run_dir: str) -> bool:
  ckpt = os.path.join(run_dir, "checkpoints")
  return os.path.isdir(ckpt) and any(n.isdigit() for n in os.listdir(ckpt))


def run_stage1(config, workdir: str) -> dict:
  run_dir = os.path.join(workdir, "stage1")
  summary_path = os.path.join(run_dir, run.SUMMARY)
  if _done(summary_path):
    logging.info("stage 1: reusing %s", summary_path)
    return json.load(open(summary_path))
  c = ml_collections.ConfigDict(config.stage1.to_dict())
  c.progress = config.progress
  return run.run(c, run_dir, resume=_resume_flag(run_dir))


def demos_for_task(config, out_dir: str, task: str) -> dict:
  """`config.demos.dataset_dir/<Task>.hdf5` if set, else generated (once) into `out_dir`."""
  d = config.demos
  if d.dataset_dir:
    path = os.path.join(d.dataset_dir, f"{task}.hdf5")
    if not os.path.exists(path):
      raise FileNotFoundError(f"config.demos.dataset_dir={d.dataset_dir} has no {task}.hdf5")
    return {"task": task, "output": path, "reused": True}
  path = os.path.join(out_dir, f"{task}.hdf5")
  if _done(path) and _done(path + ".json"):
    info = json.load(open(path + ".json"))
    if info.get("written", 0) >= d.num_demos:
      return dict(info, reused=True)
  info = None
  if sharding.is_primary():   # one process generates; the others wait for the file
    from decoupled_jax.sim.demos import generate_task
    info = generate_task(task, out_dir, num_demos=int(d.num_demos),
                         num_workers=int(d.num_workers), images=bool(d.images),
                         seed=int(d.seed), progress=bool(config.progress))
  _barrier(f"demos_{task}")
  return info if info is not None else dict(json.load(open(path + ".json")), reused=True)


def _barrier(name: str) -> None:
  import jax
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(name)


def stage2_dir(workdir: str, task: str, mode: str, seed: int, num_seeds: int) -> str:
  return os.path.join(workdir, task, mode if num_seeds == 1 else f"{mode}_seed{seed}")


def run_stage2(config, workdir: str, task: str, mode: str, dataset: str, stage1_ckpt: str,
               seed: int) -> dict:
  run_dir = stage2_dir(workdir, task, mode, seed, len(config.seeds))
  summary_path = os.path.join(run_dir, run.SUMMARY)
  if _done(summary_path):
    logging.info("%s/%s: reusing %s", task, mode, summary_path)
    return json.load(open(summary_path))
  c = ml_collections.ConfigDict(config.stage2.to_dict())
  c.mode, c.data.dataset, c.data.task, c.seed = mode, dataset, task, int(seed)
  c.stage1_checkpoint = stage1_ckpt if mode == "decoupled" else ""
  c.progress = config.progress
  return run.run(c, run_dir, resume=_resume_flag(run_dir))


def results_rows(stage1: dict, runs: dict) -> list[dict]:
  rows = []
  for (task, mode, seed), s in runs.items():
    e = s.get("eval", {})
    rows.append({
        "task": task, "mode": mode, "seed": seed, "backbone": s["backbone"],
        "success_rate": e.get("success_rate"), "ci95": e.get("ci95"),
        "episodes": e.get("num_episodes", 0), "mean_episode_length": e.get("mean_episode_length"),
        "trainable_params": s["num_trainable"], "total_params": s["num_params"],
        "train_steps": s["steps"], "train_wall_time_s": s["train_wall_time_s"],
        "steps_per_s": s["steps_per_s"], "policy_latency_ms": e.get("policy_latency_ms"),
        "stage1_wall_time_s": stage1["train_wall_time_s"] if mode == "decoupled" else None,
        "stage1_steps_per_s": stage1["steps_per_s"] if mode == "decoupled" else None,
        "stage1_eval": stage1.get("eval") if mode == "decoupled" else None,
        "run_dir": s["run_dir"],
    })
  return rows


def seed_summary(rows: list[dict]) -> list[dict]:
  """Per (task, mode): mean success over seeds, its spread, and the 95 % Wilson interval of
  all episodes pooled (seeds x episodes)."""
  from decoupled_jax.sim.evaluator import wilson_interval
  cells = {}
  for r in rows:
    if r["success_rate"] is not None:
      cells.setdefault((r["task"], r["mode"]), []).append(r)
  out = []
  for (task, mode), rs in cells.items():
    rates = np.array([r["success_rate"] for r in rs])
    k = int(round(sum(r["success_rate"] * r["episodes"] for r in rs)))
    n = int(sum(r["episodes"] for r in rs))
    out.append({"task": task, "mode": mode, "seeds": [r["seed"] for r in rs],
                "mean": float(rates.mean()), "std": float(rates.std(ddof=1)) if len(rs) > 1
                else 0.0, "pooled_ci95": list(wilson_interval(k, n)), "episodes": n})
  return out


def summary_markdown(summary: list[dict]) -> str:
  head = ("| task | mode | seeds | mean success | std over seeds | 95% CI (pooled episodes) | "
          "episodes |\n|---|---|---|---|---|---|---|\n")
  return head + "\n".join(
      f"| {c['task']} | {c['mode']} | {len(c['seeds'])} | {100 * c['mean']:.1f}% | "
      f"{100 * c['std']:.1f} | {100 * c['pooled_ci95'][0]:.0f}–{100 * c['pooled_ci95'][1]:.0f}% | "
      f"{c['episodes']} |" for c in summary) + "\n"


def markdown_table(rows: list[dict], stage1: dict) -> str:
  head = ("| task | mode | seed | backbone | success | 95% CI | episodes | "
          "trainable / total params | train time | steps/s |\n"
          "|---|---|---|---|---|---|---|---|---|---|\n")
  lines = []
  for r in rows:
    ci = r["ci95"] or [float("nan")] * 2
    sr = r["success_rate"]
    lines.append(
        f"| {r['task']} | {r['mode']} | {r['seed']} | {r['backbone']} | "
        f"{'n/a' if sr is None else f'{100 * sr:.0f}%'} | {100 * ci[0]:.0f}–{100 * ci[1]:.0f}% | "
        f"{r['episodes']} | {r['trainable_params']:,} / {r['total_params']:,} | "
        f"{r['train_wall_time_s']:.0f} s | {r['steps_per_s']:.1f} |")
  if stage1 is None:
    return head + "\n".join(lines) + "\n"
  ev = stage1["eval"]
  if not ev:
    return head + "\n".join(lines) + "\n"
  foot = (f"\nStage 1 (shared by every decoupled run): {stage1['steps']} steps in "
          f"{stage1['train_wall_time_s']:.0f} s ({stage1['steps_per_s']:.1f} steps/s); held-out FK "
          f"trajectories: position error {ev['pos_err_mm']:.1f} mm (mean-pose baseline "
          f"{ev['baseline_pos_err_mm']:.1f} mm), rotation error {ev['rot_err_deg']:.2f}° "
          f"(baseline {ev['baseline_rot_err_deg']:.2f}°).\n")
  return head + "\n".join(lines) + "\n" + foot


def plot_results(workdir: str, rows: list[dict], path: str) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, (ax_loss, ax_bar) = plt.subplots(1, 2, figsize=(11, 4))
  for r in rows:
    metrics = os.path.join(r["run_dir"], "metrics.jsonl")
    if not os.path.exists(metrics):
      continue
    pts = [json.loads(l) for l in open(metrics)]
    pts = [p for p in pts if "loss" in p]
    ax_loss.plot([p["step"] for p in pts], [p["loss"] for p in pts],
                 label=f"{r['task']} {r['mode']} (seed {r['seed']})")
  ax_loss.set_xlabel("step"); ax_loss.set_ylabel("training loss (ε-MSE)"); ax_loss.set_yscale("log")
  ax_loss.legend(); ax_loss.set_title("stage-2 training loss")
  labels = [f"{r['task']}\n{r['mode']}\nseed {r['seed']}" for r in rows]
  sr = [100 * (r["success_rate"] or 0) for r in rows]
  err = [[100 * ((r["success_rate"] or 0) - r["ci95"][0]) for r in rows],
         [100 * (r["ci95"][1] - (r["success_rate"] or 0)) for r in rows]] if all(
             r["ci95"] for r in rows) else None
  colors = ["tab:blue" if r["mode"] == "normal" else "tab:orange" for r in rows]
  ax_bar.bar(labels, sr, yerr=err, capsize=6, color=colors)
  ax_bar.set_ylim(0, 105); ax_bar.set_ylabel("success rate (%) ± 95% CI")
  ax_bar.set_title("closed-loop success")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def train_and_evaluate(config, workdir: str) -> dict:
  """One chain (`config.stage1`, `config.stage2`, tasks x seeds x modes), or a table of
  chains (`config.chains`: name -> chain config, each run in `workdir/<name>` with the
  demonstrations shared in `workdir/demos`)."""
  import contextlib
  with WorkdirLock(workdir) if sharding.is_primary() else contextlib.nullcontext():
    if "chains" not in config:
      return _chain(config, workdir)
    return _table(config, workdir)


def _table(config, workdir: str) -> dict:
  rows, chains, parts = [], {}, []
  for name, chain in config.chains.items():
    demos_dir = os.path.join(workdir, "demos_images" if chain.demos.images else "demos")
    res = _chain(chain, os.path.join(workdir, name), demos_dir=demos_dir)
    chains[name] = {"stage1": res["stage1"], "demos": res["demos"]}
    rows += [dict(r, chain=name) for r in res["rows"]]
    parts.append(f"### {name}\n\n{res['table']}")
  summary = []
  for name in config.chains:
    summary += [dict(c, chain=name) for c in seed_summary([r for r in rows if r["chain"] == name])]
  head = ("| chain | task | mode | seeds | mean success | std over seeds | 95% CI (pooled) | "
          "episodes |\n|---|---|---|---|---|---|---|---|\n")
  table = (f"# {config.table}: {config.description}\n\n" + head + "\n".join(
      f"| {c['chain']} | {c['task']} | {c['mode']} | {len(c['seeds'])} | {100 * c['mean']:.1f}% "
      f"| {100 * c['std']:.1f} | {100 * c['pooled_ci95'][0]:.0f}–{100 * c['pooled_ci95'][1]:.0f}% "
      f"| {c['episodes']} |" for c in summary) + "\n\n" + "\n".join(parts))
  results = {"table_name": config.table, "rows": rows, "summary": summary, "chains": chains,
             "config": common.config_to_dict(config), "table": table}
  if sharding.is_primary():
    common.write_json(os.path.join(workdir, "results.json"), results)
    with open(os.path.join(workdir, "results.md.tmp"), "w") as f:
      f.write(table)
    os.replace(os.path.join(workdir, "results.md.tmp"), os.path.join(workdir, "results.md"))
  return results


def _chain(config, workdir: str, demos_dir: str | None = None) -> dict:
  t0 = time.time()
  timings = {}
  demos_dir = demos_dir or os.path.join(workdir, "demos")
  runs, demos = {}, {}
  for task in config.tasks:
    t = time.time()
    demos[task] = demos_for_task(config, demos_dir, task)
    timings[f"demos_{task}_s"] = time.time() - t
  stage1, stage1_ckpt = None, ""
  if "decoupled" in config.modes:   # the only mode that loads stage 1
    t = time.time()
    if config.stage1.data.source == "demos" and not config.stage1.data.dataset:
      config = ml_collections.ConfigDict(config.to_dict())
      config.stage1.data.dataset = demos[config.tasks[0]]["output"]
    stage1 = run_stage1(config, workdir)
    timings["stage1_s"] = time.time() - t
    stage1_ckpt = stage1["checkpoint_dir"]
  for task in config.tasks:
    for seed in config.seeds:
      for mode in config.modes:
        t = time.time()
        runs[(task, mode, seed)] = run_stage2(config, workdir, task, mode, demos[task]["output"],
                                              stage1_ckpt, seed)
        runs[(task, mode, seed)]["run_dir"] = stage2_dir(workdir, task, mode, seed,
                                                         len(config.seeds))
        timings[f"{task}_{mode}_seed{seed}_s"] = time.time() - t
  rows = results_rows(stage1, runs)
  timings["total_s"] = time.time() - t0
  results = {"rows": rows, "stage1": stage1, "demos": demos, "timings_this_invocation": timings,
             "config": common.config_to_dict(config)}
  table = markdown_table(rows, stage1)
  if len(config.seeds) > 1:
    results["summary"] = seed_summary(rows)
    table = summary_markdown(results["summary"]) + "\nPer seed:\n\n" + table
  if sharding.is_primary():
    common.write_json(os.path.join(workdir, "results.json"), results)
    with open(os.path.join(workdir, "results.md.tmp"), "w") as f:
      f.write(table)
    os.replace(os.path.join(workdir, "results.md.tmp"), os.path.join(workdir, "results.md"))
    plot_results(workdir, rows, os.path.join(workdir, "results.png"))
  results["table"] = table
  return results
