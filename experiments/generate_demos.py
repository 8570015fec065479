"""Generate scripted-expert demonstrations in robosuite as robomimic HDF5 files.

    python experiments/generate_demos.py --task=lift,stack --num_demos=200 \
        --output=/path/to/demos --num_workers=2 [--images] [--seed=0]

For each task, episodes with seeds seed, seed+1, ... are rolled out by the scripted expert
(`decoupled_jax/sim/experts.py`) in `num_workers` processes (inline when <= 1). Every attempt
leaves one shard in `<output>/<Task>.hdf5.shards/`: `seed_XXXXXXX.hdf5` for a success (written
atomically) or `seed_XXXXXXX.fail`. Shards are append-only, so rerunning the same command
skips every seed already tried and continues. Once `num_demos` successes exist, the first
`num_demos` (by seed) are merged into `<output>/<Task>.hdf5` atomically (tmp + os.replace),
with masks train/valid, and a summary `<Task>.hdf5.json` is written. The expert success rate
(successes / attempts, over all attempts so far) is printed per task.
"""
from __future__ import annotations

from decoupled_jax import cli

cli.prelude()  # before mujoco is imported

from absl import app, flags  # noqa: E402

from decoupled_jax.sim.demos import generate_task  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("task", "lift", "task or comma-separated list (lift, stack, square, can, or env names)")
flags.DEFINE_integer("num_demos", 100, "successful demos to keep per task")
flags.DEFINE_string("output", None, "output directory (files <Task>.hdf5); alias --workdir")
flags.DEFINE_string("workdir", None, "alias of --output")
flags.DEFINE_integer("num_workers", 1, "parallel env processes (<=1: inline)")
flags.DEFINE_bool("images", False, "record agentview + eye-in-hand 84x84 images")
flags.DEFINE_integer("image_size", 84, "camera size when --images")
flags.DEFINE_integer("seed", 0, "first reset seed; attempts use seed, seed+1, ...")
flags.DEFINE_integer("max_attempts", 0, "give up after this many attempts per task (0: 3 x num_demos + 20)")
flags.DEFINE_float("valid_fraction", 0.1, "fraction of demos in mask/valid")
flags.DEFINE_integer("extra_steps_after_success", 0, "steps recorded after the first success")
flags.DEFINE_bool("progress", True, "show a tqdm progress bar")


def main(argv):
  del argv
  out_dir = FLAGS.output or FLAGS.workdir
  if not out_dir:
    raise app.UsageError("--output (or --workdir) is required")
  for task in [t.strip() for t in FLAGS.task.split(",") if t.strip()]:
    s = generate_task(task, out_dir, num_demos=FLAGS.num_demos, num_workers=FLAGS.num_workers,
                      images=FLAGS.images, image_size=FLAGS.image_size, seed=FLAGS.seed,
                      max_attempts=FLAGS.max_attempts, valid_fraction=FLAGS.valid_fraction,
                      extra_steps_after_success=FLAGS.extra_steps_after_success,
                      progress=FLAGS.progress)
    tr = s["this_run"]
    print(f"{s['task']}: expert success {s['successes']}/{s['attempts']} = "
          f"{100 * s['expert_success_rate']:.1f}%; wrote {s['written']}/{s['requested']} demos "
          f"to {s['output']}; mean length {s.get('demo_length', {}).get('mean')}; this run "
          f"{tr['successes']} demos in {tr['wall_s']:.1f}s"
          + (f" ({tr['demos_per_min']:.1f} demos/min)" if tr["demos_per_min"] else ""),
          flush=True)
    if s["written"] < s["requested"]:
      print(f"WARNING {s['task']}: only {s['written']} of {s['requested']} demos "
            f"(max attempts reached)", flush=True)


if __name__ == "__main__":
  cli.run(main)
