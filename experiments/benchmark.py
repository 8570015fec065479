"""Training and sampling speed of every backbone, normal vs decoupled, on this machine.

  python experiments/benchmark.py [--backbones=dp_mlp,dp_c] [--steps=10] [--output=bench.json]
      [--torch_reference=PYTHON] [--profile] [--compile_cache] [--checkpoint_stall]

Prints a table and writes JSON (what each row holds: decoupled_jax/perf/train_step.py; what
the figures mean: docs/performance.md; raw output of past runs: docs/results/benchmarks/).
Batch: 64 (the paper's), DP-C 16 by default on CPU (--dpc_batch).
"""
import os

from decoupled_jax import cli

cli.prelude()  # before jax / mujoco are imported

import dataclasses  # noqa: E402
import json  # noqa: E402

from absl import flags  # noqa: E402

from decoupled_jax.perf import train_step  # noqa: E402

flags.DEFINE_list("backbones", ["dp_mlp", "dp_c", "dp_t", "dp_t_film", "unified"],
                  "Backbones to time (unified uses --conditioning).")
flags.DEFINE_string("conditioning", "adaln_zero", "Conditioning of the unified transformer.")
flags.DEFINE_list("modes", ["normal", "decoupled"], "Training modes to time.")
flags.DEFINE_integer("batch", 64, "Batch size (the paper's stage-2 batch).")
flags.DEFINE_integer("dpc_batch", 16, "Batch size for DP-C (the 244 M U-Net) on CPU.")
flags.DEFINE_integer("steps", 10, "Timed train steps per configuration (after warm-up).")
flags.DEFINE_integer("sample_reps", 5, "Timed sampling calls per configuration.")
flags.DEFINE_bool("sampling", True, "Also time single-observation sampling.")
flags.DEFINE_bool("loader", True, "Also time the window loader.")
flags.DEFINE_string("output", "benchmark.json", "Where to write the JSON results.")
flags.DEFINE_bool("profile", False, "Also trace each train step and report per-op times.")
flags.DEFINE_bool("compile_cache", False, "Also time DP-C compilation, cold vs from the "
                  "persistent compilation cache (two subprocesses).")
flags.DEFINE_bool("checkpoint_stall", False, "Also time how long saving the DP-C TrainState "
                  "blocks the training loop, synchronous vs asynchronous.")
flags.DEFINE_string("compile_probe", "", "(internal) compile the DP-C train step with this "
                    "cache directory, print its timings as JSON and exit.")
# Off here (on for the training binaries, decoupled_jax/cli.py): the table's compile times are
# cold compiles; --compile_cache measures what the cache saves.
flags.DEFINE_bool("compilation_cache", False, "Use JAX's persistent compilation cache.")
flags.DEFINE_string("compilation_cache_dir", os.path.expanduser("~/.cache/decoupled_jax/xla"),
                    "Persistent compilation cache directory.")
flags.DEFINE_string("torch_reference", "", "Python interpreter with torch + einops: also time "
                    "the paper's PyTorch heads in this job and report speed ratios.")
flags.DEFINE_string("torch_reference_tool", os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "tools",
    "torch_reference_bench.py"), "The reference timing tool (the project's shared tooling).")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  if FLAGS.compile_probe:
    print(json.dumps(train_step.compile_probe(FLAGS.compile_probe, FLAGS.dpc_batch)))
    return
  opts = train_step.Options(**{f.name: FLAGS[f.name].value
                               for f in dataclasses.fields(train_step.Options)})
  train_step.run(opts, FLAGS.output)


if __name__ == "__main__":
  cli.run(main)
