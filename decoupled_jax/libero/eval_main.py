r"""Evaluate a served policy on LIBERO with the paper's protocol (runs in the LIBERO venv).

  make libero-env
  python experiments/serve.py --checkpoint=workdirs/libero/.../checkpoints --port=8000 &
  PYTHONPATH=. .venv-libero/bin/python -m decoupled_jax.libero.eval_main \
      --address=127.0.0.1:8000 --suite=libero_spatial --tasks=all --episodes=50 \
      --out_dir=workdirs/libero_eval

(`experiments/libero_eval.py` is the same binary, runnable by path.) Resumable: rerun the same
command to finish an interrupted evaluation (per episode). See `runner.py` for the protocol and
docs/libero.md for the setting. Bad flags: one `error:` line, exit 2. Imports absl and this
sub-package only (the LIBERO venv has no jax); flags are defined when the binary starts.
"""
import json
import os
import sys


def _define_flags():
  from absl import flags

  from decoupled_jax.libero import suites
  flags.DEFINE_string("address", "127.0.0.1:8000", "host:port (or ws://...) of the policy server")
  flags.DEFINE_string("suite", "libero_spatial", f"one of {list(suites.SUITES)}")
  flags.DEFINE_string("tasks", "all", "'all' or task ids joined by '+', e.g. 0+3+7")
  flags.DEFINE_integer("episodes", suites.EPISODES_PER_TASK, "episodes per task")
  flags.DEFINE_integer("eval_seed", 0, "seed of the policy's sampling noise (the paper: 0/42/420)")
  flags.DEFINE_string("out_dir", "workdirs/libero_eval", "results: <out_dir>/<suite>/...")
  flags.DEFINE_float("reconnect_timeout_s", 300.0, "how long to wait for a restarting server")
  flags.DEFINE_integer("image_size", 128, "camera resolution when the policy takes images")
  flags.DEFINE_integer("max_steps", 0, "episode length cap; 0 = the suite's (280/280/300/520)")


def _main(argv):
  del argv
  from absl import flags, logging

  from decoupled_jax.libero import suites
  FLAGS = flags.FLAGS
  try:
    suites.check_suite(FLAGS.suite)
    tasks = suites.parse_task_list(FLAGS.tasks, FLAGS.suite)
    if FLAGS.episodes <= 0:
      raise ValueError(f"--episodes must be > 0, got {FLAGS.episodes}")
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  from decoupled_jax.libero import runner

  def progress(suite, tid, e, r):
    logging.info("%s task %d episode %d: %s in %d steps%s", suite, tid, e,
                 "success" if r["success"] else "failure", r["steps"],
                 f" ({r['error']})" if r.get("error") else "")

  try:
    summary = runner.evaluate(FLAGS.address, FLAGS.suite, tasks, FLAGS.out_dir,
                              episodes=FLAGS.episodes, eval_seed=FLAGS.eval_seed,
                              reconnect_timeout_s=FLAGS.reconnect_timeout_s,
                              image_size=FLAGS.image_size, max_steps=FLAGS.max_steps,
                              progress=progress)
  except (runner.ServerGone, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  for tid, t in summary["tasks"].items():
    print(f"{FLAGS.suite} task {tid}: {t['successes']}/{t['episodes']} "
          f"({100 * t['success_rate']:.0f} %)  {t['instruction']}")
  print(f"{FLAGS.suite}: {100 * summary['success_rate']:.1f} % (mean over tasks)")
  print(json.dumps({"summary": os.path.join(FLAGS.out_dir, FLAGS.suite, "summary.json")}))


def main(argv=None) -> None:
  """The binary: defines its flags, parses `argv` (default sys.argv) and runs."""
  from absl import app
  os.environ.setdefault("MUJOCO_GL", "egl")   # before libero / robosuite import mujoco
  _define_flags()
  app.run(_main, argv)


if __name__ == "__main__":
  main()
