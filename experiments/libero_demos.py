"""Scripted-expert LIBERO demonstrations (run with the LIBERO venv's python).

    .venv-libero/bin/python experiments/libero_demos.py --suite=libero_spatial --tasks=all \
        --num_demos=50 --out_dir=/path/to/demos [--seed=0] [--cameras=agentview,robot0_eye_in_hand]

The binary is `decoupled_jax/libero/demos_main.py` (`python -m decoupled_jax.libero.demos_main`,
what the library launches); this file runs it by path. Writes
<out_dir>/<suite>/<task name>_demo.hdf5 (+ .json sidecar) per task in LIBERO's layout
(decoupled_jax/libero/demos.py); tasks already holding >= num_demos demos are skipped, so a
rerun resumes. Prints the expert's success rate per task. Bad flags: one `error:` line, exit 2.
"""
import os
import sys

# the LIBERO venv does not install decoupled_jax
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from decoupled_jax.libero.demos_main import main  # noqa: E402

if __name__ == "__main__":
  main()
