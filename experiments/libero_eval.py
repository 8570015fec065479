r"""Evaluate a served policy on LIBERO with the paper's protocol (runs in the LIBERO venv).

  make libero-env
  python experiments/serve.py --checkpoint=workdirs/libero/.../checkpoints --port=8000 &
  .venv-libero/bin/python experiments/libero_eval.py --address=127.0.0.1:8000 \
      --suite=libero_spatial --tasks=all --episodes=50 --out_dir=workdirs/libero_eval

The binary is `decoupled_jax/libero/eval_main.py` (`python -m decoupled_jax.libero.eval_main`,
what the library launches); this file runs it by path. Resumable: rerun the same command to
finish an interrupted evaluation (per episode). See decoupled_jax/libero/runner.py for the
protocol and docs/libero.md for the setting.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from decoupled_jax.libero.eval_main import main  # noqa: E402

if __name__ == "__main__":
  main()
