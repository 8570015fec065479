"""The chain driver of every benchmark, resumable (the library's main job; `make demo`, the
paper tables, the LIBERO chain):

  demonstrations (generated or reused) -> stage-2 runs per (task, seed, mode) (same seed and
  budget), each stage-1 pretraining (on-device FK data, a shipped expert, or a benchmark's own
  pairs) trained when the first run that freezes it comes up -> evaluation -> results table
  (Markdown + results.json), plot, TensorBoard logs, rollout videos, and the raw records of a
  table (`record_dir`, pipelines/records.py): a run's record lands as soon as it finishes.

What differs per benchmark (`config.stage2.benchmark`: robosuite tasks or LIBERO suites) is
its chain hooks in `decoupled_jax/benchmarks/` (`chain_demos`, `chain_stage2`, `chain_notes`);
the reuse / resume / lock logic below is the same for all. Modes: normal, decoupled,
random_frozen, oracle, and `decoupled_<arm>`: decoupled on the chain's `stage1_<arm>` (e.g.
LIBERO's `decoupled_fk` on generated FK data beside `decoupled` on LIBERO's own pairs).

Every stage writes its outputs under `workdir` and is skipped when they already exist
(a stage with checkpoints but no summary is resumed), so an interrupted run continues.
Layout:
  workdir/stage1[_<arm>]/         stage-1 runs (checkpoints/, tensorboard/, summary.json)
  workdir/demos/                  demonstrations (unless config.demos.dataset_dir points elsewhere)
  workdir/<task>/<mode>[_seed<s>]/  stage-2 runs (checkpoints/, tensorboard/, videos/, summary.json)
  workdir/results.{json,md,png}
"""
from __future__ import annotations

import json
import logging
import os
import time

import ml_collections
import numpy as np

from decoupled_jax import benchmarks, pretrained, util
from decoupled_jax.errors import ConfigError
from decoupled_jax.pipelines import common, records, run
from decoupled_jax.training import sharding
from decoupled_jax.training.workdir import WorkdirLock


def _done(path: str) -> bool:
  return os.path.exists(path)


def _resume_flag(run_dir: str) -> bool:
  return bool(util.checkpoint_steps(os.path.join(run_dir, "checkpoints")))


def stage1_arm(mode: str) -> str | None:
  """'' for mode 'decoupled' (config.stage1), '<arm>' for 'decoupled_<arm>'
  (config.stage1_<arm>), None for the modes that load no stage 1."""
  if mode == "decoupled":
    return ""
  return mode[len("decoupled_"):] if mode.startswith("decoupled_") else None


def stage1_config(config, arm: str = ""):
  return config.stage1 if not arm else config[f"stage1_{arm}"]


def _stage1_on_demos(config, arm: str) -> bool:
  """Whether the chain trains stage 1 `arm` on its demonstrations (not generated, not given)."""
  if not arm and config.get("stage1_checkpoint", ""):
    return False
  c = stage1_config(config, arm)
  return benchmarks.name_of(c) != "fk" or c.data.source == "demos"


def stage1_tasks(config, arm: str = "") -> tuple:
  """The tasks whose demonstrations a chain's stage 1 `arm` on demonstrations reads: a LIBERO
  stage 1 reads every suite of the chain, or `config.stage1_suites` when given (e.g. every
  suite with an expert for a stage 2 on one of them: the paper's all-suites LIBERO stage 1,
  docs/libero.md); a robosuite one (`data.source='demos'`) the first task's."""
  given = tuple(config.get("stage1_suites", ()))
  if given and benchmarks.name_of(config.stage2) != "libero":
    raise ConfigError(f"stage1_suites={given}: only a LIBERO chain's stage 1 reads several "
                      f"suites")
  if benchmarks.name_of(stage1_config(config, arm)) != "libero":
    return tuple(config.tasks[:1])   # (a LIBERO chain's generated-FK arm reads none)
  return given or tuple(config.tasks)


