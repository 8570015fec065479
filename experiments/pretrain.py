"""Stage 1: pretrain an action expert on forward-kinematics data (see configs/pretrain.py).

  python experiments/pretrain.py --config=configs/pretrain.py:arch=dp_mlp,signal=jp \
      --workdir=workdirs/stage1 [--resume]
"""
from decoupled_jax import cli

cli.prelude()  # before jax / mujoco are imported

from absl import flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from decoupled_jax.pipelines import run  # noqa: E402

config_flags.DEFINE_config_file("config", None, "Stage-1 config file.", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and metrics.")
flags.DEFINE_bool("resume", False, "Continue the run in --workdir from its newest intact checkpoint.")
flags.mark_flags_as_required(["config", "workdir"])
FLAGS = flags.FLAGS


def main(argv):
  del argv
  s = run.run(FLAGS.config, FLAGS.workdir, resume=FLAGS.resume)
  ev = s["eval"]
  line = f"stage 1 done: {s['steps']} steps, {s['steps_per_s']:.2f} steps/s"
  if ev:
    line += (f"; pos error {ev['pos_err_mm']:.1f} mm (mean-pose baseline "
             f"{ev['baseline_pos_err_mm']:.1f}), rot error {ev['rot_err_deg']:.2f} deg "
             f"(baseline {ev['baseline_rot_err_deg']:.2f})")
  print(line + f"; checkpoint: {s['checkpoint_dir']}")


if __name__ == "__main__":
  cli.run(main)
