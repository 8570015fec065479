"""The gap study's stage-1 scaling curve from raw records (docs/results/decoupled_gap.md §2;
the binary: experiments/plot_stage1_scaling.py).

Every decoupled run on a task whose stage 1 was trained on generated FK data in a chain of the
study (`oracle`: the 4k point; `stage1_<n>k`: the scaling part) is grouped by its stage-1 length
(`stage1_steps` of the record); per length: the pooled closed-loop success with its 95 % Wilson
interval and the stage-1 held-out FK error (`stage1_eval`). The normal arm of the same chains is
the reference.
"""
from __future__ import annotations

from decoupled_jax.util import wilson_interval

CHAINS = ("oracle",)      # + every 'stage1_<n>k' chain


def scaling_points(records: list[dict], task: str):
  """({stage-1 steps: row}, normal row or None); a row pools the runs' successes."""
  def pool(rs):
    k, n = sum(r["successes"] for r in rs), sum(r["episodes"] for r in rs)
    lo, hi = wilson_interval(k, n)
    return {"seeds": sorted(r["seed"] for r in rs), "successes": k, "episodes": n,
            "rate": k / n, "ci95": (lo, hi),
            "per_seed": {r["seed"]: r["successes"] / r["episodes"] for r in rs},
            "codes": sorted({str(r["code_version"]) for r in rs})}
  ours = [r for r in records if r["task"] == task and
          (r.get("chain") in CHAINS or str(r.get("chain", "")).startswith("stage1_"))]
  by_len: dict[int, list] = {}
  for r in ours:
    if r["mode"] == "decoupled" and r.get("stage1_steps"):
      by_len.setdefault(int(r["stage1_steps"]), []).append(r)
  points = {}
  for steps, rs in sorted(by_len.items()):
    row = pool(rs)
    ev = rs[0].get("stage1_eval") or {}
    row.update(fk_mm=ev.get("pos_err_mm"), fk_deg=ev.get("rot_err_deg"),
               baseline_mm=ev.get("baseline_pos_err_mm"))
    points[steps] = row
  normal = [r for r in ours if r["mode"] == "normal"]
  return points, (pool(normal) if normal else None)


def markdown(points, normal) -> str:
  lines = ["| stage-1 steps | held-out FK (mm / °) | seeds | successes / episodes | success "
           "| 95% CI (pooled) | per seed |", "|---|---|---|---|---|---|---|"]
  for steps, p in points.items():
    fk = f"{p['fk_mm']:.1f} / {p['fk_deg']:.2f}" if p["fk_mm"] is not None else "–"
    seeds = ", ".join(f"{s}: {100 * v:.0f}%" for s, v in sorted(p["per_seed"].items()))
    lines.append(f"| {steps:,} | {fk} | {len(p['seeds'])} | {p['successes']} / {p['episodes']} "
                 f"| {100 * p['rate']:.1f}% | {100 * p['ci95'][0]:.0f}–{100 * p['ci95'][1]:.0f}% "
                 f"| {seeds} |")
  if normal:
    lines.append(f"| (normal) | – | {len(normal['seeds'])} | {normal['successes']} / "
                 f"{normal['episodes']} | {100 * normal['rate']:.1f}% | "
                 f"{100 * normal['ci95'][0]:.0f}–{100 * normal['ci95'][1]:.0f}% | – |")
  return "\n".join(lines) + "\n"


def plot(points, normal, task: str, path: str) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  xs = list(points)
  rate = [100 * points[x]["rate"] for x in xs]
  err = [[100 * (points[x]["rate"] - points[x]["ci95"][0]) for x in xs],
         [100 * (points[x]["ci95"][1] - points[x]["rate"]) for x in xs]]
  fig, ax = plt.subplots(figsize=(6.4, 4.0))
  ax.errorbar(xs, rate, yerr=err, marker="o", capsize=4, label="decoupled (pooled, 95% Wilson)")
  if normal:
    ax.axhspan(100 * normal["ci95"][0], 100 * normal["ci95"][1], color="gray", alpha=0.2)
    ax.axhline(100 * normal["rate"], color="gray", ls="--", label="normal (pooled, 95% band)")
  ax.set_xscale("log", base=2)
  ax.set_xticks(xs, [f"{x // 1000}k" for x in xs])
  ax.set_xlabel("stage-1 training steps (batch 64)")
  ax.set_ylabel(f"{task} closed-loop success (%)")
  ax.set_ylim(0, 100)
  ax2 = ax.twinx()
  fk = [points[x]["fk_mm"] for x in xs]
  if all(v is not None for v in fk):
    ax2.plot(xs, fk, color="tab:red", marker="s", ls=":", label="held-out FK error (mm)")
    ax2.set_ylabel("stage-1 held-out FK error (mm)", color="tab:red")
    ax2.set_ylim(0, max(fk) * 1.3)
  h1, l1 = ax.get_legend_handles_labels()
  h2, l2 = ax2.get_legend_handles_labels()
  ax.legend(h1 + h2, l1 + l2, loc="upper left", fontsize=8)
  ax.set_title(f"Decoupled success vs stage-1 length ({task}, DP-MLP 128x4, low-dim)", fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
