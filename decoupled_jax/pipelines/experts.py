"""Ship a finished stage-1 run as a pretrained expert (decoupled_jax/pretrained/<name>/,
the format its module docstring describes; experiments/ship_expert.py)."""
from __future__ import annotations

import json
import os
from typing import Optional

import numpy as np
from safetensors.numpy import save_file

from decoupled_jax import pretrained
from decoupled_jax.errors import CheckpointError
from decoupled_jax.training import checkpoint as ckpt_lib
from decoupled_jax.training.partition import flatten


def save_expert(checkpoint_dir: str, name: str, *, summary: dict, code_version: str,
                out_root: str = pretrained.HERE, step: Optional[int] = None) -> str:
  """Writes `<out_root>/<name>/` from a finished stage-1 run (its checkpoints directory and
  summary.json); returns the folder."""
  params, meta = ckpt_lib.load_inference_params(checkpoint_dir, step)
  if meta.get("stage") != "pretrain":
    raise CheckpointError(f"{checkpoint_dir} is a {meta.get('stage')!r} checkpoint; only "
                          f"stage-1 (experiments/pretrain.py) runs ship as pretrained experts")
  out = os.path.join(out_root, name)
  os.makedirs(out, exist_ok=True)
  flat = {k: np.ascontiguousarray(np.asarray(v, np.float32)) for k, v in flatten(params).items()}
  save_file(flat, os.path.join(out, "params.safetensors"))
  with open(os.path.join(out, "meta.json"), "w") as f:
    json.dump(meta, f, indent=1, sort_keys=True)
  cfg = meta["config"]
  d, t = cfg["data"], cfg["train"]
  ev = summary.get("eval") or {}
  card = {
      "name": name, "stage": "pretrain", "backbone": meta["backbone"],
      "backbone_kwargs": cfg["backbone"].get("kwargs", {}), "head": meta["head"],
      "horizon": meta["horizon"], "signal": meta["signal"],
      "training_data": (f"generated Panda FK windows (on device, {d.get('fk', {}).get('fk_backend', 'jax')} "
                        f"kinematics), signal {meta['signal']}" if meta["source"] == "generated"
                        else f"demonstration pairs from {os.path.basename(d.get('dataset', ''))}"),
      "normalization": d.get("normalization", "ours"),
      "steps": int(summary["steps"]), "batch_size": int(t["batch_size"]),
      "learning_rate": cfg["optimizer"]["learning_rate"],
      "train_wall_time_s": round(float(summary["train_wall_time_s"]), 1),
      "num_params": int(sum(v.size for v in flat.values())),
      "heldout_fk": {k: float(ev[k]) for k in ("pos_err_mm", "baseline_pos_err_mm",
                                               "rot_err_deg", "baseline_rot_err_deg") if k in ev},
      "heldout_windows": int(cfg["eval"]["num_windows"]), "eval_seed": 10_000 + int(cfg["seed"]),
      "code_version": code_version,
  }
  with open(os.path.join(out, "card.json"), "w") as f:
    json.dump(card, f, indent=1, sort_keys=True)
  with open(os.path.join(out, "README.md"), "w") as f:
    f.write(_card_markdown(card))
  return out


def _card_markdown(c: dict) -> str:
  ev = c["heldout_fk"]
  kw = ", ".join(f"{k}={v}" for k, v in sorted(c["backbone_kwargs"].items()))
  return (f"# pretrained:{c['name']}\n\n"
          f"A stage-1 action expert (docs/method.md §1): {c['backbone']} ({kw}), "
          f"{c['head']} head, horizon {c['horizon']}, {c['num_params']:,} parameters.\n\n"
          f"| | |\n|---|---|\n"
          f"| training data | {c['training_data']} |\n"
          f"| normalisation | {c['normalization']} |\n"
          f"| steps x batch | {c['steps']} x {c['batch_size']} (lr {c['learning_rate']}) |\n"
          f"| train wall time | {c['train_wall_time_s']:.0f} s (this project's 2-core CPU, "
          f"shared with other jobs: not a speed) |\n"
          f"| held-out FK position error | {ev['pos_err_mm']:.1f} mm (mean-pose baseline "
          f"{ev['baseline_pos_err_mm']:.1f} mm) |\n"
          f"| held-out FK rotation error | {ev['rot_err_deg']:.2f}° (baseline "
          f"{ev['baseline_rot_err_deg']:.2f}°) |\n"
          f"| held-out windows | {c['heldout_windows']} (seed {c['eval_seed']}) |\n"
          f"| code version | {c['code_version']} |\n\n"
          f"Use: `--config.stage1_checkpoint=pretrained:{c['name']}` on a decoupled stage-2 run "
          f"with the same backbone, head and horizon.\n")
