"""Pretrained stage-1 action experts shipped inside the package: `pretrained:<name>`.

Wherever a stage-1 checkpoint is accepted (`config.stage1_checkpoint`, the chain's
`stage1_checkpoint`), `pretrained:<name>` selects the expert in `decoupled_jax/pretrained/<name>/`
instead of an orbax checkpoints directory, so a decoupled run needs no stage-1 training.

An expert folder holds
  params.safetensors  the stage-1 inference params ('/'-joined paths; float32)
  meta.json           the stage-1 checkpoint's meta (stage, config, normaliser, shapes)
  card.json           the model card as data: training data, steps, wall time, held-out FK
                      error against the mean-pose baseline, code version
  README.md           the same card for people
Written by `pipelines/experts.save_expert` (experiments/ship_expert.py) from a finished
stage-1 run; read by `training/weight_loaders.Stage1Backbone` and
`pipelines/finetune.check_stage1_checkpoint`. This package imports nothing of the library
but `errors` (the training layer reads it).
Nothing is downloaded: the files are in the wheel.
"""
from __future__ import annotations

import json
import os

from decoupled_jax.errors import CheckpointError

PREFIX = "pretrained:"
HERE = os.path.dirname(os.path.abspath(__file__))
FILES = ("params.safetensors", "meta.json", "card.json", "README.md")
MAX_BYTES = 20 * 2 ** 20   # everything shipped under pretrained/ together (issue 20)


def is_ref(ref) -> bool:
  return isinstance(ref, str) and ref.startswith(PREFIX)


def names() -> list[str]:
  """The shipped experts' names."""
  return sorted(n for n in os.listdir(HERE)
                if os.path.exists(os.path.join(HERE, n, "card.json")))


def expert_dir(ref: str) -> str:
  """The folder of `pretrained:<name>`; an unknown name is one error line listing the names."""
  name = ref[len(PREFIX):] if is_ref(ref) else ref
  if name not in names():
    raise CheckpointError(f"unknown pretrained expert {name!r}: the package ships "
                          f"{', '.join(PREFIX + n for n in names()) or 'none'}")
  return os.path.join(HERE, name)


def load_meta(ref: str) -> dict:
  with open(os.path.join(expert_dir(ref), "meta.json")) as f:
    return json.load(f)


def load_card(ref: str) -> dict:
  with open(os.path.join(expert_dir(ref), "card.json")) as f:
    return json.load(f)


def load_params(ref: str) -> dict:
  """The expert's inference params as the nested dict a checkpoint's `params` item holds."""
  from flax import traverse_util
  from safetensors.numpy import load_file
  path = os.path.join(expert_dir(ref), "params.safetensors")
  try:
    flat = load_file(path)
  except Exception as e:   # the safetensors parser's own message names what is wrong
    raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from None
  return traverse_util.unflatten_dict(flat, sep="/")


def describe(ref: str) -> str:
  """One line for results pages: name, data, steps, held-out FK error vs the baseline."""
  c = load_card(ref)
  ev = c["heldout_fk"]
  return (f"{PREFIX}{c['name']} ({c['training_data']}; {c['steps']} steps x {c['batch_size']}; "
          f"held-out FK {ev['pos_err_mm']:.1f} mm vs mean-pose baseline "
          f"{ev['baseline_pos_err_mm']:.1f} mm)")
