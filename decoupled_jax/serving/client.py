"""`RemotePolicy`: a served policy with the in-process runner's call contract.

    with RemotePolicy("ws://127.0.0.1:8000") as policy:
      result = evaluator.evaluate_policy(policy, "Lift", num_episodes=50, ...)

`policy(obs_batch, seeds=None, steps=None) -> (N, n_action_steps, 7)` like
`inference.PolicyRunner`: each row goes out as one request carrying its whole
(n_obs_steps, ...) history (so no per-connection state is relied on, and the server computes
exactly what the runner would), with "seed"/"step" when given, which makes the actions
bit-identical to in-process inference. Rows are pipelined: all requests are sent before the
replies are read; with `connections=k` the rows are spread over k sockets so that a batching
server can serve them in one call. Errors: `inference.ObservationError` for an observation
the server rejects (the server's message, naming the key), `RemotePolicyError` otherwise
(including a refused connection: wrong token, Origin, server busy).

`token=` sends `Authorization: Bearer <token>` at the handshake (servers started with a
token; docs/security.md). Use a wss:// address for a server behind a TLS reverse proxy.
"""
from __future__ import annotations

import time
from typing import Mapping, Optional

import numpy as np
import websockets
import websockets.sync.client as ws_client

from decoupled_jax.inference import ObservationError, PolicyRunner
from decoupled_jax.serving import msgpack_numpy, protocol
from decoupled_jax.serving.protocol import RemotePolicyError


def _uri(address: str) -> str:
  return address if address.startswith(("ws://", "wss://")) else f"ws://{address}"


class RemotePolicy:

  def __init__(self, address: str, *, connections: int = 1, timeout: float = 300.0,
               connect_timeout: float = 30.0, token: Optional[str] = None):
    self.address = _uri(address)
    self.timeout = timeout
    self._conns = []
    headers = {"Authorization": f"Bearer {token}"} if token else None
    try:
      for _ in range(max(1, int(connections))):
        try:
          conn = ws_client.connect(self.address, compression=None, max_size=None,
                                   open_timeout=connect_timeout, additional_headers=headers)
        except websockets.InvalidStatus as e:   # refused at the handshake: say why
          body = (e.response.body or b"").decode("utf-8", "replace").strip()
          raise RemotePolicyError(f"{self.address} refused the connection: HTTP "
                                  f"{e.response.status_code} {body}") from None
        self._conns.append(conn)
        try:
          self.metadata = msgpack_numpy.unpackb(conn.recv(timeout=connect_timeout))
        except websockets.ConnectionClosed as e:
          raise RemotePolicyError(f"{self.address} closed the connection ({e})") from None
    except BaseException:
      self.close()
      raise
    md = self.metadata
    self.obs_keys = tuple(md["obs_keys"])
    self.obs_shapes = {k: tuple(v) for k, v in md["obs_shapes"].items()}
    self.obs_dtypes = dict(md["obs_dtypes"])
    self.n_obs, self.n_act = int(md["n_obs_steps"]), int(md["n_action_steps"])
    self.last_timing: list[dict] = []

  def check(self, obs_batch: Mapping) -> int:
    """The runner's local validation against the served policy's keys, shapes and dtypes
    (raises ObservationError); the server checks every request anyway."""
    return PolicyRunner.check(self, obs_batch)

  def __call__(self, obs_batch: Mapping, seeds=None, steps=None) -> np.ndarray:
    missing = [k for k in self.obs_keys if k not in obs_batch]
    if missing:
      raise ObservationError(f"missing observation key(s) {missing}; the policy takes "
                             f"{list(self.obs_keys)}")
    obs = {k: np.asarray(obs_batch[k]) for k in self.obs_keys}
    n = None
    for k, v in obs.items():   # shapes here (a row must carry its whole history); dtypes,
      want = (self.n_obs,) + self.obs_shapes[k]   # NaN etc. are the server's to check
      if v.ndim != len(want) + 1 or tuple(v.shape[1:]) != want:
        raise ObservationError(f"observation '{k}' has shape {tuple(v.shape)}, expected "
                               f"(N, {', '.join(map(str, want))})")
      if n is not None and v.shape[0] != n:
        raise ObservationError(f"observation '{k}' has {v.shape[0]} rows, others {n}")
      n = v.shape[0]
    if not n:
      raise ObservationError("empty observation batch")
    if seeds is not None:
      seeds = np.asarray(seeds, np.int64).reshape(-1)
      steps = np.zeros_like(seeds) if steps is None else np.asarray(steps, np.int64).reshape(-1)
      if seeds.shape != (n,) or steps.shape != (n,):
        raise ValueError(f"seeds/steps must have {n} entries, got {seeds.shape}/{steps.shape}")
    conns = self._conns
    if not conns:
      raise RemotePolicyError("this RemotePolicy is closed")
    try:
      for i in range(n):
        req = {k: v[i] for k, v in obs.items()}
        if seeds is not None:
          req["seed"], req["step"] = int(seeds[i]), int(steps[i])
        conns[i % len(conns)].send(msgpack_numpy.packb(req))
    except websockets.ConnectionClosed as e:
      self.close()
      raise RemotePolicyError(f"connection to {self.address} lost ({e})") from None
    replies, errors = [], []
    deadline = time.monotonic() + self.timeout
    for i in range(n):   # read every reply even after an error: the streams stay in step
      try:
        msg = conns[i % len(conns)].recv(timeout=max(0.0, deadline - time.monotonic()))
      except (TimeoutError, websockets.ConnectionClosed) as e:
        self.close()   # replies may still be on their way: these sockets are out of step
        raise RemotePolicyError(f"no reply from {self.address} ({type(e).__name__}: {e}); "
                                f"the connection is closed") from None
      if isinstance(msg, str):
        message, kind = protocol.parse_error_frame(msg)
        errors.append((f"row {i}: {message}" if n > 1 else message, kind))
        replies.append(None)
      else:
        replies.append(msgpack_numpy.unpackb(msg))
    if errors:
      message, kind = errors[0]
      if kind == "ObservationError":
        raise ObservationError(message)
      raise RemotePolicyError(f"{kind}: {message}")
    self.last_timing = [{"policy_timing": r.get("policy_timing"),
                         "server_timing": r.get("server_timing")} for r in replies]
    return np.stack([np.asarray(r["actions"]) for r in replies])

  def close(self) -> None:
    for c in self._conns:
      try:
        c.close()
      except Exception:  # noqa: BLE001
        pass
    self._conns = []

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()
