"""The `serve` and `export` binaries (experiments/serve.py, experiments/export.py, and the
`decoupled-jax-serve` / `decoupled-jax-export` console scripts). Flags are defined when a
binary starts, so the two share no flags."""
from __future__ import annotations

import errno
import logging

from decoupled_jax import cli
from decoupled_jax.errors import UserError


def _define_serve_flags():
  from absl import flags
  flags.DEFINE_string("checkpoint", None, "Checkpoints directory of an experiments/train.py run.")
  flags.DEFINE_string("export", None, "Folder written by experiments/export.py.")
  flags.DEFINE_integer("step", None, "Checkpoint step (default: the newest intact one).")
  flags.DEFINE_string("host", "127.0.0.1", "Interface to listen on (0.0.0.0: every interface).")
  flags.DEFINE_integer("port", 8000, "TCP port (0: any free port).")
  flags.DEFINE_integer("batch_size", 1, "Rows per compiled policy call: concurrent requests "
                       "are batched up to this many.")
  flags.DEFINE_float("batch_wait_ms", 0.0, "How long the inference thread waits for more "
                     "requests to fill a batch (0: take what is queued).")
  flags.DEFINE_integer("seed", 0, "Sampling seed (requests carrying 'seed' fold it in).")
  flags.DEFINE_string("sampler", "", "Override the diffusion sampler: ddpm | ddim.")
  flags.DEFINE_integer("inference_steps", 0, "Override the number of sampling steps.")
  flags.mark_flags_as_mutual_exclusive(["checkpoint", "export"], required=True)


def _serve(argv):
  del argv
  from absl import flags
  from decoupled_jax import inference
  from decoupled_jax.export import load_exported
  from decoupled_jax.serving.server import PolicyServer
  f = flags.FLAGS
  logging.getLogger("websockets.server").setLevel(logging.WARNING)
  overrides = {}
  if f.sampler:
    overrides["sampler"] = f.sampler
  if f.inference_steps:
    overrides.update(num_inference_steps=f.inference_steps, flow_num_steps=f.inference_steps)
  if f.checkpoint:
    runner, _ = inference.load_policy(f.checkpoint, step=f.step, batch_size=f.batch_size,
                                      seed=f.seed, head_overrides=overrides)
    source = {"checkpoint": f.checkpoint}
  else:
    runner = load_exported(f.export, batch_size=f.batch_size, seed=f.seed,
                           head_overrides=overrides)
    source = {"export": f.export}
  server = PolicyServer(runner, host=f.host, port=f.port, max_batch=f.batch_size,
                        batch_wait_ms=f.batch_wait_ms, metadata={"source": source})
  try:
    server.serve_forever()
  except OSError as e:
    if e.errno in (errno.EADDRINUSE, errno.EACCES, errno.EADDRNOTAVAIL):
      raise UserError(f"cannot listen on {f.host}:{f.port}: {e.strerror}") from e
    raise


def serve_main():
  cli.prelude()
  _define_serve_flags()
  cli.run(_serve)


def _define_export_flags():
  from absl import flags
  flags.DEFINE_string("checkpoint", None, "Checkpoints directory of an experiments/train.py run.")
  flags.DEFINE_string("output", None, "New (or empty) folder to write the export to.")
  flags.DEFINE_integer("step", None, "Checkpoint step (default: the newest intact one).")
  flags.mark_flags_as_required(["checkpoint", "output"])


def _export(argv):
  del argv
  from absl import flags
  from decoupled_jax.export import export_policy
  f = flags.FLAGS
  out = export_policy(f.checkpoint, f.output, step=f.step)
  print(f"exported {f.checkpoint} to {out}")


def export_main():
  cli.prelude()
  _define_export_flags()
  cli.run(_export)
