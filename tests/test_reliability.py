"""Fault drills: every run either succeeds, stops at once with one clear line, or recovers.

* kill -9 mid-run, then --resume: bitwise the same losses and state as an uninterrupted run;
* a damaged newest checkpoint: resume from the newest intact one, naming step and file;
* unfinished orbax tmp folders (a kill during a save) are ignored;
* resume drops metric rows past the restored step (no spliced curves);
* a second process on a locked workdir is refused, naming the holder;
* bad config values are refused before any work, naming the field.
"""
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from decoupled_jax import config_lib
from decoupled_jax.errors import ConfigError, WorkdirLockedError
from decoupled_jax.pipelines import run as run_lib
from decoupled_jax.training import checkpoint
from decoupled_jax.training.workdir import MetricsLog, WorkdirLock

sys.path.insert(0, os.path.dirname(__file__))
from test_binaries import REPO, assert_one_line_error, run_binary, synthetic_demos  # noqa: E402
from test_training_core import make_config, run  # noqa: E402

PRETRAIN = "--config=" + os.path.join(REPO, "configs/pretrain.py") + ":debug"
LONG = ["--config.train.num_steps=80", "--config.train.checkpoint_every=10",
        "--config.train.log_every=1", "--config.train.max_checkpoints=3",
        "--config.eval.num_windows=0"]


def _state_leaves(ckpt_dir, step):
  mgr = ocp.CheckpointManager(ckpt_dir, options=ocp.CheckpointManagerOptions(read_only=True),
                              item_names=checkpoint.ITEMS)
  try:
    tree = mgr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore())).state
  finally:
    mgr.close()
  leaves = jax.tree_util.tree_leaves_with_path(tree)
  return {jax.tree_util.keystr(p): np.asarray(v) for p, v in leaves}


def _losses(workdir):
  return [(r["step"], r["loss"]) for r in MetricsLog(os.path.join(workdir, "metrics.jsonl")).rows()
          if "loss" in r]


def test_kill9_then_resume_is_bitwise_identical(tmp_path):
  straight, killed = str(tmp_path / "straight"), str(tmp_path / "killed")
  run_binary("pretrain.py", PRETRAIN, f"--workdir={straight}", *LONG)
  env = dict(os.environ)
  proc = subprocess.Popen([sys.executable, os.path.join(REPO, "experiments", "pretrain.py"),
                           PRETRAIN, f"--workdir={killed}", *LONG], cwd=REPO, env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  ckpt = os.path.join(killed, "checkpoints")
  deadline = time.time() + 300
  while time.time() < deadline:
    steps = [int(n) for n in os.listdir(ckpt) if n.isdigit()] if os.path.isdir(ckpt) else []
    if steps and max(steps) >= 20:
      break
    time.sleep(0.02)
  assert proc.poll() is None, "the run finished before it could be killed"
  os.kill(proc.pid, signal.SIGKILL)
  proc.wait()
  assert not os.path.exists(os.path.join(ckpt, "80"))
  run_binary("pretrain.py", PRETRAIN, f"--workdir={killed}", *LONG, "--resume")
  a, b = _losses(straight), _losses(killed)
  assert [s for s, _ in b] == list(range(1, 81))          # no duplicated or missing rows
  assert a == b                                            # bitwise equal losses
  sa, sb = _state_leaves(os.path.join(straight, "checkpoints"), 80), _state_leaves(ckpt, 80)
  assert sa.keys() == sb.keys() and len(sa) > 50
  for k in sa:
    np.testing.assert_array_equal(sa[k], sb[k], err_msg=k)


def test_damaged_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, caplog):
  work = tmp_path / "run"
  run(work, make_config(steps=6))                          # checkpoints at 3 and 6
  ckpt = work / "checkpoints"
  blobs = sorted((ckpt / "6" / "state").rglob("ocdbt.process_0/d/*"), key=os.path.getsize)
  with open(blobs[-1], "r+b") as f:                        # truncate the largest data file
    f.truncate(100)
  caplog.set_level("WARNING")
  res = run(work, make_config(steps=8), resume=True)
  assert int(res.state.step) == 8
  assert "step 6 is unreadable" in caplog.text and str(ckpt / "6" / "state") in caplog.text
  assert "using step 3 instead" in caplog.text
  assert (ckpt / "6.damaged").is_dir()                     # kept for inspection
  assert [s for s, _ in _losses(str(work))] == [2, 4, 6, 8]  # rows after step 3 replaced
  # A step without its _METADATA: named in the same way.
  os.remove(ckpt / "8" / "state" / "_METADATA")
  caplog.clear()
  res = run(work, make_config(steps=10), resume=True)
  assert int(res.state.step) == 10
  assert f"{ckpt / '8' / 'state' / '_METADATA'}: missing" in caplog.text


