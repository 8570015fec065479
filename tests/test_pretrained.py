"""The pretrained stage-1 experts shipped in the package (decoupled_jax/pretrained).

Each expert is re-scored on fresh held-out FK trajectories (another seed than the one its card
was measured on) and must match its card; `pretrained:<name>` works wherever a stage-1
checkpoint is accepted, and an unknown name is one line listing the shipped ones.
"""
import os

import ml_collections
import numpy as np
import pytest

from decoupled_jax import config_lib, pretrained
from decoupled_jax.errors import ConfigError

from helpers import REPO, assert_one_line_error, run_binary, synthetic_demos

NAMES = pretrained.names()


def test_the_package_ships_experts_within_budget():
  assert NAMES, "no pretrained expert shipped in decoupled_jax/pretrained/"
  total = 0
  for name in NAMES:
    d = pretrained.expert_dir("pretrained:" + name)
    for f in pretrained.FILES:
      assert os.path.exists(os.path.join(d, f)), (name, f)
      total += os.path.getsize(os.path.join(d, f))
    card = pretrained.load_card(name)
    for k in ("training_data", "steps", "train_wall_time_s", "heldout_fk", "code_version"):
      assert card[k], (name, k)
    assert card["heldout_fk"]["pos_err_mm"] < card["heldout_fk"]["baseline_pos_err_mm"]
  assert total <= pretrained.MAX_BYTES


@pytest.mark.parametrize("name", NAMES)
def test_expert_matches_its_card_on_fresh_trajectories(name):
  from decoupled_jax.pipelines import pretrain
  card, meta = pretrained.load_card(name), pretrained.load_meta(name)
  config = ml_collections.ConfigDict(meta["config"])
  config.seed = int(config.seed) + 777          # other held-out windows than the card's
  config.eval.num_windows = 256
  stage = pretrain.make_stage(config)
  params = pretrained.load_params("pretrained:" + name)
  ev = stage.final_evaluate(params, None, 0)
  want = card["heldout_fk"]
  # 256 fresh windows: the mean error moves by a few percent between window sets.
  assert abs(ev["pos_err_mm"] - want["pos_err_mm"]) <= max(0.15 * want["pos_err_mm"], 5.0), ev
  assert abs(ev["rot_err_deg"] - want["rot_err_deg"]) <= max(0.15 * want["rot_err_deg"], 1.0), ev
  assert ev["pos_err_mm"] < 0.8 * ev["baseline_pos_err_mm"]


def test_unknown_pretrained_name_is_one_line_listing_the_shipped_ones(tmp_path):
  c = config_lib.finetune_config(mode="decoupled")
  c.data.dataset = str(tmp_path)
  c.stage1_checkpoint = "pretrained:no_such_expert"
  with pytest.raises(ConfigError, match="unknown pretrained expert 'no_such_expert'") as e:
    config_lib.validate(c)
  for name in NAMES:
    assert "pretrained:" + name in str(e.value)


@pytest.mark.parametrize("name", NAMES[:1])
def test_decoupled_stage2_from_a_shipped_expert(name, tmp_path):
  """The train binary loads the expert's backbone by name: no stage-1 run anywhere."""
  meta = pretrained.load_meta(name)
  kw = meta["config"]["backbone"]["kwargs"]
  data = synthetic_demos(str(tmp_path / "demos.hdf5"))
  args = ["--config=" + os.path.join(REPO, "configs/train.py") + ":mode=decoupled",
          f"--config.stage1_checkpoint=pretrained:{name}", f"--config.data.dataset={data}",
          f"--config.backbone.kwargs.n_emb={kw['n_emb']}",
          f"--config.backbone.kwargs.n_layer={kw['n_layer']}",
          "--config.train.num_steps=2", "--config.train.batch_size=4",
          "--config.train.log_every=1", "--config.train.checkpoint_every=2",
          "--config.eval.num_episodes=0", f"--workdir={tmp_path / 'run'}"]
  run_binary("train.py", *args)
  import json
  summary = json.load(open(tmp_path / "run" / "summary.json"))
  assert summary["loaded"]["copied"] > 0 and summary["num_trainable"] < summary["num_params"]
  # An unknown name, through the binary: one line naming the shipped experts.
  args[1] = "--config.stage1_checkpoint=pretrained:nope"
  line = assert_one_line_error(run_binary("train.py", *args, expect_ok=False))
  assert "pretrained:" + name in line and "stage1_checkpoint" in line


def test_stage2_refuses_a_stage1_expert_of_another_action_space(monkeypatch):
  """A joint-position (or non-Panda-layout) stage 1 cannot be the backbone of a stage 2 that
  trains 10-D end-effector pose actions: refused by name before any weights are read."""
  from decoupled_jax.errors import CheckpointError
  from decoupled_jax.benchmarks import base
  meta = dict(pretrained.load_meta(NAMES[0]), action_dim=7,
              robot={"mjcf": "ur5e/robot.xml", "action_space": "joint_pos"})
  monkeypatch.setattr(base.ckpt_lib, "load_meta", lambda path: meta)
  c = config_lib.finetune_config(mode="decoupled")
  c.stage1_checkpoint = "/some/stage1/checkpoints"
  with pytest.raises(CheckpointError, match="joint_pos targets \\(7-D\\)"):
    base.check_stage1_checkpoint(c, None)


def test_save_expert_writes_the_shipped_format(tmp_path):
  """pipelines/experts.save_expert from a (debug) stage-1 run: the params bit for bit, the
  meta, and a card with the run's steps, wall time and held-out FK error."""
  import json
  from safetensors.numpy import load_file
  from decoupled_jax.errors import CheckpointError
  from decoupled_jax.pipelines import experts
  from decoupled_jax.training import checkpoint as ckpt_lib
  from decoupled_jax.training.partition import flatten
  run = tmp_path / "stage1"
  run_binary("pretrain.py", "--config=" + os.path.join(REPO, "configs/pretrain.py") + ":debug",
             f"--workdir={run}")
  summary = json.load(open(run / "summary.json"))
  out = experts.save_expert(str(run / "checkpoints"), "tiny", summary=summary,
                            code_version="abc123", out_root=str(tmp_path / "ship"))
  assert sorted(os.listdir(out)) == sorted(pretrained.FILES)
  params, meta = ckpt_lib.load_inference_params(str(run / "checkpoints"))
  flat = load_file(os.path.join(out, "params.safetensors"))
  ref = flatten(params)
  assert flat.keys() == ref.keys()
  for k in ref:
    np.testing.assert_array_equal(flat[k], np.asarray(ref[k]), err_msg=k)
  card = json.load(open(os.path.join(out, "card.json")))
  assert card["steps"] == summary["steps"] and card["code_version"] == "abc123"
  assert card["heldout_fk"]["pos_err_mm"] == pytest.approx(summary["eval"]["pos_err_mm"])
  assert json.load(open(os.path.join(out, "meta.json")))["stage"] == "pretrain"
  with pytest.raises(CheckpointError, match="only stage-1"):   # a stage-2 run does not ship
    from unittest import mock
    with mock.patch.object(ckpt_lib, "load_inference_params",
                           return_value=(params, dict(meta, stage="finetune"))):
      experts.save_expert(str(run / "checkpoints"), "x", summary=summary, code_version="a",
                          out_root=str(tmp_path / "ship2"))
