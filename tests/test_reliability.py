"""Fault drills: every run either succeeds, stops at once with one clear line, or recovers.

* kill -9 mid-run, then --resume: bitwise the same losses and state as an uninterrupted run;
* a damaged newest checkpoint: resume from the newest intact one, naming step and file;
* unfinished orbax tmp folders (a kill during a save) are ignored;
* resume drops metric rows past the restored step (no spliced curves);
* a second process on a locked workdir is refused, naming the holder;
* bad config values are refused before any work, naming the field;
* a full disk (checkpoint, metrics) stops the binary with one line naming the file and the
  newest intact step, and --resume continues from it;
* a damaged newest checkpoint costs one warning line, not orbax's tracebacks;
* a metrics line cut off mid-write is dropped on resume with one warning.
"""
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from decoupled_jax import config_lib
from decoupled_jax.errors import ConfigError, DiskFullError, WorkdirLockedError
from decoupled_jax.pipelines import run as run_lib
from decoupled_jax.training import checkpoint
from decoupled_jax.training import workdir as workdir_lib
from decoupled_jax.training.workdir import MetricsLog, WorkdirLock

from helpers import REPO, assert_one_line_error, run_binary, synthetic_demos
from test_training_core import make_config, run

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
    ({"head.type": "gan"}, "config.head.type"),
    ({"head.diffusion.sampler": "euler"}, "config.head.diffusion.sampler"),
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


# ---- a full disk ----------------------------------------------------------------------------

# Runs a binary with writes to files matching $FAKE_ENOSPC_PATH failing for lack of space after
# $FAKE_ENOSPC_AFTER successful opens: at open (FAKE_ENOSPC_AT=open) or as a short write (=write:
# half the bytes land, then ENOSPC without a file name, as when a disk fills mid-line).
_ENOSPC_LAUNCHER = textwrap.dedent("""
    import builtins, errno, os, re, runpy, sys
    pattern = re.compile(os.environ["FAKE_ENOSPC_PATH"])
    after, at = int(os.environ["FAKE_ENOSPC_AFTER"]), os.environ["FAKE_ENOSPC_AT"]
    opened, real_open = [0], builtins.open

    class FillsUp:
      def __init__(self, f):
        self._f = f
      def write(self, data):
        self._f.write(data[:len(data) // 2])
        self._f.flush()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
      def __getattr__(self, name):
        return getattr(self._f, name)
      def __enter__(self):
        return self
      def __exit__(self, *exc):
        self._f.close()

    def fake_open(file, mode="r", *args, **kwargs):
      if (isinstance(file, (str, os.PathLike)) and any(c in mode for c in "wax+")
          and pattern.search(os.fspath(file))):
        opened[0] += 1
        if opened[0] > after:
          if at == "open":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.fspath(file))
          return FillsUp(real_open(file, mode, *args, **kwargs))
      return real_open(file, mode, *args, **kwargs)

    builtins.open = fake_open
    sys.argv = sys.argv[1:]
    runpy.run_path(sys.argv[0], run_name="__main__")
""")
DISK = ["--config.train.num_steps=10", "--config.train.log_every=1",
        "--config.train.checkpoint_every=2", "--config.eval.num_windows=0"]


@pytest.mark.parametrize("target,path_pattern,after,at,named", [
    # orbax's save of step 6 (its metadata files, written in orbax's threads); steps 2, 4 kept
    ("checkpoint", r"/checkpoints/6\.orbax-checkpoint-tmp", 0, "open",
     "checkpoints/6.orbax-checkpoint-tmp/"),
    # the 6th metrics row is cut off mid-line (the resume drops it)
    ("metrics", r"metrics\.jsonl$", 5, "write", "metrics.jsonl"),
])
def test_disk_full_is_one_line_and_resume_continues(tmp_path, target, path_pattern, after, at,
                                                   named):
  work = str(tmp_path / "run")
  launcher = tmp_path / "launch.py"
  launcher.write_text(_ENOSPC_LAUNCHER)
  env = dict(os.environ, MUJOCO_GL=os.environ.get("MUJOCO_GL", "egl"),
             FAKE_ENOSPC_PATH=path_pattern, FAKE_ENOSPC_AFTER=str(after), FAKE_ENOSPC_AT=at)
  proc = subprocess.run([sys.executable, str(launcher), os.path.join(REPO, "experiments",
                                                                     "pretrain.py"),
                         PRETRAIN, f"--workdir={work}", *DISK], capture_output=True, text=True,
                        timeout=900, cwd=REPO, env=env)
  line = assert_one_line_error(proc)
  assert line.startswith("error: no space left on device writing "), line
  assert os.path.join(work, named) in line, line
  assert "checkpoints up to step 4 are intact" in line and "--resume" in line, line
  assert "orbax" not in proc.stderr.replace(line, ""), proc.stderr[-3000:]
  assert sorted(os.listdir(os.path.join(work, "checkpoints")))[:2] == ["2", "4"]
  assert not os.path.exists(os.path.join(work, "checkpoints", "6"))

  again = run_binary("pretrain.py", PRETRAIN, f"--workdir={work}", *DISK, "--resume")
  assert "resumed from step 4" in again.stderr, again.stderr[-3000:]
  assert "Traceback" not in again.stderr, again.stderr[-3000:]
  assert [s for s, _ in _losses(work)] == list(range(1, 11))
  assert os.path.isdir(os.path.join(work, "checkpoints", "10"))