def run_stage1(config, workdir: str, arm: str = "", dataset: str = "") -> dict:
  """The chain's stage-1 run `arm` in workdir/stage1[_<arm>] (reused when finished, resumed
  when interrupted); a stage 1 on demonstrations reads the chain's `dataset`."""
  run_dir = os.path.join(workdir, "stage1" + (f"_{arm}" if arm else ""))
  summary_path = os.path.join(run_dir, run.SUMMARY)
  if _done(summary_path):
    logging.info("stage 1%s: reusing %s", f" ({arm})" if arm else "", summary_path)
    return json.load(open(summary_path))
  c = stage1_run_config(config, arm, dataset)
  c.progress = config.progress
  return run.run(c, run_dir, resume=_resume_flag(run_dir))


def stage1_run_config(config, arm: str = "", dataset: str = ""):
  """The config a chain's stage 1 `arm` runs with: a LIBERO stage 1 reads `stage1_tasks`
  (the chain's suites or `stage1_suites`) from the chain's demos `dataset`, a robosuite stage 1
  on demonstrations the first task's."""
  c = ml_collections.ConfigDict(stage1_config(config, arm).to_dict())
  if benchmarks.name_of(c) == "libero":
    c.data.dataset, c.data.suites = dataset, stage1_tasks(config, arm)
  elif c.data.source == "demos" and not c.data.dataset:
    c.data.dataset = dataset
  return c


def stage2_dir(workdir: str, task: str, mode: str, seed: int, num_seeds: int) -> str:
  return os.path.join(workdir, task, mode if num_seeds == 1 else f"{mode}_seed{seed}")


def run_stage2(config, workdir: str, task: str, mode: str, dataset: str, stage1_ckpt: str,
               seed: int, oracle_ckpt: str = "") -> dict:
  run_dir = stage2_dir(workdir, task, mode, seed, len(config.seeds))
  summary_path = os.path.join(run_dir, run.SUMMARY)
  if _done(summary_path):
    logging.info("%s/%s: reusing %s", task, mode, summary_path)
    return json.load(open(summary_path))
  c = ml_collections.ConfigDict(config.stage2.to_dict())
  benchmarks.stage2(c).chain_stage2(c, config, task, dataset)
  c.mode = "decoupled" if stage1_arm(mode) is not None else mode
  c.seed = int(seed)
  c.stage1_checkpoint = stage1_ckpt if stage1_arm(mode) is not None else ""
  c.oracle_checkpoint = oracle_ckpt if mode == "oracle" else ""
  c.progress = config.progress
  return run.run(c, run_dir, resume=_resume_flag(run_dir))


def run_fingerprint(config, task: str, mode: str, seed: int) -> str:
  """Every config value a (task, mode, seed) run's result depends on (records.fingerprint)."""
  s2 = config.stage2.to_dict()
  s2.update(mode=mode, seed=int(seed))
  s2["data"]["task"] = task
  parts = [{"stage2": s2, "demos": config.demos.to_dict()}]
  ref = config.get("stage1_checkpoint", "")
  arm = stage1_arm(mode)
  if arm:   # decoupled_<arm>: the chain's own stage1_<arm> (stage1_checkpoint is config.stage1's)
    parts.append({f"stage1_{arm}": stage1_config(config, arm).to_dict()})
  elif mode == "decoupled" and not ref:
    parts.append({"stage1": config.stage1.to_dict()})
    if tuple(config.get("stage1_suites", ())):   # (absent from records made before the key)
      parts.append({"stage1_suites": list(config.stage1_suites)})
  elif mode == "decoupled":   # a given stage 1: a shipped expert's card, or what the run gave
    # (paths are volatile, so a run directory is named by its summary's steps and results)
    given = stage1_given(config)
    parts.append({"given_stage1": pretrained.load_card(ref) if pretrained.is_ref(ref) else
                  {k: given.get(k) for k in ("steps", "eval", "last_loss")}})
  return records.fingerprint(*parts)


def stage1_given(config) -> dict | None:
  """The summary-like dict of the chain's given stage 1 (`config.stage1_checkpoint`: a shipped
  expert or a stage-1 run's checkpoints directory), or None when the chain trains its own."""
  ref = config.get("stage1_checkpoint", "")
  if not ref:
    return None
  if pretrained.is_ref(ref):
    c = pretrained.load_card(ref)
    return {"name": ref, "steps": c["steps"], "train_wall_time_s": c["train_wall_time_s"],
            "steps_per_s": c["steps"] / max(c["train_wall_time_s"], 1e-9),
            "eval": c["heldout_fk"], "checkpoint_dir": ref}
  summary = os.path.join(os.path.dirname(os.path.abspath(ref)), run.SUMMARY)
  if not os.path.exists(summary):
    raise ConfigError(f"config.stage1_checkpoint={ref}: no {run.SUMMARY} beside it (give a "
                      f"finished experiments/pretrain.py run's checkpoints directory)")
  return dict(json.load(open(summary)), name=ref, checkpoint_dir=os.path.abspath(ref))


