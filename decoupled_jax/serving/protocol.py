"""The wire protocol of `PolicyServer` (openpi's websocket policy protocol, plus history).

Transport: one websocket per client, binary frames of msgpack with numpy arrays
(`msgpack_numpy`, byte-compatible with openpi-client).

1. On connect the server sends one frame: the metadata dict (`server_metadata`): the
   observation keys with their per-frame shapes and dtypes, n_obs_steps, n_action_steps,
   the action layout, the task, and this protocol's version.
2. Each request is ONE observation (no batch dimension, as in openpi): a dict with every
   key of `obs_keys`, each either
     * one frame, shape `obs_shapes[key]`: the server keeps the last n_obs_steps frames of
       that key for this connection (at the first frame of an episode the frame is repeated,
       as the evaluator does at reset), or
     * the whole history, shape (n_obs_steps, *obs_shapes[key]), oldest first: used as is
       (and it becomes the connection's history for that key).
   Optional fields:
     "reset": true   forget this connection's history before using this observation (send
                     it with the first observation of every new episode; a new connection
                     starts empty)
     "seed": int, "step": int   the episode seed and env step; forwarded to
                     `runner(obs, seeds=[seed], steps=[step])`, so the sampling noise, hence
                     the actions, are bit-identical to in-process evaluation of that episode.
                     Without "seed" the server draws fresh noise per call.
   Other keys are ignored (openpi clients often send extras such as "prompt").
3. The reply is one binary frame:
     {"actions": float64 (n_action_steps, 7) env actions [pos(3), axis-angle(3), gripper],
      "policy_timing": {"infer_ms": runner call, "batch_size": rows in that call},
      "server_timing": {"infer_ms": request dispatched -> actions ready (queue included),
                        "queue_ms": wait for the inference thread,
                        "prev_total_ms": the previous request's full server time}}
4. A request that cannot be served gets one TEXT frame: JSON {"error": "<message naming the
   key, shape, dtype or NaN at fault>", "type": "<ObservationError|RequestError|
   InternalError>"}. openpi-client raises RuntimeError("Error in inference server:\n<that
   JSON>") for a text frame, so its users see the message; `RemotePolicy` raises
   `inference.ObservationError` / `RemotePolicyError`. The connection stays open and the
   per-connection history is left as it was before the bad request.

A message larger than the server's limit (64 MiB by default) closes that connection (code
1009), as websockets does. GET /healthz answers "OK" (HTTP 200).

Requests of one connection are answered in order (a client may pipeline several); requests
of different connections are served concurrently and, up to the server's `max_batch`, share
one batched policy call.
"""
from __future__ import annotations

import json

PROTOCOL = "decoupled_jax.policy_server"
PROTOCOL_VERSION = 1
ACTION_DIM = 7
ACTION_LAYOUT = "absolute env actions [pos(3), axis-angle(3), gripper(1)] (robosuite OSC_POSE)"
RESERVED_FIELDS = ("reset", "seed", "step")


class RemotePolicyError(RuntimeError):
  """The server refused or failed a request (the message is the server's)."""


def error_frame(message: str, kind: str) -> str:
  return json.dumps({"error": message, "type": kind})


def parse_error_frame(text: str) -> tuple[str, str]:
  """(message, type) from an error frame; any other text is an internal error."""
  try:
    d = json.loads(text)
    return str(d["error"]), str(d.get("type", "InternalError"))
  except (ValueError, KeyError, TypeError):
    return text, "InternalError"
