"""Benchmark Panda FK: MJX vs plain-JAX tree FK vs a C `mj_kinematics` loop; stage-1 generator.

  python experiments/benchmark_fk.py --out=/tmp/benchmark_fk.json

Prints a table and writes JSON: compile time and poses/s per batch size for each FK, generator
windows/s per batch size and the first-batch latency of a fresh sampler (build + compile + run);
decoupled_jax/perf/fk.py.
"""
from decoupled_jax import cli

cli.prelude()  # before jax / mujoco are imported

from absl import flags  # noqa: E402

from decoupled_jax.perf import fk  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_list("batch_sizes", ["256", "4096", "16384"], "FK batch sizes.")
flags.DEFINE_list("gen_batch_sizes", ["256", "1024"], "Generator batch sizes (windows).")
flags.DEFINE_integer("horizon", 16, "Generator window length.")
flags.DEFINE_float("min_seconds", 1.0, "Minimum timed duration per measurement.")
flags.DEFINE_bool("mjx_generator", True, "Also time the generator with the 'mjx' FK backend.")
flags.DEFINE_string("out", "benchmark_fk.json", "Where to write the JSON results.")


def main(argv):
  del argv
  fk.run([int(b) for b in FLAGS.batch_sizes], [int(b) for b in FLAGS.gen_batch_sizes],
         FLAGS.horizon, FLAGS.min_seconds, FLAGS.mjx_generator, FLAGS.out)


if __name__ == "__main__":
  cli.run(main)
