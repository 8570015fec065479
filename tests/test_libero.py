"""LIBERO: the suite reader, the two LIBERO stages, and the runner against a served policy.

The simulator tests run the LIBERO venv (`make libero-env`, or $LIBERO_PYTHON) as a
subprocess and are skipped when it is absent (CI has no LIBERO venv; see docs/libero.md).
"""
import json
import os
import subprocess
import time

import numpy as np
import pytest

from decoupled_jax import config_lib
from decoupled_jax.data import libero as libero_data
from decoupled_jax.data.robomimic_hdf5 import DatasetError
from decoupled_jax.errors import ConfigError
from helpers import LIBERO_PY, needs_libero, write_suite
from helpers import REPO_PATH as REPO

SPATIAL0 = ("pick up the black bowl between the plate and the ramekin and place it on the "
            "plate")


def _tiny(c):
  c.backbone.kwargs.update(config_lib.debug_backbone_kwargs("dp_mlp"))
  c.train.num_steps, c.train.batch_size, c.train.checkpoint_every = 6, 8, 6
  c.progress = False
  return c


def test_load_suite_layout_and_language(tmp_path):
  root = write_suite(str(tmp_path), tasks=(0, 3), demos=2, length=12)
  data = libero_data.load_suite(root, "libero_spatial", config_lib.LIBERO_LOWDIM_KEYS)
  assert data.num_episodes == 4 and data.num_frames == 48
  assert data.fields["actions"].shape == (48, 7)
  onehot = data.fields["task_onehot"]
  assert onehot.shape == (48, 10)
  np.testing.assert_array_equal(onehot[:24].argmax(-1), 0)
  np.testing.assert_array_equal(onehot[24:].argmax(-1), 3)
  assert data.attrs["instructions"][3] == "instruction of task 3"
  assert data.attrs["instructions"][1] == ""


def test_load_suite_errors_name_the_file(tmp_path):
  root = write_suite(str(tmp_path), tasks=(0,), demos=1, length=5)
  with pytest.raises(DatasetError, match=r"no demo file for task id\(s\) \[2\]"):
    libero_data.load_suite(root, "libero_spatial", ("robot0_eef_pos",), tasks=[0, 2])
  with pytest.raises(DatasetError, match="no LIBERO demo files"):
    libero_data.load_suite(root, "libero_object", ("robot0_eef_pos",))
  import h5py
  with h5py.File(os.path.join(root, "libero_spatial", "task0_demo.hdf5"), "a") as f:
    f["data/demo_0/actions"][0, 0] = 3.0      # absolute targets would leave [-1, 1]
  with pytest.raises(DatasetError, match=r"leave \[-1, 1\]"):
    libero_data.load_suite(root, "libero_spatial", ("robot0_eef_pos",))


def test_config_validation_names_the_field(tmp_path):
  root = write_suite(str(tmp_path), tasks=(0,), demos=1, length=5)
  c = config_lib.libero_finetune_config("normal")
  c.data.dataset, c.eval.episodes_per_task = root, 0
  config_lib.validate(c, num_devices=1)
  c.data.suite = "libero_99"
  with pytest.raises(ConfigError, match=r"config.data.suite: unknown LIBERO suite 'libero_99'"):
    config_lib.validate(c, num_devices=1)
  c.data.suite, c.data.tasks = "libero_spatial", "0+12"
  with pytest.raises(ConfigError, match=r"config.data.tasks: .*task id 12 out of range"):
    config_lib.validate(c, num_devices=1)
  c.data.tasks, c.data.lowdim_keys = "0", ("robot0_eef_quat",)
  with pytest.raises(ConfigError, match=r"config.data.lowdim_keys: unknown LIBERO low-dim key"):
    config_lib.validate(c, num_devices=1)


