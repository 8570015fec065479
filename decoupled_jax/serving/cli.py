"""The `serve` and `export` binaries (experiments/serve.py, experiments/export.py, and the
`decoupled-jax-serve` / `decoupled-jax-export` console scripts). Flags are defined when a
binary starts, so the two share no flags."""
from __future__ import annotations

import errno
import logging

from decoupled_jax import cli
from decoupled_jax.errors import UserError

TOKEN_ENV = "DECOUPLED_JAX_SERVE_TOKEN"   # the serve binary's token when --token_file is unset


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
  flags.DEFINE_string("token_file", None, "File whose first line is the shared secret every "
                      "client must present (Authorization: Bearer <token>). Default: the "
                      f"{TOKEN_ENV} environment variable; neither: no token required.")
  flags.DEFINE_multi_string("allow_origin", [], "A browser Origin allowed to connect (repeat "
                            "for several). Default: any request with an Origin is refused.")
  flags.DEFINE_integer("max_connections", 32, "Open connections allowed; more are refused "
                       "(HTTP 503).")
  flags.DEFINE_integer("max_message_bytes", 0, "Largest request accepted (0: twice the "
                       "policy's largest valid request, plus 1 MiB).")
  flags.mark_flags_as_mutual_exclusive(["checkpoint", "export"], required=True)


def _read_token(path):
  """The token from --token_file (first line) or the environment; None when neither."""
  import os
  if path:
    try:
      with open(path) as fh:
        token = fh.readline().strip()
    except OSError as e:
      raise UserError(f"--token_file: cannot read {path}: {e.strerror}") from e
    if not token:
      raise UserError(f"--token_file: {path} is empty")
    return token
  return os.environ.get(TOKEN_ENV, "").strip() or None


def _serve(argv):
  del argv
  from absl import flags
  from decoupled_jax import inference
  from decoupled_jax.export import load_exported
  from decoupled_jax.serving.server import PolicyServer, policy_name
  f = flags.FLAGS
  logging.getLogger("websockets.server").setLevel(logging.WARNING)
  overrides = {"diffusion": {}, "flow": {}}   # typed head sections (heads.merge_head_config)
  if f.sampler:
    overrides["diffusion"]["sampler"] = f.sampler
  if f.inference_steps:
    overrides["diffusion"]["num_inference_steps"] = f.inference_steps
    overrides["flow"]["num_steps"] = f.inference_steps
  token = _read_token(f.token_file)
  if f.checkpoint:
    runner, meta = inference.load_policy(f.checkpoint, step=f.step, batch_size=f.batch_size,
                                         seed=f.seed, head_overrides=overrides)
    about = {"policy": policy_name(f.checkpoint), "source": "checkpoint",
             **({"stage": meta["stage"]} if meta.get("stage") else {})}
  else:
    runner = load_exported(f.export, batch_size=f.batch_size, seed=f.seed,
                           head_overrides=overrides)
    about = {"policy": policy_name(f.export), "source": "export"}
  server = PolicyServer(runner, host=f.host, port=f.port, max_batch=f.batch_size,
                        batch_wait_ms=f.batch_wait_ms, metadata=about, token=token,
                        allowed_origins=f.allow_origin, max_connections=f.max_connections,
                        max_message_bytes=f.max_message_bytes or None)
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
