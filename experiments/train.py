"""Stage 2 (decoupled), normal or random-frozen training + evaluation (closed loop, or offline
on held-out episodes for benchmark=dataset).

  python experiments/train.py --config=configs/train.py:mode=decoupled \
      --config.data.dataset=DEMOS.hdf5 --config.stage1_checkpoint=STAGE1/checkpoints \
      --workdir=workdirs/lift_decoupled [--resume]
"""
from decoupled_jax import cli

cli.prelude()  # before jax / mujoco are imported

from absl import flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from decoupled_jax.pipelines import run  # noqa: E402

config_flags.DEFINE_config_file("config", None, "Stage-2 config file.", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs, videos and metrics.")
flags.DEFINE_bool("resume", False, "Continue the run in --workdir from its newest intact checkpoint.")
flags.mark_flags_as_required(["config", "workdir"])
FLAGS = flags.FLAGS


def main(argv):
  del argv
  s = run.run(FLAGS.config, FLAGS.workdir, resume=FLAGS.resume)
  line = (f"{s['mode']} {s['backbone']} on {s['task']}: {s['steps']} steps at "
          f"{s['steps_per_s']:.2f} steps/s, {s['num_trainable']:,}/{s['num_params']:,} params trained")
  e = s["eval"]
  if "success_rate" in e and "ci95" in e:   # closed loop (robosuite)
    line += (f"; success {e['success_rate']:.2f} (95% CI {e['ci95'][0]:.2f}-{e['ci95'][1]:.2f}, "
             f"{e['num_episodes']} episodes)")
  elif "normalized_mse" in e:               # offline, held-out episodes (benchmark 'dataset')
    line += (f"; held-out normalised action MSE {e['normalized_mse']:.4f} (mean-chunk baseline "
             f"{e['baseline_normalized_mse']:.4f}, {e['windows']} windows)")
  print(line)


if __name__ == "__main__":
  cli.run(main)