def test_libero_stage1_then_decoupled_and_normal(tmp_path):
  """Stage 1 on (state -> delta action) windows; the decoupled run copies the whole backbone
  except the layers whose input width depends on the observation, and trains only the
  conditioning pathway; the normal run trains everything from its init."""
  import jax

  from decoupled_jax.pipelines import run
  from decoupled_jax.training import checkpoint as ckpt_lib
  from decoupled_jax.training.partition import flatten
  root = write_suite(str(tmp_path / "data"), tasks=(0, 1), demos=3, length=20)
  c1 = _tiny(config_lib.libero_pretrain_config("dp_mlp"))
  c1.data.dataset, c1.data.suites = root, ("libero_spatial",)
  s1 = run.run(c1, str(tmp_path / "s1"))
  assert set(s1["eval"]) >= {"pos_err_mm", "rot_err_deg", "baseline_pos_err_mm"}
  out = {}
  for mode in ("normal", "decoupled"):
    c2 = _tiny(config_lib.libero_finetune_config(mode, "dp_mlp"))
    c2.data.dataset, c2.data.tasks, c2.eval.episodes_per_task = root, "0+1", 0
    if mode == "decoupled":
      c2.stage1_checkpoint = s1["checkpoint_dir"]
    out[mode] = run.run(c2, str(tmp_path / mode))
  assert out["normal"]["loaded"] == {"copied": 0, "fresh": out["normal"]["loaded"]["fresh"]}
  assert out["normal"]["num_trainable"] == out["normal"]["num_params"]
  dec = out["decoupled"]
  assert dec["num_trainable"] < dec["num_params"]
  p1, _ = ckpt_lib.load_inference_params(s1["checkpoint_dir"], None)
  p2, meta = ckpt_lib.load_inference_params(dec["checkpoint_dir"], None)
  f1, f2 = flatten(jax.device_get(p1)), flatten(jax.device_get(p2))
  same = [k for k in f2 if k.startswith("backbone/") and k in f1
          and f1[k].shape == f2[k].shape and np.array_equal(f1[k], f2[k])]
  changed = [k for k in f2 if k.startswith("backbone/") and k not in same]
  # every copied backbone leaf outside the conditioning pathway is bit-identical to stage 1;
  # only conditioning leaves (FiLM projections) differ
  assert len(same) == dec["loaded"]["copied"] - sum(
      1 for k in f2 if k.startswith("backbone/") and k in f1 and f1[k].shape == f2[k].shape
      and not np.array_equal(f1[k], f2[k]))
  assert changed and all("cond" in k or "film" in k.lower() for k in changed), changed
  assert meta["language"]["key"] == "task_onehot"
  assert meta["action_layout"].startswith("LIBERO delta")


def test_image_policy_with_a_narrowed_encoder(tmp_path):
  """configs/libero.py:images on a CPU: each camera's ResNet-18 at the configured widths and
  crop; the frame size travels in the meta (the evaluation renders at it); a crop larger
  than the frames and widths GroupNorm cannot split are refused naming the field."""
  import jax

  from decoupled_jax.pipelines import run
  from decoupled_jax.training import checkpoint as ckpt_lib
  from decoupled_jax.training.partition import flatten
  root = write_suite(str(tmp_path / "data"), tasks=(0,), demos=2, length=20,
                                     images=True)
  c = _tiny(config_lib.libero_finetune_config("normal", "dp_mlp", obs="image"))
  assert c.encoder.crop_size == 116   # the paper's LIBERO crop (of 128x128 frames)
  c.data.dataset, c.data.tasks, c.eval.episodes_per_task = root, "0", 0
  c.encoder.update(crop_size=28, stage_widths=(8, 16, 16, 32))
  s = run.run(c, str(tmp_path / "policy"))
  params, meta = ckpt_lib.load_inference_params(s["checkpoint_dir"], None)
  flat = flatten(jax.device_get(params))
  convs = {k: v.shape for k, v in flat.items() if k.startswith("encoder/")
           and k.endswith("/backbone/conv1/kernel")}
  assert sorted(convs.values()) == [(7, 7, 3, 8)] * 2, convs        # one trunk per camera
  last = [v.shape for k, v in flat.items() if k.endswith("/backbone/layer4_1/conv2/kernel")]
  assert last == [(3, 3, 32, 32)] * 2
  assert meta["image_size"] == 32

  c2 = _tiny(config_lib.libero_finetune_config("normal", "dp_mlp", obs="image"))
  c2.data.dataset, c2.data.tasks, c2.eval.episodes_per_task = root, "0", 0
  with pytest.raises(ConfigError, match=r"config.encoder.crop_size: 116 exceeds the 32x32 "
                     r"frames of 'agentview_image'"):
    run.run(c2, str(tmp_path / "too_big"))
  assert not os.path.exists(tmp_path / "too_big" / "checkpoints") or not os.listdir(
      tmp_path / "too_big" / "checkpoints")
  c2.encoder.stage_widths = (8, 24, 32, 64)
  with pytest.raises(ConfigError, match=r"config.encoder.stage_widths: .*\(8, 24, 32, 64\)"):
    config_lib.validate(c2, num_devices=1)


