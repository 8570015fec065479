"""ALOHA (bimanual, two ViperX 300s arms; gym-aloha's simulated tasks), docs/aloha.md.

gym-aloha pins mujoco < 3.9 and dm-control < 1.1, which the library's environment cannot
share, so it runs in its own virtual environment (`make aloha-env`: gym-aloha 0.1.5,
dm_control, h5py, openpi-client) and this sub-package is its simulator side (numpy, h5py,
dm_control and gym-aloha only, never jax; from the library only `decoupled_jax.util`):

  env.py       building a task (joint or mocap control), gym-aloha's pose samplers, the
               observation layout our policies take (qpos, qvel, env_state, top camera)
  experts.py   ACT's scripted experts: mocap waypoints -> joint trajectory -> joint replay
  demos.py     writing demonstrations in a robomimic-style HDF5 layout
  runner.py    closed-loop evaluation against a served policy (the policy server's protocol)
  demos_main.py, eval_main.py   the binaries (`python -m decoupled_jax.aloha.demos_main` /
               `.eval_main`, run with the ALOHA venv's python)
"""
