"""Smoke tests of the real binaries on CPU with debug configs: stage 1 (on-device FK data)
trains, refuses to overwrite, resumes; its checkpoint loads into a stage-2 model whose backbone
is then frozen; stage 2 trains in every mode and resumes. A synthetic robomimic-layout file
stands in for demonstrations here (test_sim.py / test_paper.py cover the simulator)."""
import json
import os

import numpy as np
import pytest

from decoupled_jax.training import checkpoint, partition
from helpers import REPO, assert_one_line_error, export_robomimic, run_binary, synthetic_demos


@pytest.fixture(scope="module")
def stage1_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("stage1") / "run")
  cache = str(tmp_path_factory.mktemp("xla_cache"))
  cfg = "--config=" + os.path.join(REPO, "configs/pretrain.py") + ":debug"
  run_binary("pretrain.py", cfg, f"--workdir={workdir}", f"--compilation_cache_dir={cache}")
  assert any(n.startswith("jit_fused_step") for n in os.listdir(cache))   # persistent cache
  return workdir, cfg


def test_pretrain_binary_trains_refuses_overwrite_and_resumes(stage1_run):
  workdir, cfg = stage1_run
  summary = json.load(open(os.path.join(workdir, "summary.json")))
  assert summary["steps"] == 4
  for k in ("pos_err_mm", "rot_err_deg", "baseline_pos_err_mm", "baseline_rot_err_deg"):
    assert np.isfinite(summary["eval"][k]), k
  assert os.path.isdir(os.path.join(workdir, "tensorboard"))
  before = sorted(os.listdir(os.path.join(workdir, "checkpoints")))
  again = run_binary("pretrain.py", cfg, f"--workdir={workdir}", expect_ok=False)
  assert again.returncode == 2 and "--resume" in again.stderr
  assert_one_line_error(again)
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == before
  run_binary("pretrain.py", cfg, f"--workdir={workdir}", "--config.train.num_steps=6", "--resume")
  assert checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"), read_only=True).latest_step() == 6


def test_stage2_binary_loads_stage1_freezes_backbone_and_resumes(stage1_run, tmp_path):
  stage1_dir, _ = stage1_run
  stage1_ckpt = os.path.join(stage1_dir, "checkpoints")
  data = synthetic_demos(str(tmp_path / "demos.hdf5"))
  cfg = "--config=" + os.path.join(REPO, "configs/train.py") + ":mode=decoupled,debug"
  workdir = str(tmp_path / "decoupled")
  common = [cfg, f"--config.data.dataset={data}", f"--config.stage1_checkpoint={stage1_ckpt}",
            "--config.eval.num_episodes=0"]
  run_binary("train.py", *common, f"--workdir={workdir}")
  run_binary("train.py", *common, f"--workdir={workdir}", "--config.train.num_steps=5", "--resume")
  s1, _ = checkpoint.load_inference_params(stage1_ckpt)
  s2, meta = checkpoint.load_inference_params(os.path.join(workdir, "checkpoints"))
  assert meta["step"] == 5 and meta["mode"] == "decoupled"
  f1, f2 = partition.flatten(s1), partition.flatten(s2)
  backbone = [k for k in f2 if k.startswith("backbone/")]
  film = [k for k in backbone if "cond_" in k]
  assert film and len(film) < len(backbone)
  for k in backbone:
    if k in film:
      continue
    np.testing.assert_array_equal(np.asarray(f1[k]), np.asarray(f2[k]), err_msg=k)
  # Conditioning kernels are fresh (the condition width differs from stage 1) and trained.
  assert any(f1.get(k) is None or f1[k].shape != f2[k].shape for k in film)
  summary = json.load(open(os.path.join(workdir, "summary.json")))
  assert summary["loaded"]["copied"] == len(backbone) - sum(
      f1.get(k) is None or f1[k].shape != f2[k].shape for k in film)


def test_stage2_rejects_mismatched_stage1_and_missing_checkpoint(stage1_run, tmp_path):
  stage1_dir, _ = stage1_run
  data = synthetic_demos(str(tmp_path / "demos.hdf5"))
  cfg = "--config=" + os.path.join(REPO, "configs/train.py") + ":mode=decoupled,debug"
  # A wider backbone than the stage-1 one: refused from the stage-1 meta, naming the field.
  proc = run_binary("train.py", cfg, f"--config.data.dataset={data}",
                    f"--config.stage1_checkpoint={os.path.join(stage1_dir, 'checkpoints')}",
                    "--config.backbone.kwargs.n_emb=48", "--config.eval.num_episodes=0",
                    f"--workdir={tmp_path / 'bad'}", expect_ok=False)
  assert proc.returncode == 2
  assert "config.backbone" in proc.stderr and "'n_emb': 48" in proc.stderr
  assert not os.path.exists(tmp_path / "bad" / "checkpoints")
  proc = run_binary("train.py", cfg, f"--config.data.dataset={data}",
                    "--config.eval.num_episodes=0", f"--workdir={tmp_path / 'none'}",
                    expect_ok=False)
  assert proc.returncode == 2 and "config.stage1_checkpoint" in proc.stderr
  # Another action scale than stage 1 used: a frozen backbone would see other targets.
  proc = run_binary("train.py", cfg, f"--config.data.dataset={data}",
                    f"--config.stage1_checkpoint={os.path.join(stage1_dir, 'checkpoints')}",
                    "--config.data.position_box=((-0.3,-0.3,0.8),(0.3,0.3,1.2))",
                    "--config.eval.num_episodes=0", f"--workdir={tmp_path / 'scale'}",
                    expect_ok=False)
  assert proc.returncode == 2 and "config.data.position_box" in proc.stderr


