"""Stage 1: pretrain an action expert on forward-kinematics data (see configs/pretrain.py).

  python experiments/pretrain.py --config=configs/pretrain.py:arch=dp_mlp,signal=jp \
      --workdir=workdirs/stage1 [--resume]
"""

from decoupled_jax.runtime import configure_environment  # noqa: E402

configure_environment()  # before jax/mujoco are imported

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from decoupled_jax.pipelines import common, pretrain  # noqa: E402
from decoupled_jax.training import sharding  # noqa: E402

config_flags.DEFINE_config_file("config", None, "Stage-1 config file.", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and metrics.")
flags.DEFINE_bool("resume", False, "Continue the run in --workdir from its latest checkpoint.")
flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() (multi-host).")
flags.mark_flags_as_required(["config", "workdir"])
FLAGS = flags.FLAGS


def main(argv):
  del argv
  common.setup_logging()
  sharding.maybe_initialize_distributed(FLAGS.distributed)
  summary = pretrain.train_and_evaluate(FLAGS.config, FLAGS.workdir, resume=FLAGS.resume)
  ev = summary["eval"]
  print(f"stage 1 done: {summary['steps']} steps, {summary['steps_per_s']:.2f} steps/s; "
        f"pos error {ev['pos_err_mm']:.1f} mm (mean-pose baseline {ev['baseline_pos_err_mm']:.1f}), "
        f"rot error {ev['rot_err_deg']:.2f} deg (baseline {ev['baseline_rot_err_deg']:.2f}); "
        f"checkpoint: {summary['checkpoint_dir']}")


if __name__ == "__main__":
  app.run(main)
