r"""Evaluate a served policy on an ALOHA task (runs in the ALOHA venv).

  make aloha-env
  python experiments/serve.py --checkpoint=workdirs/aloha/.../checkpoints --port=8000 &
  PYTHONPATH=. .venv-aloha/bin/python -m decoupled_jax.aloha.eval_main \
      --address=127.0.0.1:8000 --task=transfer_cube --episodes=50 --seed=0 \
      --out_dir=workdirs/aloha_eval [--num_videos=2]

Resumable: rerun the same command to finish an interrupted evaluation (per episode). See
`runner.py` for the protocol and docs/aloha.md for the setting. Bad flags: one `error:`
line, exit 2. Imports absl and this sub-package only (the ALOHA venv has no jax); flags are
defined when the binary starts.
"""
import json
import os
import sys

TASKS = ("transfer_cube", "insertion")


def _define_flags():
  from absl import flags
  flags.DEFINE_string("address", "127.0.0.1:8000", "host:port (or ws://...) of the policy server")
  flags.DEFINE_string("task", "transfer_cube", f"one of {list(TASKS)}")
  flags.DEFINE_integer("episodes", 50, "episodes")
  flags.DEFINE_integer("seed", 0, "seed of the object poses and the policy's sampling noise")
  flags.DEFINE_string("out_dir", "workdirs/aloha_eval", "results: <out_dir>/<task>/...")
  flags.DEFINE_integer("num_videos", 0, "write the top camera of the first N episodes as mp4")
  flags.DEFINE_integer("max_steps", 400, "episode length (ACT's episode_len: 400)")
  flags.DEFINE_float("reconnect_timeout_s", 300.0, "how long to wait for a restarting server")


def _fail(msg: str):
  print(f"error: {msg}", file=sys.stderr, flush=True)
  sys.exit(2)


def _main(argv):
  from absl import flags, logging
  FLAGS = flags.FLAGS
  if len(argv) > 1:
    _fail(f"unexpected arguments {argv[1:]}")
  if FLAGS.task not in TASKS:
    _fail(f"--task: unknown ALOHA task {FLAGS.task!r}; expected one of {list(TASKS)}")
  if FLAGS.episodes <= 0:
    _fail(f"--episodes must be > 0, got {FLAGS.episodes}")
  if FLAGS.max_steps <= 0:
    _fail(f"--max_steps must be > 0, got {FLAGS.max_steps}")
  if FLAGS.num_videos < 0:
    _fail(f"--num_videos must be >= 0, got {FLAGS.num_videos}")
  if not FLAGS.out_dir:
    _fail("--out_dir is required")
  from decoupled_jax.aloha import runner

  def progress(task, e, r):
    logging.info("%s episode %d: %s in %d steps%s", task, e,
                 "success" if r["success"] else "failure", r["steps"],
                 f" ({r['error']})" if r.get("error") else "")

  try:
    summary = runner.evaluate(FLAGS.address, FLAGS.task, FLAGS.out_dir,
                              episodes=FLAGS.episodes, eval_seed=FLAGS.seed,
                              max_steps=FLAGS.max_steps, num_videos=FLAGS.num_videos,
                              reconnect_timeout_s=FLAGS.reconnect_timeout_s, progress=progress)
  except (runner.ServerGone, ValueError) as e:
    _fail(str(e))
  lo, hi = summary["ci95"]
  print(f"{FLAGS.task}: {summary['successes']}/{summary['episodes']} "
        f"({100 * summary['success_rate']:.1f} %, 95 % CI {100 * lo:.1f}-{100 * hi:.1f})")
  print(json.dumps({"summary": os.path.join(FLAGS.out_dir, FLAGS.task, "summary.json")}))


def main(argv=None) -> None:
  """The binary: defines its flags, parses `argv` (default sys.argv) and runs."""
  from absl import app
  os.environ.setdefault("MUJOCO_GL", "egl")   # before dm_control imports mujoco
  _define_flags()
  app.run(_main, argv)


if __name__ == "__main__":
  main()