def result_row(task: str, mode: str, seed: int, s: dict, stage1: dict | None) -> dict:
  """A results row from a stage-2 summary (and, for decoupled runs, the stage-1 summary)."""
  e = s.get("eval") or {}
  pre = stage1 if stage1_arm(mode) is not None and stage1 else None
  return {
      "task": task, "mode": mode, "seed": seed, "backbone": s["backbone"],
      "success_rate": e.get("success_rate"), "ci95": e.get("ci95", e.get("ci95_pooled")),
      "episodes": e.get("num_episodes", e.get("episodes", 0)),
      "mean_episode_length": e.get("mean_episode_length"),
      "trainable_params": s["num_trainable"], "total_params": s["num_params"],
      "train_steps": s["steps"], "train_wall_time_s": s["train_wall_time_s"],
      "last_loss": s.get("last_loss"),
      "steps_per_s": s["steps_per_s"], "policy_latency_ms": e.get("policy_latency_ms"),
      "stage1_steps": pre["steps"] if pre else None,
      "stage1_wall_time_s": pre["train_wall_time_s"] if pre else None,
      "stage1_steps_per_s": pre["steps_per_s"] if pre else None,
      "stage1_eval": pre.get("eval") if pre else None,
      "stage1_name": pre.get("name") if pre else None,
      "run_dir": s.get("run_dir"),
      **({"per_task": e["tasks"]} if "tasks" in e else {}),   # LIBERO: per-task successes
  }


def _stage1_from_rows(rows: list[dict]) -> dict | None:
  """The stage-1 summary fields the page shows, from a decoupled run's (recorded) row."""
  for r in rows:
    if stage1_arm(r["mode"]) == "" and r.get("stage1_eval") is not None:
      return {"steps": r["stage1_steps"], "train_wall_time_s": r["stage1_wall_time_s"],
              "steps_per_s": r["stage1_steps_per_s"], "eval": r["stage1_eval"],
              "name": r.get("stage1_name")}
  return None


# A record's `stage1` for the modes that load none.
_NO_STAGE1 = {"normal": "none (trained end to end)",
              "random_frozen": "none (random init, frozen)",
              "oracle": "the normal run's backbone (same task and seed), frozen"}


def _record(recs, config, chain: str, table: str, row: dict, fp: str,
            stage1: dict | None) -> None:
  """Appends a finished run's record and its per-episode outcomes (pipelines/records.py)."""
  eval_path = os.path.join(row["run_dir"], "eval.json") if row.get("run_dir") else ""
  episodes = json.load(open(eval_path))["episodes"] if eval_path and os.path.exists(
      eval_path) else None
  successes = (sum(bool(e["success"]) for e in episodes) if episodes is not None
               else int(round((row["success_rate"] or 0) * row["episodes"])))
  arm = stage1_arm(row["mode"])
  if arm is None:
    what = _NO_STAGE1.get(row["mode"], "none")
  elif pretrained.is_ref(row.get("stage1_name")):
    what = pretrained.describe(row["stage1_name"])
  else:
    c = stage1_run_config(config, arm)
    what = benchmarks.stage1(c).describe(c, stage1)
  record = dict(row, chain=chain, table=table, fingerprint=fp, successes=successes,
                code_version=records.code_version(), stage1=what)
  record.pop("run_dir", None)
  recs.append(record, episodes,
              metrics_path=os.path.join(row["run_dir"], "metrics.jsonl") if row.get("run_dir")
              else None)


