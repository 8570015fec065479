"""Ship a finished stage-1 run as a pretrained expert inside the package
(decoupled_jax/pretrained/<name>/; selected by `--config.stage1_checkpoint=pretrained:<name>`).

  python experiments/ship_expert.py --run=workdirs/tables/gap/stage1_32k/stage1 \
      --name=panda_fk_dp_mlp_n128_32k [--code_version=<commit the run trained with>]

Reads the run's checkpoints/ (newest intact step) and summary.json; writes params.safetensors,
meta.json, card.json and README.md (the model card).
"""
import json
import os

from decoupled_jax import cli

cli.prelude()  # before jax / mujoco are imported

from absl import flags  # noqa: E402

from decoupled_jax import pretrained  # noqa: E402
from decoupled_jax.errors import UserError  # noqa: E402
from decoupled_jax.pipelines import experts, records  # noqa: E402

flags.DEFINE_string("run", None, "A finished stage-1 run directory (checkpoints/, summary.json).",
                    required=True)
flags.DEFINE_string("name", None, "The expert's name (letters, digits, '_').", required=True)
flags.DEFINE_string("code_version", "", "Commit the run trained with ('' = this checkout's).")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  if not FLAGS.name.replace("_", "").isalnum():
    raise UserError(f"--name={FLAGS.name!r}: letters, digits and '_' only")
  summary_path = os.path.join(FLAGS.run, "summary.json")
  if not os.path.exists(summary_path):
    raise UserError(f"--run={FLAGS.run}: no summary.json (is the stage-1 run finished?)")
  with open(summary_path) as f:
    summary = json.load(f)
  out = experts.save_expert(os.path.join(FLAGS.run, "checkpoints"), FLAGS.name,
                            summary=summary,
                            code_version=FLAGS.code_version or records.code_version())
  total = sum(os.path.getsize(os.path.join(r, n)) for r, _, ns in os.walk(pretrained.HERE)
              for n in ns if not n.endswith((".py", ".pyc")))
  print(f"{out} ({total / 2 ** 20:.1f} MiB shipped in all, limit "
        f"{pretrained.MAX_BYTES / 2 ** 20:.0f} MiB)")
  if total > pretrained.MAX_BYTES:
    raise UserError(f"the shipped experts take {total / 2 ** 20:.1f} MiB, over the "
                    f"{pretrained.MAX_BYTES / 2 ** 20:.0f} MiB budget; remove one")


if __name__ == "__main__":
  cli.run(main)