def _mount_tmpfs(path, size):
  os.makedirs(path, exist_ok=True)
  return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                        capture_output=True).returncode == 0


@pytest.mark.slow   # the simulated ENOSPC above covers the default suite
@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0 or not shutil.which("mount"),
                    reason="needs root to mount a small tmpfs")
def test_disk_full_on_a_real_full_filesystem(tmp_path):
  """tensorstore's own error (RESOURCE_EXHAUSTED, not an OSError) from orbax's save thread."""
  disk = tmp_path / "disk"
  if not _mount_tmpfs(disk, "16m"):
    pytest.skip("cannot mount a tmpfs here")
  try:
    work = str(disk / "run")
    args = ["--config.train.num_steps=40", "--config.train.log_every=1",
            "--config.train.checkpoint_every=2", "--config.train.max_checkpoints=100",
            "--config.eval.num_windows=0"]
    proc = run_binary("pretrain.py", PRETRAIN, f"--workdir={work}", *args, expect_ok=False)
    line = assert_one_line_error(proc)
    steps = workdir_lib.checkpoint_steps(os.path.join(work, "checkpoints"))
    assert steps and steps[-1] < 40, steps
    assert line.startswith(f"error: no space left on device writing {work}/"), line
    assert f"checkpoints up to step {steps[-1]} are intact" in line, line
    subprocess.run(["mount", "-o", "remount,size=512m", str(disk)], check=True)
    again = run_binary("pretrain.py", PRETRAIN, f"--workdir={work}", *args, "--resume")
    assert f"resumed from step {steps[-1]}" in again.stderr, again.stderr[-3000:]
    assert [s for s, _ in _losses(work)] == list(range(1, 41))
  finally:
    subprocess.run(["umount", "-l", str(disk)], check=False)


def test_no_space_is_found_however_wrapped(tmp_path):
  ts = ValueError(
      'RESOURCE_EXHAUSTED: Error writing "ema.w/0" in OCDBT database at local file "/w/c/6.tmp/'
      'state/ocdbt.process_0/": Failed writing: "/w/c/6.tmp/state/ocdbt.process_0/d/ab": Failed '
      "to write 712491 bytes to file 8: No space left on device [os_error_code='28']")
  assert workdir_lib.no_space(ts) == ("no space left on device",
                                      "/w/c/6.tmp/state/ocdbt.process_0/d/ab")
  inner = OSError(errno.ENOSPC, "No space left on device", "/w/metrics.jsonl")
  try:
    try:
      raise inner
    except OSError:
      raise RuntimeError("save failed")             # __context__
  except RuntimeError as e:
    wrapped = ExceptionGroup("threads", [KeyError("x"), e])
  assert workdir_lib.no_space(wrapped) == ("no space left on device", "/w/metrics.jsonl")
  assert workdir_lib.no_space(OSError(errno.EDQUOT, "quota"))[0] == "disk quota exceeded"
  assert workdir_lib.no_space(OSError(errno.EACCES, "denied", "/w/x")) is None
  assert workdir_lib.disk_full(ValueError("bad")) is None
  ckpt = tmp_path / "checkpoints"
  for name in ("3", "6", "9.orbax-checkpoint-tmp-12", "4.damaged"):
    (ckpt / name).mkdir(parents=True)
  err = workdir_lib.disk_full(wrapped, str(ckpt))
  assert isinstance(err, DiskFullError) and err.step == 6 and err.path == "/w/metrics.jsonl"
  assert str(err) == ("no space left on device writing /w/metrics.jsonl; checkpoints up to "
                      "step 6 are intact, free space and rerun with --resume")