def test_unfinished_save_is_ignored(tmp_path):
  work = tmp_path / "run"
  run(work, make_config(steps=3))
  ckpt = work / "checkpoints"
  # What a kill during orbax's save of step 6 leaves behind: a tmp folder, half written.
  tmp = ckpt / "6.orbax-checkpoint-tmp-1234567"
  shutil.copytree(ckpt / "3", tmp)
  shutil.rmtree(tmp / "params")
  res = run(work, make_config(steps=6), resume=True)
  assert int(res.state.step) == 6
  params, meta = checkpoint.load_inference_params(str(ckpt))
  assert meta["step"] == 6


def test_resume_truncates_metrics_to_the_restored_step(tmp_path):
  work = tmp_path / "run"
  run(work, make_config(steps=6), stop_at=5)   # checkpoint at 3 and 5; rows 2 and 4
  log = MetricsLog(str(work / "metrics.jsonl"))
  log.write({"step": 99, "loss": 1.0})         # a row no checkpoint backs
  run(work, make_config(steps=6), resume=True)
  assert [r["step"] for r in log.rows()] == [2, 4, 6]


def test_locked_workdir_is_refused(tmp_path):
  work = str(tmp_path / "run")
  with WorkdirLock(work):
    with pytest.raises(WorkdirLockedError, match=f"in use by pid {os.getpid()}"):
      WorkdirLock(work).__enter__()
    proc = run_binary("pretrain.py", PRETRAIN, f"--workdir={work}", expect_ok=False)
    line = assert_one_line_error(proc)
    assert f"in use by pid {os.getpid()}" in line
  assert not os.path.exists(os.path.join(work, "checkpoints"))
  with WorkdirLock(work):                      # released: can be taken again
    pass


@pytest.mark.parametrize("override,field", [
    ({"data.task": "Liftt"}, "config.data.task"),
    ({"train.batch_size": 0}, "config.train.batch_size"),
    ({"train.batch_size": 3}, None),                       # fine on 1 device
    ({"train.checkpoint_every": 0}, "config.train.checkpoint_every"),
    ({"train.num_steps": 0}, "config.train.num_steps"),
    ({"backbone.name": "dp_x"}, "config.backbone.name"),
    ({"head.type": "gan"}, "config.head"),
    ({"data.lowdim_keys": ("robot0_eef_poss",)}, "config.data.lowdim_keys"),
    ({"data.format": "csv"}, "config.data.format"),
    ({"mode": "frozen"}, "config.mode"),
])
def test_bad_config_values_are_refused_before_any_work(tmp_path, override, field):
  c = config_lib.from_file(os.path.join(REPO, "configs/train.py"), "mode=normal,debug")
  c.data.dataset = synthetic_demos(str(tmp_path / "demos.hdf5"))
  for k, v in override.items():
    *parents, leaf = k.split(".")
    node = c
    for p in parents:
      node = node[p]
    node[leaf] = v
  if field is None:
    config_lib.validate(c, num_devices=1)
    with pytest.raises(ConfigError, match="not divisible by the 2 devices"):
      config_lib.validate(c, num_devices=2)
    return
  with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
    run_lib.run(c, str(tmp_path / "run"))
  assert not os.path.exists(tmp_path / "run")              # nothing was created


def test_bad_config_from_the_command_line_is_one_line(tmp_path):
  data = synthetic_demos(str(tmp_path / "demos.hdf5"))
  cfg = "--config=" + os.path.join(REPO, "configs/train.py") + ":mode=normal,debug"
  proc = run_binary("train.py", cfg, f"--config.data.dataset={data}", "--config.data.task=Liftt",
                    f"--workdir={tmp_path / 'run'}", expect_ok=False)
  assert "config.data.task" in assert_one_line_error(proc)
  assert not os.path.exists(tmp_path / "run")
