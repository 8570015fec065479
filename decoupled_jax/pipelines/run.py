"""Run one stage in a working directory: validate, lock, build, train, evaluate, summarise.

Every training binary calls `run(config, workdir, resume=...)`. The stage is chosen by
`config.stage` (`pretrain` | `finetune`); what it trains on and how it is scored is the
benchmark object `config.benchmark` names (`decoupled_jax/benchmarks/`): a new benchmark or
robot is one object there, not a new stage.
"""
from __future__ import annotations

import contextlib
import logging
import os

from decoupled_jax import config_lib
from decoupled_jax.pipelines import common, finetune, pretrain
from decoupled_jax.training import sharding, trainer
from decoupled_jax.training.workdir import WorkdirLock

STAGE_BUILDERS = {
    "pretrain": pretrain.make_stage,
    "finetune": finetune.make_stage,
}
SUMMARY = "summary.json"


def run(config, workdir: str, *, resume: bool = False, devices=None) -> dict:
  """Trains `config.stage` in `workdir` and writes `summary.json`; returns the summary."""
  config_lib.validate(config, num_devices=None if devices is None else len(devices))
  common.log_devices()
  # Process 0 holds the lock, evaluates and writes the summary; every process trains and
  # takes part in the collective checkpoint saves (docs/pods.md).
  primary = sharding.is_primary()
  with WorkdirLock(workdir) if primary else contextlib.nullcontext():
    trainer.check_workdir(workdir, resume)
    stage = STAGE_BUILDERS[config.stage](config)
    result = trainer.train(config, workdir, stage, resume=resume, devices=devices)
    params = sharding.to_host(result.state.inference_params(bool(config.ema.enabled)))
    ev = {}
    if primary and stage.final_evaluate is not None:
      ev = stage.final_evaluate(params, workdir, result.steps)
    summary = {
        "stage": stage.name, "benchmark": config.get("benchmark"), "backbone": config.backbone.name,
        "mode": stage.meta.get("mode"), "task": stage.meta.get("task"),
        "steps": result.steps, "train_wall_time_s": result.wall_time_s,
        "steps_per_s": result.steps_per_s, "compile_time_s": result.compile_time_s,
        "num_params": result.num_params, "num_trainable": result.num_trainable,
        "last_loss": result.last_loss,
        "loaded": {k: len(v) for k, v in result.load_report.items() if isinstance(v, list)},
        "checkpoint_dir": os.path.join(os.path.abspath(workdir), "checkpoints"), "eval": ev,
    }
    if primary:
      common.write_json(os.path.join(workdir, SUMMARY), summary)
  logging.info("%s done: %s", stage.name, os.path.join(workdir, SUMMARY))
  return summary
