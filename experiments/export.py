"""Export a stage-2 checkpoint as one self-contained folder (decoupled_jax/export.py).

  python experiments/export.py --checkpoint=workdirs/lift_decoupled/checkpoints \
      --output=exports/lift [--step=N]

Writes params.safetensors, config.json, norm_stats.json and model_card.md atomically (a
temporary sibling folder renamed into place); refuses a non-empty --output. Load it with
`decoupled_jax.export.load_exported(folder)` or serve it with experiments/serve.py --export.
"""
from decoupled_jax import cli

cli.prelude()  # before jax / mujoco are imported

from decoupled_jax.serving import cli as serving_cli  # noqa: E402

if __name__ == "__main__":
  serving_cli.export_main()
