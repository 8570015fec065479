"""Tiny LIBERO-layout demo files (random but well-formed) for tests that need no simulator."""
import json
import os

import numpy as np


def write_suite(root: str, suite: str = "libero_spatial", tasks=(0, 1), demos: int = 3,
                length: int = 30, images: bool = False, seed: int = 0, image_size: int = 32,
                instructions=None) -> str:
  """`instructions`: task id -> instruction (default 'instruction of task <id>')."""
  import h5py
  rng = np.random.default_rng(seed)
  d = os.path.join(root, suite)
  os.makedirs(d, exist_ok=True)
  for t in tasks:
    with h5py.File(os.path.join(d, f"task{t}_demo.hdf5"), "w") as f:
      g = f.create_group("data")
      instr = (instructions or {}).get(t, f"instruction of task {t}")
      g.attrs["problem_info"] = json.dumps({"language_instruction": instr})
      g.attrs["task_id"] = t
      g.attrs["suite"] = suite
      for i in range(demos):
        dg = g.create_group(f"demo_{i}")
        a = rng.uniform(-1, 1, (length, 7))
        a[:, 3:6] *= 0.2
        a[:, 6] = np.sign(a[:, 6])
        dg.create_dataset("actions", data=a)
        o = dg.create_group("obs")
        o.create_dataset("ee_pos", data=rng.normal(0, 0.1, (length, 3)) + [0, 0, 1])
        o.create_dataset("ee_ori", data=rng.normal(0, 0.1, (length, 3)) + [3.1, 0, 0])
        o.create_dataset("gripper_states", data=rng.uniform(-0.04, 0.04, (length, 2)))
        o.create_dataset("joint_states", data=rng.normal(0, 0.3, (length, 7)))
        o.create_dataset("object_poses", data=rng.normal(0, 0.1, (length, 14)))
        if images:
          for k in ("agentview_rgb", "eye_in_hand_rgb"):
            o.create_dataset(k, data=rng.integers(0, 255, (length, image_size, image_size, 3),
                                                   dtype=np.uint8))
        dg.attrs["num_samples"] = length
  return root
