r"""Round-trip latency of the policy server over localhost, beside in-process latency.

  python experiments/benchmark_serve.py [--heads=ddim,flow] [--requests=200] \
      [--clients=1,4] [--batch_sizes=1,4] [--output=benchmark_serve.json]

Paper-size DP-MLP on Lift's low-dim observations with fresh params, DDIM-10 and flow-10; p50/
p95/p99 ms, requests/s and transport overhead per head, batch size and number of clients
(what is measured and how: decoupled_jax/perf/serve.py; the server: decoupled_jax/serving/).
"""
from decoupled_jax.runtime import configure_environment

configure_environment()  # before jax is imported

from absl import app, flags  # noqa: E402

from decoupled_jax.perf import serve  # noqa: E402

flags.DEFINE_list("heads", ["ddim", "flow"], "ddim (DDIM-10) and/or flow (flow-10).")
flags.DEFINE_integer("inference_steps", 10, "Sampling steps of both heads.")
flags.DEFINE_list("clients", ["1", "4"], "Numbers of concurrent clients.")
flags.DEFINE_list("batch_sizes", ["1", "4"], "Runner / server batch sizes.")
flags.DEFINE_integer("requests", 200, "Timed requests per client and configuration.")
flags.DEFINE_integer("warmup_requests", 10, "Untimed requests per client first.")
flags.DEFINE_string("output", "benchmark_serve.json", "Where to write the JSON results.")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  serve.run(FLAGS.heads, [int(b) for b in FLAGS.batch_sizes], [int(c) for c in FLAGS.clients],
            FLAGS.inference_steps, FLAGS.requests, FLAGS.warmup_requests, FLAGS.output)


if __name__ == "__main__":
  app.run(main)