def _train_tiny_policy(tmp_path, instructions=None):
  from decoupled_jax import inference
  from decoupled_jax.pipelines import run
  root = write_suite(str(tmp_path / "data"), tasks=(0,), demos=2, length=20,
                                     instructions=instructions or {0: SPATIAL0})
  c = _tiny(config_lib.libero_finetune_config("normal", "dp_mlp"))
  c.data.dataset, c.data.tasks, c.eval.episodes_per_task = root, "0", 0
  s = run.run(c, str(tmp_path / "policy"))
  return inference.load_policy(s["checkpoint_dir"])


def _runner_cmd(port, out_dir, episodes=2, max_steps=16, extra=()):
  return [LIBERO_PY, str(REPO / "experiments" / "libero_eval.py"),
          f"--address=127.0.0.1:{port}", "--suite=libero_spatial", "--tasks=0",
          f"--episodes={episodes}", f"--max_steps={max_steps}", f"--out_dir={out_dir}",
          "--reconnect_timeout_s=60", *extra]


@needs_libero
def test_runner_against_served_policy_resumes_and_reconnects(tmp_path):
  """One LIBERO task for a few steps against the served policy; the results resume per
  episode; a server that restarts mid-run is reconnected to."""
  from decoupled_jax.serving.server import PolicyServer
  runner, meta = _train_tiny_policy(tmp_path)
  srv = PolicyServer(runner, port=0).start()
  port = srv.port
  out = tmp_path / "eval"
  p = subprocess.run(_runner_cmd(port, out, episodes=1), capture_output=True, text=True,
                     timeout=300)
  assert p.returncode == 0, p.stderr[-2000:]
  lines = (out / "libero_spatial" / "task_0.jsonl").read_text().splitlines()
  assert len(lines) == 1 and json.loads(lines[0])["steps"] == 16   # an untrained policy fails
  first = json.loads(lines[0])
  # resume: 3 episodes asked, episode 0 is reused, 1 and 2 run; restart the server meanwhile
  proc = subprocess.Popen(_runner_cmd(port, out, episodes=3, max_steps=60),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  path = out / "libero_spatial" / "task_0.jsonl"
  deadline = time.time() + 240
  while len(path.read_text().splitlines()) < 2 and time.time() < deadline:
    time.sleep(0.2)
  srv.stop()
  time.sleep(1.0)
  srv = PolicyServer(runner, port=port).start()
  try:
    stdout, _ = proc.communicate(timeout=300)
  finally:
    srv.stop()
  assert proc.returncode == 0, stdout[-2000:]
  rows = [json.loads(x) for x in path.read_text().splitlines()]
  assert [r["episode"] for r in rows] == [0, 1, 2]
  assert rows[0] == first
  summary = json.loads((out / "libero_spatial" / "summary.json").read_text())
  assert summary["episodes"] == 3 and summary["tasks"]["0"]["episodes"] == 3
  assert summary["reconnects"] >= 1
  assert all("error" not in r for r in rows), rows


@needs_libero
def test_runner_counts_server_errors_as_failures(tmp_path):
  """A server answering with an error frame: the episode fails with the reason, the run goes on."""
  from decoupled_jax.serving.server import PolicyServer
  runner, _ = _train_tiny_policy(tmp_path)

  class Broken:
    def __init__(self, r):
      self.r, self.calls = r, 0
      for k in ("obs_keys", "obs_shapes", "obs_dtypes", "n_obs", "n_act", "metadata", "batch",
                "check"):
        setattr(self, k, getattr(r, k))

    def __call__(self, obs, seeds=None, steps=None):
      self.calls += 1
      if self.calls > 1:      # the warm-up call passes, every request fails
        raise RuntimeError("simulated policy failure")
      return self.r(obs, seeds=seeds, steps=steps)

  srv = PolicyServer(Broken(runner), port=0).start()
  try:
    p = subprocess.run(_runner_cmd(srv.port, tmp_path / "eval", episodes=2), capture_output=True,
                       text=True, timeout=300)
  finally:
    srv.stop()
  assert p.returncode == 0, p.stderr[-2000:]
  rows = [json.loads(x) for x in
          (tmp_path / "eval" / "libero_spatial" / "task_0.jsonl").read_text().splitlines()]
  assert len(rows) == 2 and not any(r["success"] for r in rows)
  assert all("simulated policy failure" in r["error"] for r in rows), rows


@needs_libero
def test_runner_refuses_bad_ids_and_foreign_policies(tmp_path):
  for args, msg in ((["--suite=libero_99"], "unknown LIBERO suite 'libero_99'"),
                    (["--tasks=0+10"], "task id 10 out of range")):
    cmd = [LIBERO_PY, str(REPO / "experiments" / "libero_eval.py"), "--address=127.0.0.1:1",
           *args]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2
    assert p.stderr.strip().splitlines()[-1] == f"error: {p.stderr.strip().splitlines()[-1][7:]}"
    assert msg in p.stderr
  # a policy trained on other instructions is refused up front, naming the instruction
  from decoupled_jax.serving.server import PolicyServer
  runner, _ = _train_tiny_policy(tmp_path, instructions={0: "stack the cups"})
  srv = PolicyServer(runner, port=0).start()
  try:
    p = subprocess.run(_runner_cmd(srv.port, tmp_path / "eval", episodes=1),
                       capture_output=True, text=True, timeout=300)
  finally:
    srv.stop()
  assert p.returncode == 2
  assert "is not in the served policy's vocabulary" in p.stderr


@pytest.mark.slow
def test_decoupled_from_generated_fk_stage1(tmp_path):
  """The demonstration-free alternative: a backbone pretrained on generated Panda FK data
  (absolute poses) is frozen under a LIBERO policy (delta actions); a stage-2 checkpoint is
  still refused as a 'stage 1'."""
  from decoupled_jax.errors import CheckpointError
  from decoupled_jax.pipelines import run
  root = write_suite(str(tmp_path / "data"), tasks=(0,), demos=2, length=20)
  fk = _tiny(config_lib.pretrain_config("dp_mlp", signal="jp"))
  fk.data.horizon, fk.eval.num_windows = 16, 8
  s1 = run.run(fk, str(tmp_path / "fk"))
  c2 = _tiny(config_lib.libero_finetune_config("decoupled", "dp_mlp"))
  c2.data.dataset, c2.data.tasks, c2.eval.episodes_per_task = root, "0", 0
  c2.stage1_checkpoint = s1["checkpoint_dir"]
  dec = run.run(c2, str(tmp_path / "dec"))
  assert dec["loaded"]["copied"] > 0 and dec["num_trainable"] < dec["num_params"]
  c3 = _tiny(config_lib.libero_finetune_config("decoupled", "dp_mlp"))
  c3.data.dataset, c3.data.tasks, c3.eval.episodes_per_task = root, "0", 0
  c3.stage1_checkpoint = dec["checkpoint_dir"]
  with pytest.raises(CheckpointError, match="not a stage-1 one"):
    run.run(c3, str(tmp_path / "dec2"))


def test_episode_outcomes_collects_every_task_file_in_order(tmp_path):
  """The LIBERO evaluation's per-episode outcomes (what a table's record keeps beside it): the
  episodes its summary counts, in (task, episode) order, read as the runner reads its resumable
  files (a rerun episode's last row, no cut line), with the error of a failed one."""
  from decoupled_jax.benchmarks.libero import episode_outcomes
  d = tmp_path / "libero_spatial"
  d.mkdir()
  rows = {2: [(1, True, 90, None), (0, False, 280, None)],
          10: [(0, True, 12, None), (0, False, 12, "server error frame")]}   # rerun: last wins
  for task, eps in rows.items():
    with open(d / f"task_{task}.jsonl", "w") as f:
      for ep, ok, steps, err in eps:
        f.write(json.dumps({"task_id": task, "episode": ep, "init_index": ep, "seed": 1000 * task + ep,
                            "success": ok, "steps": steps, **({"error": err} if err else {})}) + "\n")
  with open(d / "task_10.jsonl", "a") as f:
    f.write('{"task_id": 10, "episode": 1, "succ')   # a kill cut this line: not an episode
  summary = {"suite": "libero_spatial", "tasks": {"10": {"episodes": 1}, "2": {"episodes": 2}}}
  out = episode_outcomes(str(tmp_path), summary)
  assert [(r["task_id"], r["episode"], r["success"], r["length"]) for r in out] == [
      (2, 0, False, 280), (2, 1, True, 90), (10, 0, False, 12)]
  assert out[2]["error"] == "server error frame" and "error" not in out[0]
  assert out[1]["seed"] == 2001 and out[1]["init_index"] == 1
