"""Convert demonstration datasets between formats and action conventions.

    python experiments/convert_dataset.py --input=demo.hdf5 --output=demo_abs.hdf5 --to=absolute \
        [--images] [--num_demos=N] [--nocheck] [--assume_actions=delta]
    python experiments/convert_dataset.py --input=X --output=Y --to=hdf5|rlds|lerobot \
        [--assume_actions=absolute] [--lerobot_images=video|png] [--lerobot_version=v3.0|v2.1]

--to=absolute  robomimic / MimicGen / robosuite-collected HDF5 -> robomimic HDF5 the policy
               reads: delta OSC actions relabelled as absolute world-frame grip-site targets by
               replaying the recorded states (originals kept as `actions_delta`), observations
               regenerated from the states when the file has none (--images adds 84x84
               agentview + eye-in-hand), provenance in data.attrs['conversion']. Each converted
               demo is replayed open loop with our absolute controller (--check, default on)
               and the end-effector error and success are printed. Resumable per demo.
--to=delta     the inverse relabelling (absolute -> robosuite delta OSC_POSE), for tests and
               delta-controller code.
--to=hdf5|rlds|lerobot  any of robomimic HDF5, RLDS, LeRobot (v3.0 or v2.1; the input's format
               is detected) -> robomimic HDF5, RLDS (TFDS array_record, readable without
               TensorFlow) or LeRobot v3.0 (parquet + mp4, or PNG frames with
               --lerobot_images=png; --lerobot_version=v2.1 for LeRobot 0.3). Actions and
               observations are kept bit for bit (mp4 images within codec loss), with demo names,
               filter keys and env_args.

--assume_actions=absolute|delta  the action convention of input that does not record one
(files from other tools): the output then records it, so training reads it. Input that records
a convention is never overridden. 'delta' means robosuite's default OSC_POSE delta controller
and suits --to=absolute (relabelling) or --to=hdf5.

Logic lives in `decoupled_jax/sim/replay.py` (convert_file) and `decoupled_jax/data/`
(sources.convert, rlds.py, lerobot.py). Bad input exits with `error: <one line>` on stderr and
status 2 (`decoupled_jax/cli.py`; --verbose shows the traceback).
"""
from __future__ import annotations

import json

from decoupled_jax import cli

cli.prelude()  # before mujoco / jax are imported

from absl import app, flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("input", None, "input dataset (HDF5 file, RLDS or LeRobot directory)")
flags.DEFINE_string("output", None, "output file (absolute, delta, hdf5) or directory")
flags.DEFINE_enum("to", "absolute", ["absolute", "delta", "hdf5", "rlds", "lerobot"],
                  "conversion")
flags.DEFINE_enum("assume_actions", None, ["absolute", "delta"],
                  "action convention of input that does not record one")
flags.DEFINE_bool("images", False, "absolute/delta: regenerate 84x84 camera images from states")
flags.DEFINE_integer("image_size", 84, "camera size with --images")
flags.DEFINE_integer("num_demos", None, "convert only the first N demos (numeric order)")
flags.DEFINE_bool("check", True, "absolute: replay converted actions open loop and report")
flags.DEFINE_string("filter_key", None, "hdf5/rlds/lerobot: only this mask / filter key")
flags.DEFINE_enum("lerobot_images", "video", ["video", "png"], "lerobot: mp4 (lossy) or PNG")
flags.DEFINE_enum("lerobot_version", "v3.0", ["v3.0", "v2.1"], "lerobot: codebase version")
flags.DEFINE_integer("crf", 18, "lerobot video quality (libx264 CRF; lower = better)")
flags.DEFINE_bool("overwrite", False, "replace an existing output")
flags.DEFINE_bool("progress", True, "show a progress bar")


def main(argv):
  del argv
  if not FLAGS.input or not FLAGS.output:
    raise app.UsageError("--input and --output are required")
  if FLAGS.to in ("absolute", "delta"):
    from decoupled_jax.sim.replay import convert_file
    s = convert_file(FLAGS.input, FLAGS.output, to=FLAGS.to, images=FLAGS.images,
                     image_size=FLAGS.image_size, num_demos=FLAGS.num_demos,
                     check=FLAGS.check, progress=FLAGS.progress,
                     overwrite=FLAGS.overwrite, assume_actions=FLAGS.assume_actions)
    print(f"wrote {s['demos']} demos ({s['source_action_convention']} -> {s['to']}) to "
          f"{s['output']}; summary {s['output']}.json", flush=True)
    ol = s.get("open_loop")
    if ol:
      print(f"open-loop replay with the absolute controller: end-effector error mean "
            f"{ol['pos_err_mean_mm']:.2f} mm, max {ol['pos_err_max_mm']:.2f} mm, max "
            f"{ol['rot_err_max_deg']:.2f} deg; success {ol['success']}/{ol['checked']} "
            f"(source {ol['source_success']}/{ol['checked']})", flush=True)
      for name, r in s["per_demo"].items():
        print(f"  {name}: {json.dumps(r)}", flush=True)
  else:
    from decoupled_jax.data.sources import convert
    out = convert(FLAGS.input, FLAGS.output, to=FLAGS.to, assume_actions=FLAGS.assume_actions,
                  filter_key=FLAGS.filter_key, num_demos=FLAGS.num_demos,
                  images=FLAGS.lerobot_images, crf=FLAGS.crf, overwrite=FLAGS.overwrite,
                  progress=FLAGS.progress, lerobot_version=FLAGS.lerobot_version)
    print(f"wrote {FLAGS.to} dataset to {out}", flush=True)


if __name__ == "__main__":
  cli.run(main)