def seed_summary(rows: list[dict]) -> list[dict]:
  """Per (task, mode): mean success over seeds, its spread, and the 95 % Wilson interval of
  all episodes pooled (seeds x episodes)."""
  from decoupled_jax.util import wilson_interval
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
  given = f"{stage1['name']}, " if stage1.get("name") else ""
  what = ("delta actions (mm per step)" if stage1.get("benchmark") == "libero"
          else "FK trajectories")
  foot = (f"\nStage 1 (shared by every decoupled run): {given}{stage1['steps']} steps in "
          f"{stage1['train_wall_time_s']:.0f} s ({stage1['steps_per_s']:.1f} steps/s); held-out "
          f"{what}: position error {ev['pos_err_mm']:.1f} mm (mean-pose baseline "
          f"{ev['baseline_pos_err_mm']:.1f} mm), rotation error {ev['rot_err_deg']:.2f}° "
          f"(baseline {ev['baseline_rot_err_deg']:.2f}°).\n")
  return head + "\n".join(lines) + "\n" + foot


def plot_results(workdir: str, rows: list[dict], path: str) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, (ax_loss, ax_bar) = plt.subplots(1, 2, figsize=(11, 4))
  for r in rows:
    metrics = os.path.join(r["run_dir"], "metrics.jsonl") if r.get("run_dir") else ""
    if not metrics or not os.path.exists(metrics):
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
  palette = {"normal": "tab:blue", "decoupled": "tab:orange", "oracle": "tab:green"}
  colors = [palette.get(r["mode"], "tab:gray") for r in rows]
  ax_bar.bar(labels, sr, yerr=err, capsize=6, color=colors)
  ax_bar.set_ylim(0, 105); ax_bar.set_ylabel("success rate (%) ± 95% CI")
  ax_bar.set_title("closed-loop success")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def train_and_evaluate(config, workdir: str) -> dict:
  """One chain (`config.stage1`, `config.stage2`, tasks x seeds x modes), or a table of
  chains (`config.chains`: name -> chain config, each run in `workdir/<name>` with the
  demonstrations shared in `workdir/<demos_folders(config)[name]>`)."""
  import contextlib
  with WorkdirLock(workdir) if sharding.is_primary() else contextlib.nullcontext():
    if "chains" not in config:
      return _chain(config, workdir)
    return _table(config, workdir)


def demos_folders(config) -> dict[str, str]:
  """{chain: its demonstrations' folder under a table's workdir}. Chains share the benchmark's
  folder (`chain_demos_folder`: images apart) when they ask for the same demonstrations; where
  chains of one folder differ in their `demos` config (count, seed, ...), each folder name
  carries the differing values, so a 20-demo chain never reads a 50-demo chain's files (the
  generators skip a task whose file already holds enough demos, and readers take every demo)."""
  chains = config.chains
  base = {n: benchmarks.stage2(c.stage2).chain_demos_folder(c) for n, c in chains.items()}
  asked = {n: {k: v for k, v in c.demos.to_dict().items() if k != "num_workers"}
           for n, c in chains.items()}
  out = {}
  for n in chains:
    group = [m for m in chains if base[m] == base[n]]
    keys = sorted({k for m in group for k in asked[m]})
    differ = [k for k in keys if len({repr(asked[m].get(k)) for m in group}) > 1]
    out[n] = base[n] + "".join(f"_{k}={asked[n].get(k)}".replace(" ", "") for k in differ)
  return out


def _table(config, workdir: str) -> dict:
  rows, chains, parts = [], {}, []
  recs = records.RunRecords(config.record_dir) if config.get("record_dir", "") else None
  folders = demos_folders(config)
  for name, chain in config.chains.items():
    demos_dir = os.path.join(workdir, folders[name])
    res = _chain(chain, os.path.join(workdir, name), demos_dir=demos_dir, chain=name, recs=recs,
                 table=config.table)
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
    util.write_text(os.path.join(workdir, "results.md"), table)
  return results


