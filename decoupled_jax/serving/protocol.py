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

"seed" must be an integer in [-2**63, 2**63) and "step" one in [0, 2**32) (the noise key is
fold_in(fold_in(key, seed mod 2**31), step)); anything else is a RequestError for that request
alone. An observation that is not finite once cast to float32 and normalised (e.g. 1e300 sent
as float64) is an ObservationError, and so is a request whose sampled actions are not finite:
non-finite actions are never sent.

Limits and access (docs/security.md):
* A message larger than the server's `max_message_bytes` (in the metadata; by default twice
  the largest valid request of the policy plus 1 MiB) closes that connection (code 1009), as
  websockets does. A connection's received-but-unanswered frames are bounded too: the
  server stops reading from a socket that has `max_queue` frames waiting.
* Handshake refusals (HTTP, before any websocket frame): 403 for a request carrying an
  `Origin` header that is not allowed (browsers; by default every Origin is refused), 401
  for a wrong token in the `Authorization` header, 503 when `max_connections` are open.
* With a token configured, a client proves it either with the header
  `Authorization: Bearer <token>` (openpi-client's `api_key=` sends `Api-Key <token>`, also
  accepted) or, if it cannot set headers, with a first message {"token": "<token>"}
  (msgpack map or JSON text); only then is the metadata sent. A missing or wrong
  first-message token closes the connection with code 1008 and the reason.
GET /healthz answers "OK" (HTTP 200) with no token.

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
JOINT_ACTION_LAYOUT = "absolute joint positions + gripper(s) (config.robot, joint_pos)"
RESERVED_FIELDS = ("reset", "seed", "step")
SEED_RANGE = (-2**63, 2**63 - 1)   # inclusive; what the runner takes as int64
STEP_RANGE = (0, 2**32 - 1)        # inclusive; jax.random.fold_in takes uint32 data


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
