r"""The LIBERO chain (docs/libero.md): demos -> stage 1 -> normal and decoupled -> evaluation.

  make libero-env
  python experiments/libero_chain.py --config=configs/libero.py --workdir=workdirs/libero

Resumable: rerun the same command after an interruption.
"""
from decoupled_jax import cli

cli.prelude()  # before jax / mujoco are imported

from absl import flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "configs/libero.py[:debug|paper|images]",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Where the chain writes everything.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  from decoupled_jax.pipelines import paper   # the one chain driver (benchmark 'libero')
  results = paper.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  print(results["table"])


if __name__ == "__main__":
  cli.run(main)