# ---- a damaged checkpoint, quietly ------------------------------------------------------------

def test_damaged_checkpoint_fallback_prints_one_warning_not_tracebacks(tmp_path):
  # orbax's aftermath of a failed read (asyncio 'Task exception was never retrieved',
  # tensorstore callbacks on a closed event loop, collected coroutines) is timing-dependent:
  # three damaged steps, two kinds of damage, make it near certain without the fix.
  work = str(tmp_path / "run")
  args = ["--config.eval.num_windows=0", "--config.train.max_checkpoints=5"]
  run_binary("pretrain.py", PRETRAIN, f"--workdir={work}", *args,
             "--config.train.num_steps=8")                  # checkpoints 2, 4, 6, 8
  ckpt = os.path.join(work, "checkpoints")
  for step in (4, 8):                                       # every data file cut short
    data = os.path.join(ckpt, str(step), "state", "ocdbt.process_0", "d")
    for name in os.listdir(data):
      os.truncate(os.path.join(data, name), 100)
  os.remove(os.path.join(ckpt, "6", "state", "manifest.ocdbt"))
  proc = run_binary("pretrain.py", PRETRAIN, f"--workdir={work}", *args,
                    "--config.train.num_steps=10", "--resume")
  lines = proc.stderr.splitlines()
  for step in (4, 6, 8):                                    # one line each, naming the step
    warnings = [l for l in lines if f"step {step} is unreadable" in l]
    assert len(warnings) == 1, proc.stderr[-3000:]
    assert "using step 2 instead" in warnings[0] and f"moved step {step} aside to" in warnings[0]
    assert os.path.isdir(os.path.join(ckpt, f"{step}.damaged"))
  noise = [l for l in lines if "orbax" in l.lower() or "Traceback" in l
           or "Event loop is closed" in l]
  assert len(noise) < 5 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
  assert len(lines) < 15, proc.stderr[-3000:]
  assert "resumed from step 2" in proc.stderr


# ---- a metrics line cut off mid-write ---------------------------------------------------------

def test_torn_metrics_line_is_dropped_on_resume(tmp_path, caplog):
  work = tmp_path / "run"
  run(work, make_config(steps=6), stop_at=5)       # checkpoints 3 and 5; rows 2 and 4
  path = work / "metrics.jsonl"
  with open(path, "a") as f:
    f.write('{"step": 5, "loss": 0.12')            # a crash mid-write: no end, no newline
  log = MetricsLog(str(path))
  caplog.set_level("WARNING")
  assert [r["step"] for r in log.rows()] == [2, 4]
  caplog.clear()
  run(work, make_config(steps=8), resume=True)
  warnings = [r for r in caplog.records if "cut off mid-write" in r.getMessage()]
  assert len(warnings) == 1 and "line 3" in warnings[0].getMessage()
  assert [r["step"] for r in log.rows()] == [2, 4, 6, 8]
  for line in open(path):                           # every line whole again
    json.loads(line)


def test_resumable_rows_and_demo_counts_of_the_simulator_sides(tmp_path):
  """util.read_jsonl_by / count_hdf5_demos, what the LIBERO and ALOHA runners and demo writers
  resume from: a line cut by a kill is skipped (that episode reruns), a later row of an episode
  wins, a missing or foreign file counts as nothing done."""
  import h5py
  from decoupled_jax import util
  path = tmp_path / "episodes.jsonl"
  assert util.read_jsonl_by(str(path)) == {}
  path.write_text('{"episode": 0, "success": false}\n\n{"episode": 1, "success": true}\n'
                  '{"episode": 0, "success": true}\n{"episode": 2, "succ')
  rows = util.read_jsonl_by(str(path))
  assert sorted(rows) == [0, 1] and rows[0]["success"] is True
  demos = tmp_path / "d.hdf5"
  assert util.count_hdf5_demos(str(demos)) == 0
  with h5py.File(demos, "w") as f:
    f.create_group("other")
  assert util.count_hdf5_demos(str(demos)) == 0
  with h5py.File(demos, "w") as f:
    for name in ("demo_0", "demo_1", "mask"):
      f.create_group(f"data/{name}")
  assert util.count_hdf5_demos(str(demos)) == 2
