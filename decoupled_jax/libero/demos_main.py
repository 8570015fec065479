"""Scripted-expert LIBERO demonstrations (run with the LIBERO venv's python).

    PYTHONPATH=. .venv-libero/bin/python -m decoupled_jax.libero.demos_main \
        --suite=libero_spatial --tasks=all --num_demos=50 --out_dir=/path/to/demos \
        [--seed=0] [--cameras=agentview,robot0_eye_in_hand]

(`experiments/libero_demos.py` is the same binary, runnable by path.) Writes
<out_dir>/<suite>/<task name>_demo.hdf5 (+ .json sidecar) per task in LIBERO's layout
(`demos.py`); tasks already holding >= num_demos demos are skipped, so a rerun resumes. Prints
the expert's success rate per task. Bad flags: one `error:` line, exit 2 (checked before libero
is imported, so any python with absl runs the checks). Flags are defined when the binary starts.
"""
from __future__ import annotations

import sys

CAMERAS = ("agentview", "robot0_eye_in_hand")


def _define_flags():
  from absl import flags

  from decoupled_jax.libero import suites
  flags.DEFINE_string("suite", "libero_spatial", f"one of {list(suites.SUITES)}")
  flags.DEFINE_string("tasks", "all", "'all' or task ids joined by '+' (e.g. 0+3)")
  flags.DEFINE_integer("num_demos", 50, "successful demonstrations per task (LIBERO has 50)")
  flags.DEFINE_string("out_dir", None, "dataset root: files go to <out_dir>/<suite>/")
  flags.DEFINE_integer("seed", 0, "seed of the placements and the expert's randomisation")
  flags.DEFINE_string("cameras", "", "comma-separated cameras to record (agentview, "
                      "robot0_eye_in_hand); empty: low-dim only")
  flags.DEFINE_integer("image_size", 128, "camera height = width")
  flags.DEFINE_float("max_attempts_factor", 3.0,
                     "give up on a task after this x num_demos attempts")


def _fail(msg: str):
  print(f"error: {msg}", file=sys.stderr, flush=True)
  sys.exit(2)


def _main(argv):
  from absl import flags

  from decoupled_jax.libero import suites
  FLAGS = flags.FLAGS
  if len(argv) > 1:
    _fail(f"unexpected arguments {argv[1:]}")
  try:
    suite = suites.check_suite(FLAGS.suite)
    tasks = suites.parse_task_list(FLAGS.tasks, suite)
  except ValueError as e:
    _fail(str(e))
  cameras = tuple(c.strip() for c in FLAGS.cameras.split(",") if c.strip())
  bad = [c for c in cameras if c not in CAMERAS]
  if bad:
    _fail(f"--cameras: unknown camera(s) {bad}; expected some of {list(CAMERAS)}")
  if not FLAGS.out_dir:
    _fail("--out_dir is required")
  if FLAGS.num_demos < 1:
    _fail(f"--num_demos must be >= 1, got {FLAGS.num_demos}")
  if FLAGS.image_size < 8:
    _fail(f"--image_size must be >= 8, got {FLAGS.image_size}")
  if FLAGS.max_attempts_factor < 1:
    _fail(f"--max_attempts_factor must be >= 1, got {FLAGS.max_attempts_factor}")

  from decoupled_jax.libero.demos import generate_task
  rows = []
  for t in tasks:
    info = generate_task(suite, t, FLAGS.out_dir, FLAGS.num_demos, seed=FLAGS.seed,
                         cameras=cameras, image_size=FLAGS.image_size,
                         max_attempts_factor=FLAGS.max_attempts_factor,
                         log=lambda m: print(m, flush=True))
    rows.append(info)
    state = "skipped (done)" if info.get("skipped") else f"{info.get('seconds', 0):.0f}s"
    print(f"{suite} task {t}: {info.get('num_demos')} demos, expert success "
          f"{info.get('successes', '?')}/{info.get('attempts', '?')} [{state}] -> "
          f"{info['path']}", flush=True)

  print(f"\n{suite}: scripted expert")
  print(f"{'task':>4}  {'demos':>5}  {'success':>12}  {'rate':>6}  {'mean len':>8}  {'s/demo':>6}  "
        f"instruction")
  incomplete = []
  for r in rows:
    att, suc = r.get("attempts", 0), r.get("successes", 0)
    rate = f"{100 * suc / att:5.1f}%" if att else "   -  "
    per = r.get("seconds", 0) / max(suc, 1)
    print(f"{r['task_id']:>4}  {r.get('num_demos', 0):>5}  {f'{suc}/{att}':>12}  {rate:>6}  "
          f"{r.get('mean_length', 0):>8.1f}  {per:>6.1f}  {r.get('instruction', '')}")
    if r.get("num_demos", 0) < FLAGS.num_demos:
      incomplete.append(r["task_id"])
  if incomplete:
    print(f"WARNING: task(s) {incomplete} have fewer than {FLAGS.num_demos} demos "
          f"(max attempts reached)", flush=True)


def main(argv=None) -> None:
  """The binary: defines its flags, parses `argv` (default sys.argv) and runs."""
  from absl import app
  _define_flags()
  app.run(_main, argv)


if __name__ == "__main__":
  main()
