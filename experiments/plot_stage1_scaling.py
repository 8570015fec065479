r"""The stage-1 scaling curve of the gap study (docs/results/decoupled_gap.md §2), from raw records.

  python experiments/plot_stage1_scaling.py [--records=docs/results/raw/decoupled_gap] \
      [--task=PickPlaceCan] [--output=docs/results/decoupled_gap_scaling.png]

Prints the table the page quotes (pooled per stage-1 length, decoupled_jax/pipelines/scaling.py)
and writes the plot.
"""
import os
import sys

from absl import app, flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from decoupled_jax.pipelines import scaling  # noqa: E402
from decoupled_jax.pipelines.records import RunRecords  # noqa: E402

flags.DEFINE_string("records", os.path.join(REPO, "docs", "results", "raw", "decoupled_gap"),
                    "Folder with runs.jsonl.")
flags.DEFINE_string("task", "PickPlaceCan", "Task.")
flags.DEFINE_string("output", os.path.join(REPO, "docs", "results", "decoupled_gap_scaling.png"),
                    "Where to write the plot ('' = no plot).")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  points, normal = scaling.scaling_points(RunRecords(FLAGS.records).all(), FLAGS.task)
  if not points:
    raise app.UsageError(f"--records={FLAGS.records}: no decoupled {FLAGS.task} run of the "
                         f"scaling chains (oracle, stage1_<n>k) with stage1_steps")
  print(scaling.markdown(points, normal), end="")
  if FLAGS.output:
    scaling.plot(points, normal, FLAGS.task, FLAGS.output)
    print(f"plot: {FLAGS.output}")


if __name__ == "__main__":
  app.run(main)
