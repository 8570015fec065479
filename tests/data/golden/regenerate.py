"""Regenerate the diffusers golden files that tests/test_heads.py checks our schedulers against.

The committed files in this directory are the reference outputs; this script documents how
they were made and lets anyone rebuild or re-check them. It needs PyTorch and the exact
diffusers version recorded in schedulers.json (it refuses to run with another version):

    python3 -m venv /tmp/golden-venv
    /tmp/golden-venv/bin/pip install diffusers==0.42.1 torch numpy
    /tmp/golden-venv/bin/python tests/data/golden/regenerate.py --out /tmp/golden
    /tmp/golden-venv/bin/python tests/data/golden/regenerate.py --out /tmp/golden \
        --compare tests/data/golden

(The files were made with torch 2.13.0+cpu; any recent CPU torch gives the same float32
results for these element-wise operations.)

What is written (float32 unless noted; B, H, Da = 4, 16, 10):

  schedulers.json            the scheduler settings below and the generator versions.
  ddpm_squaredcos_100.npz    DDPMScheduler(100 steps, squaredcos_cap_v2, fixed_small,
                             clip_sample, epsilon): betas (100,), alphas_cumprod (100,),
                             timesteps (100,) int64 after set_timesteps(100); inputs x_T,
                             eps_seq (100, B, H, Da), x0, noise, t_query (4,) int64; and
                             add_noise = scheduler.add_noise(x0, noise, t_query) (sample i
                             noised at t_query[i]).
  ddpm_posterior_means.npz   x_T, eps_seq, and the 100-step chain of noise-free DDPM steps:
                             means[i] = step(eps_seq[i], t_i, x_i) with the variance noise set
                             to zero, x_0 = x_T, x_{i+1} = means[i], t_i = 99 - i; variances
                             (100,) float64 = the fixed_small variance of each t_i.
  ddim_squaredcos_10.npz     DDIMScheduler(100 train steps, squaredcos_cap_v2, clip_sample,
                             set_alpha_to_one, steps_offset 0, epsilon), set_timesteps(10):
                             timesteps (10,) int64 (90, 80, ..., 0), x_T, eps_seq = the first
                             10 of the DDPM eps_seq, trajectory (11, B, H, Da) = x_T then each
                             step's prev_sample with eta = 0, alphas_cumprod (100,).

Inputs come from numpy's PCG64 generator, np.random.default_rng(--seed) with seed 0, drawn
in this order (each cast to float32 after drawing):
  x_T     = standard_normal((4, 16, 10))
  eps_seq = standard_normal((100, 4, 16, 10))      (stand-in model outputs, one per step)
  x0      = clip(0.5 * standard_normal((4, 16, 10)), -1, 1)
  noise   = standard_normal((4, 16, 10))
  t_query = [0, 17, 50, 99]                         (fixed)
This reproduces the committed inputs bit for bit. --inputs_from DIR instead loads the inputs
from the npz files of DIR (e.g. to check that diffusers maps the committed inputs to the
committed outputs).

--compare DIR compares every array written with the one of the same name in DIR: schedule
arrays (betas, alphas_cumprod, timesteps, variances) and inputs must be equal bit for bit,
scheduler outputs (add_noise, means, trajectory) within --atol (default 1e-6); the script
exits 1 on any mismatch. Outputs are not bit-reproducible across machines: torch's
`x ** 0.5` on the few schedule scalars is correctly rounded on some builds and 1 ulp off on
others (the committed files have sqrt(alphas_cumprod[0]) 1 ulp low), which moves outputs by
a few float32 ulps (measured: <= 1.2e-7 add_noise and DDIM, <= 3.6e-7 over the 100-step
DDPM chain); tests/test_heads.py compares with atol 1e-5.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys

import numpy as np

DIFFUSERS_VERSION = "0.42.1"
B, H, DA = 4, 16, 10
T_QUERY = (0, 17, 50, 99)

SETTINGS = {
    "ddpm": {
        "num_train_timesteps": 100,
        "beta_schedule": "squaredcos_cap_v2",
        "variance_type": "fixed_small",
        "clip_sample": True,
        "prediction_type": "epsilon",
        "inference_steps": 100,
    },
    "ddim": {
        "num_train_timesteps": 100,
        "beta_schedule": "squaredcos_cap_v2",
        "set_alpha_to_one": True,
        "steps_offset": 0,
        "eta": 0.0,
        "clip_sample": True,
        "prediction_type": "epsilon",
        "inference_steps": 10,
    },
}

# Arrays that are inputs or schedule tables: compared bit for bit by --compare.
EXACT_KEYS = {"betas", "alphas_cumprod", "timesteps", "variances", "x_T", "eps_seq", "x0",
              "noise", "t_query"}


def make_inputs(seed: int) -> dict[str, np.ndarray]:
  rng = np.random.default_rng(seed)
  x_T = rng.standard_normal((B, H, DA)).astype(np.float32)
  eps_seq = rng.standard_normal((100, B, H, DA)).astype(np.float32)
  x0 = np.clip(0.5 * rng.standard_normal((B, H, DA)), -1.0, 1.0).astype(np.float32)
  noise = rng.standard_normal((B, H, DA)).astype(np.float32)
  return {"x_T": x_T, "eps_seq": eps_seq, "x0": x0, "noise": noise,
          "t_query": np.asarray(T_QUERY, np.int64)}


def load_inputs(directory: str) -> dict[str, np.ndarray]:
  d = np.load(os.path.join(directory, "ddpm_squaredcos_100.npz"))
  return {k: np.asarray(d[k]) for k in ("x_T", "eps_seq", "x0", "noise", "t_query")}


@contextlib.contextmanager
def zero_variance_noise():
  """Make DDPMScheduler.step add 0·sqrt(variance) instead of noise: its output is then the
  posterior mean itself (adding a zero tensor leaves float32 values unchanged)."""
  import torch
  from diffusers.schedulers import scheduling_ddpm

  original = scheduling_ddpm.randn_tensor

  def zeros(shape, generator=None, device=None, dtype=None, **kwargs):
    return torch.zeros(shape, device=device, dtype=dtype)

  scheduling_ddpm.randn_tensor = zeros
  try:
    yield
  finally:
    scheduling_ddpm.randn_tensor = original


def generate(inputs: dict[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
  import torch
  from diffusers import DDIMScheduler, DDPMScheduler

  c = SETTINGS["ddpm"]
  ddpm = DDPMScheduler(num_train_timesteps=c["num_train_timesteps"],
                       beta_schedule=c["beta_schedule"], variance_type=c["variance_type"],
                       clip_sample=c["clip_sample"], prediction_type=c["prediction_type"])
  ddpm.set_timesteps(c["inference_steps"])
  t = lambda a: torch.from_numpy(np.ascontiguousarray(a))  # noqa: E731

  x0, noise, t_query = t(inputs["x0"]), t(inputs["noise"]), t(inputs["t_query"])
  add_noise = ddpm.add_noise(x0, noise, t_query).numpy()

  means, variances = [], []
  x = t(inputs["x_T"])
  with torch.no_grad(), zero_variance_noise():
    for i, ts in enumerate(ddpm.timesteps):
      ts = int(ts)
      variances.append(float(ddpm._get_variance(ts)))
      x = ddpm.step(t(inputs["eps_seq"][i]), ts, x).prev_sample
      means.append(x.numpy().copy())

  ddpm_file = {
      "alphas_cumprod": ddpm.alphas_cumprod.numpy().astype(np.float32),
      "betas": ddpm.betas.numpy().astype(np.float32),
      "timesteps": ddpm.timesteps.numpy().astype(np.int64),
      "x_T": inputs["x_T"],
      "eps_seq": inputs["eps_seq"],
      "x0": inputs["x0"],
      "noise": inputs["noise"],
      "t_query": inputs["t_query"],
      "add_noise": add_noise.astype(np.float32),
  }
  post_file = {
      "x_T": inputs["x_T"],
      "eps_seq": inputs["eps_seq"],
      "means": np.stack(means).astype(np.float32),
      "variances": np.asarray(variances, np.float64),
  }

  c = SETTINGS["ddim"]
  ddim = DDIMScheduler(num_train_timesteps=c["num_train_timesteps"],
                       beta_schedule=c["beta_schedule"], clip_sample=c["clip_sample"],
                       set_alpha_to_one=c["set_alpha_to_one"], steps_offset=c["steps_offset"],
                       prediction_type=c["prediction_type"])
  ddim.set_timesteps(c["inference_steps"])
  n = len(ddim.timesteps)
  eps10 = inputs["eps_seq"][:n]
  x = t(inputs["x_T"])
  traj = [inputs["x_T"]]
  with torch.no_grad():
    for i, ts in enumerate(ddim.timesteps):
      x = ddim.step(t(eps10[i]), int(ts), x, eta=c["eta"]).prev_sample
      traj.append(x.numpy().copy())
  ddim_file = {
      "timesteps": ddim.timesteps.numpy().astype(np.int64),
      "x_T": inputs["x_T"],
      "eps_seq": np.ascontiguousarray(eps10),
      "trajectory": np.stack(traj).astype(np.float32),
      "alphas_cumprod": ddim.alphas_cumprod.numpy().astype(np.float32),
  }
  return {"ddpm_squaredcos_100.npz": ddpm_file, "ddpm_posterior_means.npz": post_file,
          "ddim_squaredcos_10.npz": ddim_file}


def compare(files: dict[str, dict[str, np.ndarray]], ref_dir: str, atol: float) -> bool:
  ok = True
  for name, arrays in files.items():
    ref = np.load(os.path.join(ref_dir, name))
    if set(ref.files) != set(arrays):
      print(f"{name}: keys differ: ours {sorted(arrays)}, reference {sorted(ref.files)}")
      ok = False
    for key, ours in arrays.items():
      if key not in ref.files:
        continue
      theirs = ref[key]
      if ours.shape != theirs.shape or ours.dtype != theirs.dtype:
        print(f"{name}:{key}: shape/dtype {ours.shape} {ours.dtype} vs "
              f"reference {theirs.shape} {theirs.dtype}")
        ok = False
        continue
      if key in EXACT_KEYS:
        equal = np.array_equal(ours, theirs)
        diff = 0.0 if equal else float(np.max(np.abs(ours.astype(np.float64) - theirs)))
        print(f"{name}:{key}: {'identical' if equal else f'DIFFERS (max |diff| {diff:.3g})'}")
        ok &= equal
      else:
        diff = float(np.max(np.abs(ours.astype(np.float64) - theirs)))
        good = diff <= atol
        print(f"{name}:{key}: max |diff| {diff:.3g} {'<=' if good else '>'} {atol:g}")
        ok &= good
  return ok


def main(argv=None) -> int:
  here = os.path.dirname(os.path.abspath(__file__))
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--out", default=here, help="directory to write into (default: this one)")
  p.add_argument("--seed", type=int, default=0, help="numpy seed of the inputs (default 0)")
  p.add_argument("--inputs_from", default="",
                 help="load x_T, eps_seq, x0, noise, t_query from this directory's npz files "
                      "instead of drawing them")
  p.add_argument("--compare", default="",
                 help="compare what was written with the files of this directory")
  p.add_argument("--atol", type=float, default=1e-6,
                 help="tolerance for scheduler outputs in --compare (default 1e-6)")
  args = p.parse_args(argv)

  import diffusers
  import torch
  if diffusers.__version__ != DIFFUSERS_VERSION:
    print(f"need diffusers=={DIFFUSERS_VERSION}, found {diffusers.__version__}", file=sys.stderr)
    return 2

  inputs = load_inputs(args.inputs_from) if args.inputs_from else make_inputs(args.seed)
  files = generate(inputs)
  os.makedirs(args.out, exist_ok=True)
  for name, arrays in files.items():
    np.savez(os.path.join(args.out, name), **arrays)
  meta = {"generator": f"diffusers {diffusers.__version__}, torch {torch.__version__}", **SETTINGS}
  with open(os.path.join(args.out, "schedulers.json"), "w") as f:
    json.dump(meta, f, indent=1)
  print(f"wrote {', '.join(list(files) + ['schedulers.json'])} to {args.out}")

  if args.compare:
    if not compare(files, args.compare, args.atol):
      print("MISMATCH against", args.compare)
      return 1
    print("all arrays match", args.compare)
  return 0


if __name__ == "__main__":
  sys.exit(main())