@pytest.mark.parametrize("mode", ["normal", pytest.param("random_frozen", marks=pytest.mark.slow)])
def test_stage2_other_modes(mode, tmp_path):
  data = synthetic_demos(str(tmp_path / "demos.hdf5"))
  cfg = "--config=" + os.path.join(REPO, "configs/train.py") + f":mode={mode},debug"
  run_binary("train.py", cfg, f"--config.data.dataset={data}", "--config.eval.num_episodes=0",
             f"--workdir={tmp_path / mode}")
  s = json.load(open(tmp_path / mode / "summary.json"))
  assert s["mode"] == mode
  if mode == "normal":
    assert s["num_trainable"] == s["num_params"]
  else:
    assert s["num_trainable"] < s["num_params"]


def test_stage2_trains_from_rlds_and_lerobot_with_the_hdf5_losses(tmp_path):
  """The same demonstrations as robomimic HDF5, RLDS (TFDS array_record) and LeRobot v2.1:
  `train.py --config.data.format=...` gives bitwise the same first losses from each."""
  data = synthetic_demos(str(tmp_path / "demos.hdf5"))
  copies = {"robomimic": data,
            "rlds": export_robomimic(data, str(tmp_path / "rlds"), to="rlds"),
            "lerobot": export_robomimic(data, str(tmp_path / "lerobot"), to="lerobot")}
  cfg = "--config=" + os.path.join(REPO, "configs/train.py") + ":mode=normal,debug"
  losses = {}
  for fmt, path in copies.items():
    work = tmp_path / f"run_{fmt}"
    if fmt == "rlds":       # through the binary once; the others in process (same code path)
      run_binary("train.py", cfg, f"--config.data.dataset={path}", f"--config.data.format={fmt}",
                 "--config.eval.num_episodes=0", f"--workdir={work}")
    else:
      from decoupled_jax import config_lib
      from decoupled_jax.pipelines import run as run_lib
      c = config_lib.from_file(os.path.join(REPO, "configs/train.py"), "mode=normal,debug")
      c.data.dataset, c.data.format, c.eval.num_episodes = path, fmt, 0
      run_lib.run(c, str(work))
    rows = [json.loads(l) for l in open(work / "metrics.jsonl")]
    losses[fmt] = [(r["step"], r["loss"]) for r in rows if "loss" in r]
  assert len(losses["robomimic"]) == 3
  assert losses["rlds"] == losses["robomimic"] and losses["lerobot"] == losses["robomimic"]
  # Stage 1 from (joint, pose) pairs of the RLDS copy.
  pcfg = ("--config=" + os.path.join(REPO, "configs/pretrain.py")
          + f":debug,source=demos,hdf5={copies['rlds']}")
  run_binary("pretrain.py", pcfg, "--config.data.format=rlds", f"--workdir={tmp_path / 's1'}")
  s = json.load(open(tmp_path / "s1" / "summary.json"))
  assert s["stage"] == "pretrain" and s["steps"] == 4


@pytest.mark.slow
def test_benchmark_binary_reports_flops_profile_and_optimizer_time(tmp_path):
  """benchmark.py end to end for one small configuration: a plausible FLOP count and fraction
  of peak, the profile attributes time to matmuls, the optimizer is timed."""
  out = tmp_path / "bench.json"
  run_binary("benchmark.py", "--backbones=dp_t_film", "--modes=decoupled", "--steps=1",
             "--nosampling", "--noloader", "--profile", f"--output={out}")
  r = json.load(open(out))
  row, = r["train"]
  assert r["gemm_gflops"] > 1 and r["stream_gbps"] > 0.1
  assert row["trainable"] < row["params"] and 1 < row["gflop_per_step"] < 100
  assert 0 < row["peak_fraction"] < 1.5 and row["optimizer_ms"] > 0
  kinds = row["profile"]["by_kind"]
  assert abs(sum(kinds.values()) - 1) < 1e-6 and kinds.get("matmul", 0) > 0.1, kinds
  assert all(t["kind"] in kinds for t in row["profile"]["top"])
