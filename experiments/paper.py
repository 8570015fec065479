"""The paper's experiment end to end (the library's main job; resumable):
FK pretraining -> demonstrations -> decoupled vs normal -> closed-loop success table.

  python experiments/paper.py --config=configs/quickstart.py --workdir=workdirs/quickstart
"""
import os

from decoupled_jax import cli

cli.prelude()  # before jax / mujoco are imported

from absl import flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from decoupled_jax.pipelines import paper  # noqa: E402

config_flags.DEFINE_config_file("config", "configs/quickstart.py", "Experiment config file.",
                                lock_config=True)
flags.DEFINE_string("workdir", "workdirs/quickstart", "Output directory (reused: finished "
                    "stages are skipped, interrupted ones resumed).")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  results = paper.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  print(results["table"])
  print(f"results: {os.path.join(FLAGS.workdir, 'results.md')}, results.json, results.png")


if __name__ == "__main__":
  cli.run(main)