def _chain(config, workdir: str, demos_dir: str | None = None, chain: str = "",
           recs: records.RunRecords | None = None, table: str = "") -> dict:
  t0 = time.time()
  os.makedirs(workdir, exist_ok=True)
  timings = {}
  demos_dir = demos_dir or os.path.join(workdir, "demos")
  if recs is None and config.get("record_dir", ""):
    recs = records.RunRecords(config.record_dir)
  modes = tuple(config.modes)
  if "oracle" in modes and ("normal" not in modes or modes.index("normal") > modes.index("oracle")):
    raise ConfigError(f"modes={modes}: 'oracle' freezes the backbone of the 'normal' run of the "
                      f"same task and seed, so 'normal' must come before it")
  plan = [(task, mode, seed) for task in config.tasks for seed in config.seeds for mode in modes]
  fps = {key: run_fingerprint(config, *key) for key in plan}
  found = {}
  if recs is not None:
    recorded = recs.index()   # the records file, read once for the whole plan
    found = {key: recorded[(chain, *key, fps[key])] for key in plan
             if (chain, *key, fps[key]) in recorded}
    logging.info("%s: %d of %d runs already recorded in %s", chain or "chain", len(found),
                 len(plan), recs.path)
  todo = [k for k in plan if k not in found]
  # An oracle run to train needs the normal run's checkpoints even when its record exists.
  need_ckpt = {(t, "normal", s) for (t, m, s) in todo if m == "oracle"}
  bench = benchmarks.stage2(config.stage2)
  arms = list(dict.fromkeys(stage1_arm(m) for (_, m, _) in todo if stage1_arm(m) is not None))
  need = list(dict.fromkeys(t for (t, m, s) in todo + sorted(need_ckpt)))
  for arm in arms:   # the demonstrations a stage 1 to train reads come first
    if _stage1_on_demos(config, arm):
      need = list(dict.fromkeys(stage1_tasks(config, arm) + tuple(need)))
  t = time.time()
  demos = bench.chain_demos(config, demos_dir, need) if need else {}
  timings["demos_s"] = time.time() - t
  stage1s = {}

  def stage1_of(arm: str) -> dict:
    """Stage 1 `arm`, trained (or loaded) when the first run that freezes it comes up, so the
    runs before it (normal, ...) land their records first."""
    if arm not in stage1s:
      t = time.time()
      if not arm and config.get("stage1_checkpoint", ""):
        stage1s[arm] = stage1_given(config)   # a shipped expert (pretrained:<name>) or a run
      else:
        first = demos[stage1_tasks(config, arm)[0]]["output"] if demos else ""
        stage1s[arm] = run_stage1(config, workdir, arm, dataset=first)
        timings[f"stage1{'_' + arm if arm else ''}_s"] = time.time() - t
    return stage1s[arm]

  rows, normal_ckpt = [], {}
  for key in plan:
    task, mode, seed = key
    if key in found and key not in need_ckpt:
      rows.append(dict(found[key], run_dir=None))
      continue
    arm = stage1_arm(mode)
    stage1_ckpt = stage1_of(arm)["checkpoint_dir"] if arm is not None else ""
    t = time.time()
    s = run_stage2(config, workdir, task, mode, demos[task]["output"], stage1_ckpt, seed,
                   oracle_ckpt=normal_ckpt.get((task, seed), ""))
    s["run_dir"] = stage2_dir(workdir, task, mode, seed, len(config.seeds))
    timings[f"{task}_{mode}_seed{seed}_s"] = time.time() - t
    if mode == "normal":
      normal_ckpt[(task, seed)] = s["checkpoint_dir"]
    if key in found:   # trained again only for its checkpoints: the record stays the result
      rows.append(dict(found[key], run_dir=None))
      continue
    row = result_row(task, mode, seed, s, stage1s.get(arm) if arm is not None else None)
    if recs is not None and sharding.is_primary():
      _record(recs, config, chain, table or config.get("table", ""), row, fps[key],
              stage1s.get(arm) if arm is not None else None)
    rows.append(row)
  stage1 = stage1s.get("") or _stage1_from_rows(rows)
  timings["total_s"] = time.time() - t0
  results = {"rows": rows, "stage1": stage1, "demos": demos, "timings_this_invocation": timings,
             "config": common.config_to_dict(config),
             "recorded": sorted(f"{t}/{m}/seed{s}" for (t, m, s) in found)}
  results.update({f"stage1_{a}": v for a, v in stage1s.items() if a})
  table = markdown_table(rows, stage1) + bench.chain_notes(results)
  if len(config.seeds) > 1:
    results["summary"] = seed_summary(rows)
    table = summary_markdown(results["summary"]) + "\nPer seed:\n\n" + table
  if sharding.is_primary():
    common.write_json(os.path.join(workdir, "results.json"), results)
    util.write_text(os.path.join(workdir, "results.md"), table)
    plot_results(workdir, rows, os.path.join(workdir, "results.png"))
  results["table"] = table
  return results
