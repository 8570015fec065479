"""Scripted-expert ALOHA demonstrations (run with the ALOHA venv's python).

    PYTHONPATH=. .venv-aloha/bin/python -m decoupled_jax.aloha.demos_main \
        --task=transfer_cube --num_demos=50 --out_dir=/path/to/demos [--seed=0] \
        [--camera_size=48x64]

Writes <out_dir>/<task>.hdf5 (+ .json sidecar) in a robomimic-style layout (`demos.py`,
docs/aloha.md); a task whose file already holds >= num_demos demos is skipped, so a rerun
resumes. `--task=all` runs both tasks. Prints the expert's success rate. Bad flags: one
`error:` line, exit 2 (checked before gym-aloha is imported, so any python with absl runs
the checks). Flags are defined when the binary starts.
"""
from __future__ import annotations

import sys

TASKS = ("transfer_cube", "insertion")   # env.TASKS, without importing numpy first


def _define_flags():
  from absl import flags
  flags.DEFINE_string("task", "transfer_cube", f"one of {list(TASKS)} or 'all'")
  flags.DEFINE_integer("num_demos", 50, "successful demonstrations per task (ACT has 50)")
  flags.DEFINE_string("out_dir", None, "output folder: <out_dir>/<task>.hdf5")
  flags.DEFINE_integer("seed", 0, "seed of the object poses (gym-aloha's samplers)")
  flags.DEFINE_string("camera_size", "", "record the top camera at HxW (e.g. 48x64); "
                      "empty: low-dim only")
  flags.DEFINE_float("max_attempts_factor", 3.0,
                     "give up on a task after this x num_demos attempts")


def _fail(msg: str):
  print(f"error: {msg}", file=sys.stderr, flush=True)
  sys.exit(2)


def _main(argv):
  from absl import flags
  FLAGS = flags.FLAGS
  if len(argv) > 1:
    _fail(f"unexpected arguments {argv[1:]}")
  if FLAGS.task == "all":
    tasks = list(TASKS)
  elif FLAGS.task in TASKS:
    tasks = [FLAGS.task]
  else:
    _fail(f"--task: unknown ALOHA task {FLAGS.task!r}; expected one of {list(TASKS)} or 'all'")
  if not FLAGS.out_dir:
    _fail("--out_dir is required")
  if FLAGS.num_demos < 1:
    _fail(f"--num_demos must be >= 1, got {FLAGS.num_demos}")
  if FLAGS.max_attempts_factor < 1:
    _fail(f"--max_attempts_factor must be >= 1, got {FLAGS.max_attempts_factor}")
  from decoupled_jax.aloha.env import parse_camera_size
  try:
    camera_size = parse_camera_size(FLAGS.camera_size)
  except ValueError as e:
    _fail(f"--camera_size: {e}")

  from decoupled_jax.aloha.demos import generate_task
  rows = []
  for task in tasks:
    info = generate_task(task, FLAGS.out_dir, FLAGS.num_demos, seed=FLAGS.seed,
                         camera_size=camera_size, max_attempts_factor=FLAGS.max_attempts_factor,
                         log=lambda m: print(m, flush=True))
    rows.append(info)
    state = "skipped (done)" if info.get("skipped") else f"{info.get('seconds', 0):.0f}s"
    print(f"{task}: {info.get('num_demos')} demos, expert success {info.get('successes', '?')}/"
          f"{info.get('attempts', '?')} [{state}] -> {info['path']}", flush=True)
  print(f"\n{'task':>14}  {'demos':>5}  {'success':>9}  {'rate':>6}  {'s/attempt':>9}")
  incomplete = []
  for r in rows:
    att, suc = r.get("attempts", 0), r.get("successes", 0)
    rate = f"{100 * suc / att:5.1f}%" if att else "   -  "
    print(f"{r['task']:>14}  {r.get('num_demos', 0):>5}  {f'{suc}/{att}':>9}  {rate:>6}  "
          f"{r.get('seconds_per_attempt', 0):>9.2f}")
    if r.get("num_demos", 0) < FLAGS.num_demos:
      incomplete.append(r["task"])
  if incomplete:
    print(f"WARNING: {incomplete} have fewer than {FLAGS.num_demos} demos (max attempts "
          f"reached)", flush=True)


def main(argv=None) -> None:
  """The binary: defines its flags, parses `argv` (default sys.argv) and runs."""
  import os

  from absl import app
  os.environ.setdefault("MUJOCO_GL", "egl")   # before dm_control imports mujoco
  _define_flags()
  app.run(_main, argv)


if __name__ == "__main__":
  main()
