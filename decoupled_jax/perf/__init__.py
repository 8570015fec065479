"""Performance measurement: what the `experiments/benchmark*.py` binaries run
(docs/performance.md for what the numbers mean and the figures measured so far).

The top layer of the library, above `pipelines` (docs/architecture.md, "Layers"): it may
import any other decoupled_jax package; nothing in the library imports it.

  timing      wall-clock timers of jitted calls (mean, best, for a minimum duration)
  xla         FLOPs of a compiled program, this process's GEMM rate and memory bandwidth,
              per-op time of a profiler trace grouped by what each XLA instruction computes
  train_step  experiments/benchmark.py: train steps of every backbone, normal vs decoupled,
              sampling latency, window loader, checkpoint stall, compilation cache, the
              paper's PyTorch heads timed in the same job
  compile_probe  (internal) `python -m` process timing one compile for `train_step`
  serve       experiments/benchmark_serve.py: policy-server round trips vs in-process calls
  fk          experiments/benchmark_fk.py: Panda FK (MJX, plain-JAX tree, C loop) and the
              stage-1 window generator
"""
