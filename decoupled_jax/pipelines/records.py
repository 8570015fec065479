"""Raw run records that outlive a workdir (docs/results/README.md, "Raw records").

A table spans days and machines; a workdir does not. Every finished stage-2 run of a chain
with `config.record_dir` set appends one JSON object to `<record_dir>/runs.jsonl` and writes
its per-episode outcomes to `<record_dir>/episodes/<chain>__<task>__<mode>__seed<seed>.jsonl`.
Rerunning the table command (on a fresh clone too) skips every run whose record is there —
matched by chain, task, mode, seed and a fingerprint of every config value that can change the
result — and rebuilds the page from the records.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import subprocess
import time
from typing import Optional

from decoupled_jax import util

# Config values that cannot change a run's result (paths, progress bars) stay out of its
# fingerprint, so a record matches the same run on another machine or in another workdir.
_VOLATILE = ("progress", "data.dataset", "stage1_checkpoint", "oracle_checkpoint",
             "eval.progress", "eval.num_workers", "demos.num_workers", "demos.dataset_dir",
             "data.fk.fk_backend", "eval.aloha_python", "demos.aloha_python",
             "eval.libero_python", "demos.libero_python")
# What each record carries (the minimum first); the rest are the chain's row fields.
REQUIRED = ("task", "mode", "seed", "backbone", "stage1", "successes", "episodes",
            "code_version")


# Records are written into the checkout that runs the table; they are results, not code, so
# they do not make a version "-dirty" (docs/results/README.md, "Raw records").
RAW_ROOT = "docs/results/raw"


@functools.lru_cache(maxsize=1)
def code_version() -> str:
  """The commit this package runs from ('unknown' when installed without its repository):
  `git describe --always --abbrev=12`, plus '-dirty' when a tracked file outside
  docs/results/raw differs from that commit."""
  return describe(os.path.dirname(os.path.abspath(__file__)))


def describe(repo_dir: str) -> str:
  """`code_version` of the git checkout holding `repo_dir`."""
  def git(*args):
    try:
      out = subprocess.run(["git", "-C", repo_dir, *args], capture_output=True, text=True,
                           timeout=10)
    except (OSError, subprocess.SubprocessError):
      return None
    return out.stdout.strip() if out.returncode == 0 else None
  version = git("describe", "--always", "--abbrev=12")
  if not version:
    return "unknown"
  changed = git("status", "--porcelain", "--untracked-files=no", "--", ":(top)",
                f":(top,exclude){RAW_ROOT}")
  return version + ("-dirty" if changed is None or changed else "")


def _drop(d: dict, dotted: str) -> None:
  """Removes `dotted` relative to `d` and to every dict nested in it (a stage's config sits at
  any depth of a chain or table config)."""
  for value in list(d.values()):
    if isinstance(value, dict):
      _drop(value, dotted)
  *parents, leaf = dotted.split(".")
  for p in parents:
    d = d.get(p)
    if not isinstance(d, dict):
      return
  d.pop(leaf, None)


def _legacy_sampling(d: dict) -> None:
  """A stage-2 config without `data.sampling` (the run length is `train.epochs` alone since
  the key went) is fingerprinted with the value the key had: 'epochs' when train.epochs > 0,
  else 'uniform' — the same runs, so records made before still match."""
  for value in list(d.values()):
    if isinstance(value, dict):
      _legacy_sampling(value)
  data, train = d.get("data"), d.get("train")
  if isinstance(data, dict) and isinstance(train, dict) and "epochs" in train \
     and "sampling" not in data:
    data["sampling"] = "epochs" if int(train["epochs"] or 0) > 0 else "uniform"


# The FK generator's fields added with delta targets, at their defaults (absolute targets).
_FK_TARGET_DEFAULTS = {"target": "absolute", "delta_pos_scale": 0.011, "delta_rot_scale": 0.064}


def _legacy_fk_target(d: dict) -> None:
  """A generator section (`data.fk`) with absolute targets is fingerprinted without the delta
  target's keys at their defaults (kinematics/trajectories.py), the form records made before
  the keys existed hashed (the same runs)."""
  for value in list(d.values()):
    if isinstance(value, dict):
      _legacy_fk_target(value)
  fk = d.get("fk")
  if isinstance(fk, dict) and fk.get("target", "absolute") == "absolute" and "via_candidates" in fk:
    for k, v in _FK_TARGET_DEFAULTS.items():
      if k in fk and fk[k] == v:
        fk.pop(k)


def _legacy_benchmark(d: dict) -> None:
  """A stage config on the benchmark its stage always had before `config.benchmark` existed
  ('fk' for pretrain, 'robosuite' for finetune) is fingerprinted without the key, so records
  made then still match (the runs are the same)."""
  for value in list(d.values()):
    if isinstance(value, dict):
      _legacy_benchmark(value)
  if (d.get("stage"), d.get("benchmark")) in (("pretrain", "fk"), ("finetune", "robosuite")):
    d.pop("benchmark")


def _legacy_robot(d: dict) -> None:
  """A stage-1 config with the default Panda `robot` section is fingerprinted in the form it
  had before `config.robot` existed (`data.fk.site`, the Panda's `workspace_std`): the same
  generated windows bit for bit (tests/test_robots.py), so records made then still match."""
  for value in list(d.values()):
    if isinstance(value, dict):
      _legacy_robot(value)
  from decoupled_jax.kinematics import panda, robot
  default = json.loads(json.dumps(robot.default_robot_config()))
  fk = d.get("data", {}).get("fk") if isinstance(d.get("data"), dict) else None
  if d.get("robot") != default or not isinstance(fk, dict):
    return
  d.pop("robot")
  fk["site"] = default["ee_sites"]
  if fk.get("workspace_std") == []:
    fk["workspace_std"] = list(panda.WORKSPACE_STD)


_HEAD_SECTIONS = ("diffusion", "flow")


def _legacy_head(value):
  """`value` with every typed head section (`type` + `diffusion` / `flow` sub-dicts,
  heads.typed_head_config) in the flat form it had before the typed sections: `type`, every
  DiffusionHead field, `flow_num_steps`, `time_scale`, `flow_clip_sample`; `clip_range` and
  `num_noise_samples` (then shared by both heads) from the section of `type` (the values that
  run used). Records made then still match (the runs are the same)."""
  if isinstance(value, list):
    return [_legacy_head(v) for v in value]
  if not isinstance(value, dict):
    return value
  if (value.get("type") in _HEAD_SECTIONS and set(value) <= {"type", *_HEAD_SECTIONS}
      and any(isinstance(value.get(s), dict) for s in _HEAD_SECTIONS)
      and all(isinstance(value.get(s, {}), dict) for s in _HEAD_SECTIONS)):
    diffusion, flow = value.get("diffusion", {}), value.get("flow", {})
    own = diffusion if value["type"] == "diffusion" else flow
    flat = {k: v for k, v in diffusion.items() if k not in ("clip_range", "num_noise_samples")}
    flat.update({k: own[k] for k in ("clip_range", "num_noise_samples") if k in own})
    for old, new in (("flow_num_steps", "num_steps"), ("time_scale", "time_scale"),
                     ("flow_clip_sample", "clip_sample")):
      if new in flow:
        flat[old] = flow[new]
    flat["type"] = value["type"]
    return flat
  return {k: _legacy_head(v) for k, v in value.items()}


def fingerprint(*parts: dict) -> str:
  """sha256 (16 hex) of the given config dicts without their volatile values."""
  clean = []
  for part in parts:
    part = json.loads(json.dumps(part, sort_keys=True, default=str))
    for key in _VOLATILE:
      _drop(part, key)
    _legacy_robot(part)
    _legacy_fk_target(part)
    _legacy_benchmark(part)
    _legacy_sampling(part)
    clean.append(_legacy_head(part))
  return hashlib.sha256(json.dumps(clean, sort_keys=True).encode()).hexdigest()[:16]


class RunRecords:
  """The records of one table folder (`runs.jsonl` + `episodes/`)."""

  def __init__(self, directory: str):
    self.directory = os.path.abspath(directory)
    self.path = os.path.join(self.directory, "runs.jsonl")

  def _episodes_path(self, chain: str, task: str, mode: str, seed: int) -> str:
    name = f"{chain or 'main'}__{task}__{mode}__seed{seed}.jsonl"
    return os.path.join(self.directory, "episodes", name)

  def all(self) -> list[dict]:
    if not os.path.exists(self.path):
      return []
    out = []
    with open(self.path) as f:
      for n, line in enumerate(f, 1):
        if line.strip():
          try:
            out.append(json.loads(line))
          except json.JSONDecodeError:
            raise ValueError(f"{self.path}:{n} is not a JSON record; fix or remove the "
                             f"line") from None
    return out

  def index(self) -> dict[tuple, dict]:
    """(chain, task, mode, seed, fingerprint) -> the newest record of that run (one read)."""
    return {(r.get("chain", ""), r["task"], r["mode"], r["seed"], r.get("fingerprint")): r
            for r in self.all()}

  def find(self, chain: str, task: str, mode: str, seed: int, fp: str) -> Optional[dict]:
    """The newest record of that run with that fingerprint, or None."""
    return self.index().get((chain, task, mode, seed, fp))

  def append(self, record: dict, episodes: Optional[list] = None,
             metrics_path: Optional[str] = None) -> dict:
    """Writes the per-episode outcomes (and a copy of the run's metrics.jsonl: its training
    curve) first, then appends the record (one write, flushed)."""
    missing = [k for k in REQUIRED if k not in record]
    if missing:
      raise ValueError(f"run record lacks {missing}")
    os.makedirs(os.path.join(self.directory, "episodes"), exist_ok=True)
    record = dict(record, recorded_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    if episodes is not None:
      ep_path = self._episodes_path(record.get("chain", ""), record["task"], record["mode"],
                                    record["seed"])
      util.write_jsonl(ep_path, episodes, sort_keys=True)
      record["episodes_file"] = os.path.relpath(ep_path, self.directory)
    if metrics_path and os.path.exists(metrics_path):
      name = os.path.basename(self._episodes_path(record.get("chain", ""), record["task"],
                                                   record["mode"], record["seed"]))
      dst = os.path.join(self.directory, "metrics", name)
      os.makedirs(os.path.dirname(dst), exist_ok=True)
      with util.atomic_path(dst) as tmp:
        shutil.copyfile(metrics_path, tmp)
      record["metrics_file"] = os.path.relpath(dst, self.directory)
    line = json.dumps(record, sort_keys=True, default=str) + "\n"
    with open(self.path, "a") as f:
      f.write(line)
      f.flush()
      os.fsync(f.fileno())
    return record


def summary_markdown(recs: list[dict]) -> str:
  """Per (chain, task, mode): seeds, successes / episodes pooled, the pooled 95 % Wilson
  interval, and each seed's rate — the table results pages quote, rebuilt from records."""
  from decoupled_jax.util import wilson_interval
  cells: dict[tuple, list[dict]] = {}
  for r in recs:
    cells.setdefault((r.get("chain", ""), r["task"], r["mode"]), []).append(r)
  lines = ["| chain | task | mode | seeds | successes / episodes | success | 95% CI (pooled) | "
           "per seed | stage 1 | code |", "|---|---|---|---|---|---|---|---|---|---|"]
  for (chain, task, mode), rs in cells.items():
    k, n = sum(r["successes"] for r in rs), sum(r["episodes"] for r in rs)
    lo, hi = wilson_interval(k, n)
    per_seed = ", ".join(f"{r['seed']}: {100 * r['successes'] / r['episodes']:.0f}%"
                         for r in rs)
    codes = ", ".join(sorted({str(r["code_version"]) for r in rs}))
    lines.append(f"| {chain} | {task} | {mode} | {len(rs)} | {k} / {n} | {100 * k / n:.1f}% | "
                 f"{100 * lo:.0f}–{100 * hi:.0f}% | {per_seed} | {rs[0]['stage1']} | {codes} |")
  return "\n".join(lines) + "\n"


if __name__ == "__main__":   # python -m decoupled_jax.pipelines.records docs/results/raw/<table>
  import sys
  print(summary_markdown(RunRecords(sys.argv[1]).all()), end="")
