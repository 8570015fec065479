"""(internal) One DP-C train-step compile in a fresh process, for
`train_step.bench_compile_cache` (docs/performance.md, "Compilation and checkpoints"):

  python -m decoupled_jax.perf.compile_probe CACHE_DIR DPC_BATCH

prints {"lower_s", "compile_s"} as JSON on its last stdout line.
"""
import json
import sys


def main(argv=None) -> None:
  from decoupled_jax import cli
  cli.prelude()  # before jax is imported
  from decoupled_jax.perf import train_step
  cache_dir, dpc_batch = (sys.argv if argv is None else argv)[1:3]
  print(json.dumps(train_step.compile_probe(cache_dir, int(dpc_batch))))


if __name__ == "__main__":
  main()
