"""Benchmarks as objects: what differs per benchmark or dataset, in one place per benchmark
(openpi's `DataConfigFactory`; docs/architecture.md). `config.stage` says what is trained
(`pretrain` | `finetune`), `config.benchmark` on which data and how it is scored:

  stage 1 (`pretrain`)  'fk'         forward kinematics of `config.robot`, generated on
                                     device (or a task's (joint, pose) demonstration pairs)
                        'libero'     LIBERO state -> delta-action pairs
  stage 2 (`finetune`)  'robosuite'  a robosuite task's demonstrations, closed-loop robosuite
                        'libero'     a LIBERO suite, the LIBERO runner
                        'dataset'    any dataset and robot, no simulator: offline evaluation
                        'aloha'      a gym-aloha task (bimanual, joint_pos), the ALOHA runner

A new benchmark is one module with an object implementing `base.Stage2Benchmark` (or
returning `base.Stage1Data`) and one entry below; the stages never branch on it.
"""
from __future__ import annotations

from decoupled_jax import config_lib
from decoupled_jax.benchmarks import aloha, dataset, fk, libero, robosuite

BENCHMARKS = {
    "pretrain": {"fk": fk.FKData, "libero": libero.LiberoPairs},
    "finetune": {"robosuite": robosuite.RobosuiteTask, "libero": libero.LiberoSuite,
                 "dataset": dataset.PlainDataset, "aloha": aloha.AlohaTask},
}


def get(stage: str, benchmark: str):
  """The benchmark object of `stage` named `benchmark`."""
  try:
    return BENCHMARKS[stage][benchmark]()
  except KeyError:
    raise KeyError(f"config.benchmark: {benchmark!r} is not a {stage!r} benchmark; choose one "
                   f"of {sorted(BENCHMARKS.get(stage, {}))}") from None


# The benchmark of a config written before `config.benchmark` existed (a shipped expert's or an
# old checkpoint's): what its stage always meant.
DEFAULTS = {"pretrain": "fk", "finetune": "robosuite",
            **{old: bench for old, (_, bench) in config_lib.LEGACY_STAGES.items()}}


def name_of(config) -> str:
  """`config.benchmark`, or its stage's meaning for configs that predate the key."""
  return config.get("benchmark") or DEFAULTS[config.stage]


def stage1(config):
  return get("pretrain", name_of(config))


def stage2(config):
  return get("finetune", name_of(config))
