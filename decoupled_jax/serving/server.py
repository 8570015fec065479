"""A websocket policy server speaking openpi's protocol (see `protocol.py` for the wire format).

    runner, _ = inference.load_policy("workdirs/lift/checkpoints")
    PolicyServer(runner, host="127.0.0.1", port=8000).serve_forever()

    # any openpi client, unchanged:
    from openpi_client import websocket_client_policy
    policy = websocket_client_policy.WebsocketClientPolicy("127.0.0.1", 8000)
    policy.infer({"robot0_eef_pos": pos, ..., "reset": True})["actions"]   # (Ta, 7)

Design:
* The event loop only decodes, validates and keeps per-connection observation history; the
  policy runs on one inference thread fed by a queue, so a slow policy never blocks other
  connections, pings or the health check (`GET /healthz`).
* Every field of a request (observation keys, shapes, dtypes, finiteness of what the model
  will see, "seed", "step", "reset") is validated per connection, before the request can
  join a batch, so one bad request never fails another client's request.
* The inference thread batches: it takes every queued request (up to `max_batch`, by default
  the runner's batch size, so the compiled program is the one used) into one runner call.
  Requests carrying "seed" get per-row keys fold_in(seed, step): their actions do not depend
  on which other requests share the call — bitwise with a runner of batch 1 (what evaluation
  uses), to float rounding (~1e-6) with a larger batch, whose compiled GEMMs differ from
  batch 1's (tests/test_eval_workers.py). Requests without seeds and with seeds are never
  mixed in one call. If a batched call fails anyway (e.g. one row's actions are not finite),
  its requests are run again one by one, so only the culprit gets the error.
* Non-finite actions are never sent (an error frame instead), and a request that got an
  error never enters its connection's observation history.
* The runner is compiled by a warm-up call before the socket is opened; the warm-up does not
  advance the runner's call counter (unseeded requests draw the same noise as in-process).
* A bad request gets an error frame and the connection stays usable; a client that
  disconnects while its request is being computed only loses the reply.

Exposure (docs/security.md): at the handshake the server refuses any request carrying an
`Origin` header not in `allowed_origins` (browsers always send one; other clients do not),
checks the optional shared-secret `token` (`Authorization: Bearer <token>` or openpi-client's
`Api-Key <token>`; clients that cannot set headers send {"token": ...} as their first
message), and refuses connections beyond `max_connections` (HTTP 503). Each connection's
memory is bounded: messages are limited to `max_message_bytes` (by default twice the
largest valid request of this policy, plus 1 MiB) and at most `max_queue` received frames
are buffered before the server stops reading from that socket. The metadata never holds
absolute paths.

Any object with the runner's duck type works: `__call__(obs, seeds=None, steps=None)`,
`check(obs)`, `obs_keys`, `obs_shapes`, `obs_dtypes`, `n_obs`, `n_act`, optional `metadata`
and `batch`.
"""
from __future__ import annotations

import asyncio
import dataclasses
import hmac
import http
import json
import logging
import os
import queue
import threading
import time
from typing import Any, Iterable, Mapping, Optional

import numpy as np
import websockets
import websockets.asyncio.server as ws_server

from decoupled_jax.inference import ObservationError
from decoupled_jax.serving import msgpack_numpy, protocol

log = logging.getLogger(__name__)

DEFAULT_MAX_CONNECTIONS = 32
DEFAULT_MAX_QUEUE = 4          # received frames buffered per connection before reads pause
MESSAGE_HEADROOM_BYTES = 2**20
AUTH_TIMEOUT_S = 10.0


class RequestError(ValueError):
  """A request that is not a valid observation message (bad frame, bad field)."""


def _no_paths(value):
  """Absolute paths in metadata become their last component (a client never learns where
  the server keeps its files)."""
  if isinstance(value, str) and (os.path.isabs(value) or value.startswith("~")):
    return os.path.basename(value.rstrip("/\\")) or "?"
  if isinstance(value, Mapping):
    return {k: _no_paths(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_no_paths(v) for v in value]
  return value


def policy_name(path: str) -> str:
  """A served policy's public name: its export folder's name, or its run folder's name for
  a run's `checkpoints` directory (never the path itself)."""
  parts = os.path.normpath(os.path.abspath(path)).split(os.sep)
  parts = [p for p in parts if p]
  if len(parts) >= 2 and parts[-1] == "checkpoints":
    return parts[-2]
  return parts[-1] if parts else "policy"


def server_metadata(runner, extra: Optional[Mapping[str, Any]] = None) -> dict:
  """The dict sent to every client on connect."""
  md = {
      "protocol": protocol.PROTOCOL, "protocol_version": protocol.PROTOCOL_VERSION,
      "obs_keys": list(runner.obs_keys),
      "obs_shapes": {k: list(runner.obs_shapes[k]) for k in runner.obs_keys},
      "obs_dtypes": {k: str(runner.obs_dtypes[k]) for k in runner.obs_keys},
      "n_obs_steps": int(runner.n_obs), "n_action_steps": int(runner.n_act),
      "action_dim": protocol.ACTION_DIM, "action_layout": protocol.ACTION_LAYOUT,
      **({"action_dim": int(runner.action_dim), "action_layout": protocol.JOINT_ACTION_LAYOUT}
         if getattr(runner, "action_space", "ee_pose") == "joint_pos" else {}),
      "request_fields": list(protocol.RESERVED_FIELDS),
      "history": "per connection: send one frame per key (the server stacks the last "
                 "n_obs_steps; 'reset': true starts an episode) or the whole "
                 "(n_obs_steps, ...) history per key",
  }
  for k, v in dict(getattr(runner, "metadata", None) or {}).items():
    if k == "action_layout":   # a policy's own action space (e.g. LIBERO's delta actions)
      md[k] = v
    md.setdefault(k, v)
  md.update(extra or {})
  return _no_paths(md)


def max_request_bytes(runner) -> int:
  """Payload bytes of the largest valid request: every key's whole history, float keys
  sent as float64 (images must be uint8)."""
  total = 0
  for k in runner.obs_keys:
    itemsize = 1 if str(runner.obs_dtypes[k]) == "uint8" else 8
    total += int(runner.n_obs) * int(np.prod(runner.obs_shapes[k], dtype=np.int64)) * itemsize
  return total


def default_max_message_bytes(runner) -> int:
  return 2 * max_request_bytes(runner) + MESSAGE_HEADROOM_BYTES


def _as_int(value, name: str, lo: int, hi: int) -> int:
  """An integer field in [lo, hi]; anything else (float, bool, array, out of range) is a
  RequestError, so it is refused before the request can join a batch."""
  if isinstance(value, (bool, np.bool_)):
    raise RequestError(f"'{name}' must be an integer, got {value!r}")
  if isinstance(value, np.ndarray) and value.shape == ():
    value = value[()]
  if not isinstance(value, (int, np.integer)):
    raise RequestError(f"'{name}' must be an integer, got {type(value).__name__} {value!r:.40}")
  v = int(value)
  if not lo <= v <= hi:
    raise RequestError(f"'{name}' must be in [{lo}, {hi}], got {v}")
  return v


class _Session:
  """One connection's observation history (key -> (n_obs, *shape) array)."""

  def __init__(self, runner):
    self.runner = runner
    self.history: dict[str, np.ndarray] = {}
    self._pending: Optional[dict] = None

  def prepare(self, msg: Mapping) -> tuple[dict, Optional[int], Optional[int]]:
    """(obs with history, seed, step) for one request, fully validated. The history is
    changed only by `commit()`, once the request has been answered."""
    r = self.runner
    self._pending = None
    reset = msg.get("reset", False)
    if isinstance(reset, np.ndarray) and reset.shape == ():
      reset = reset[()]
    if not isinstance(reset, (bool, int, np.bool_, np.integer)) or int(reset) not in (0, 1):
      raise RequestError(f"'reset' must be a boolean, got {reset!r:.40}")
    seed = (_as_int(msg["seed"], "seed", *protocol.SEED_RANGE)
            if msg.get("seed") is not None else None)
    step = (_as_int(msg["step"], "step", *protocol.STEP_RANGE)
            if msg.get("step") is not None else None)
    if step is not None and seed is None:
      raise RequestError("'step' was sent without 'seed' (the noise key is (seed, step))")
    history = {} if reset else self.history
    missing = [k for k in r.obs_keys if k not in msg]
    if missing:
      raise ObservationError(f"missing observation key(s) {missing}; the policy takes "
                             f"{list(r.obs_keys)}")
    sent, full = {}, {}
    for k in r.obs_keys:
      try:
        x = np.asarray(msg[k])
      except (ValueError, TypeError) as e:
        raise ObservationError(f"observation '{k}' is not an array ({e})") from None
      frame = tuple(r.obs_shapes[k])
      if x.shape == (r.n_obs,) + frame:
        sent[k], full[k] = x, True
      elif x.shape == frame:
        sent[k], full[k] = np.broadcast_to(x[None], (r.n_obs,) + frame), False
      else:
        want = ", ".join(map(str, frame))
        raise ObservationError(
            f"observation '{k}' has shape {tuple(x.shape)}, expected one frame ({want}"
            f"{',' if len(frame) == 1 else ''}) or the history ({r.n_obs}, {want})")
    # dtype, NaN/inf and range (as float32, normalised) of what was sent, before it is
    # mixed with the stored frames
    r.check({k: v[None] for k, v in sent.items()})
    new = {}
    for k, x in sent.items():
      want = str(r.obs_dtypes[k])
      if want != "uint8" and np.issubdtype(np.dtype(want), np.floating):
        x = x.astype(want)   # one dtype per key, so requests stack into a batch
      prev = history.get(k)
      if full[k] or prev is None:   # a whole history, or an episode's first frame repeated
        new[k] = np.array(x)
      else:
        new[k] = np.concatenate([prev[1:], x[-1:]])
    self._pending = new
    return new, seed, step

  def commit(self) -> None:
    """The prepared request was answered: its frames become the history."""
    if self._pending is not None:
      self.history, self._pending = self._pending, None


@dataclasses.dataclass(eq=False)
class _Job:
  obs: dict
  seed: Optional[int]
  step: Optional[int]
  loop: asyncio.AbstractEventLoop
  future: asyncio.Future
  t_submit: float = 0.0


def _resolve(future: asyncio.Future, value, exc) -> None:
  if future.done():   # the connection went away and its handler was cancelled
    return
  if exc is not None:
    future.set_exception(exc)
  else:
    future.set_result(value)


class _InferenceThread:
  """Runs the policy off the event loop, batching whatever is queued."""

  def __init__(self, runner, max_batch: int, batch_wait_s: float = 0.0):
    self.runner, self.max_batch, self.batch_wait_s = runner, max(1, int(max_batch)), batch_wait_s
    # One job per connection at most (a connection's requests are answered in order), so
    # the queue is bounded by the connection cap.
    self._queue: "queue.SimpleQueue[Optional[_Job]]" = queue.SimpleQueue()
    self._thread = threading.Thread(target=self._run, name="policy-inference", daemon=True)

  def start(self):
    self._thread.start()

  def stop(self, timeout: float = 30.0):
    if self._thread.is_alive():
      self._queue.put(None)
      self._thread.join(timeout)

  def submit(self, job: _Job) -> None:
    job.t_submit = time.monotonic()
    self._queue.put(job)

  def _take_batch(self, first: _Job) -> tuple[list[_Job], bool]:
    batch, stop = [first], False
    deadline = time.monotonic() + self.batch_wait_s
    while len(batch) < self.max_batch:
      try:
        wait = deadline - time.monotonic()
        job = self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
      except queue.Empty:
        break
      if job is None:
        stop = True
        break
      batch.append(job)
    return batch, stop

  def _run(self):
    while True:
      job = self._queue.get()
      if job is None:
        return
      batch, stop = self._take_batch(job)
      seeded = [j for j in batch if j.seed is not None]
      unseeded = [j for j in batch if j.seed is None]
      for group in (seeded, unseeded):
        if group:
          self._call(group)
      if stop:
        return

  def _policy(self, jobs: list[_Job]) -> np.ndarray:
    """(len(jobs), Ta, 7) actions; raises for the call as a whole."""
    keys = jobs[0].obs.keys()
    obs = {k: np.stack([j.obs[k] for j in jobs]) for k in keys}
    if jobs[0].seed is not None:
      actions = self.runner(obs, seeds=[j.seed for j in jobs],
                            steps=[j.step or 0 for j in jobs])
    else:
      actions = self.runner(obs)
    actions = np.asarray(actions)
    if actions.ndim != 3 or actions.shape[0] != len(jobs):
      raise RuntimeError(f"the policy returned shape {actions.shape} for {len(jobs)} rows")
    return actions

  def _call(self, jobs: list[_Job]) -> None:
    t0 = time.monotonic()
    try:
      actions = self._policy(jobs)
    except Exception as e:  # noqa: BLE001 -- reported to the clients of this call
      if len(jobs) > 1:   # isolate the request at fault: the others must not fail with it
        log.info("a batched call of %d requests failed (%s: %s); running them one by one",
                 len(jobs), type(e).__name__, e)
        for j in jobs:
          self._call([j])
        return
      if not isinstance(e, ObservationError):
        log.exception("policy call failed")
      actions, exc = None, e
    else:
      exc = None
    t1 = time.monotonic()
    for i, j in enumerate(jobs):
      value, err = None, exc
      if err is None:
        row = np.ascontiguousarray(actions[i])
        if not np.all(np.isfinite(row)):   # a duck-typed runner's NaNs never go out
          err = ObservationError("the policy produced non-finite actions for this "
                                 "observation (far outside the training range?)")
        else:
          value = (row, {"infer_ms": 1000 * (t1 - t0), "batch_size": len(jobs)},
                   {"infer_ms": 1000 * (t1 - j.t_submit),
                    "queue_ms": 1000 * (t0 - j.t_submit)})
      try:
        j.loop.call_soon_threadsafe(_resolve, j.future, value, err)
      except RuntimeError:   # that event loop is closed (server shutting down)
        pass


def _dummy_batch(runner) -> dict:
  return {k: np.zeros((1, runner.n_obs) + tuple(runner.obs_shapes[k]),
                      np.dtype(runner.obs_dtypes[k]))
          for k in runner.obs_keys}


def _is_loopback(host: str) -> bool:
  return host in ("localhost", "::1") or host.startswith("127.")


def bearer_token(headers) -> Optional[str]:
  """The token of an `Authorization: Bearer <t>` (or openpi-client's `Api-Key <t>`)
  header; None without one."""
  value = headers.get("Authorization")
  if value is None:
    return None
  scheme, _, tok = value.strip().partition(" ")
  if scheme.lower() not in ("bearer", "api-key"):
    return ""   # present but unusable: refused like a wrong token
  return tok.strip()


class PolicyServer:
  """See the module docstring. `port=0` picks a free port (read `.port` once started).

  Security knobs (docs/security.md): `token` (shared secret, None: no authentication),
  `allowed_origins` (Origin header values accepted; requests without an Origin are always
  accepted, any other Origin is refused), `max_connections`, `max_message_bytes` (None: from
  the policy's largest valid request), `max_queue` (frames buffered per connection),
  `auth_timeout_s` (how long a connection without the header may take to send its token).
  """

  def __init__(self, runner, *, host: str = "127.0.0.1", port: int = 8000,
               max_batch: Optional[int] = None, batch_wait_ms: float = 0.0,
               metadata: Optional[Mapping[str, Any]] = None,
               max_message_bytes: Optional[int] = None, warmup: bool = True,
               token: Optional[str] = None, allowed_origins: Iterable[str] = (),
               max_connections: int = DEFAULT_MAX_CONNECTIONS,
               max_queue: int = DEFAULT_MAX_QUEUE, auth_timeout_s: float = AUTH_TIMEOUT_S):
    self.runner = runner
    self.host, self.port = host, int(port)
    self.max_batch = int(max_batch or getattr(runner, "batch", 1) or 1)
    if token is not None and not str(token).strip():
      raise ValueError("the server token is empty")
    self._token = None if token is None else str(token).strip().encode("utf-8")
    self.allowed_origins = frozenset(o.strip() for o in allowed_origins if o.strip())
    self.max_connections = max(1, int(max_connections))
    self.max_message_bytes = int(max_message_bytes or default_max_message_bytes(runner))
    self.max_queue = max(1, int(max_queue))
    self.auth_timeout_s = float(auth_timeout_s)
    self.warmup = warmup
    self.metadata = server_metadata(runner, dict(metadata or {}, max_batch=self.max_batch,
                                                 max_message_bytes=self.max_message_bytes))
    self._worker = _InferenceThread(runner, self.max_batch, batch_wait_ms / 1000.0)
    self._packed_metadata = msgpack_numpy.packb(self.metadata)
    self._loop: Optional[asyncio.AbstractEventLoop] = None
    self._stop: Optional[asyncio.Future] = None
    self._thread: Optional[threading.Thread] = None
    self._started = threading.Event()
    self._start_error: Optional[BaseException] = None
    self.num_connections = 0     # serving (authenticated) connections
    self.num_authenticating = 0  # connections still to send their token (first message)

  @property
  def address(self) -> str:
    return f"ws://{self.host}:{self.port}"

  @property
  def requires_token(self) -> bool:
    return self._token is not None

  @property
  def max_inflight_bytes_per_connection(self) -> int:
    """What one connection can make the server hold in received data: the frames buffered
    before reads pause, the message being assembled and the one being answered."""
    return (self.max_queue + 2) * self.max_message_bytes

  # ------------------------------------------------------------------ lifecycle
  def warm_up(self) -> float:
    """Compiles the policy (one call on zeros); returns the seconds it took."""
    t0 = time.monotonic()
    calls = getattr(self.runner, "calls", None)
    self.runner(_dummy_batch(self.runner), seeds=[0], steps=[0])
    if calls is not None:
      self.runner.calls = calls
    return time.monotonic() - t0

  async def serve(self) -> None:
    """Warm up, open the socket, serve until `stop()`."""
    if self.warmup:
      log.info("compiling the policy (warm-up call)...")
      log.info("warm-up took %.1f s", self.warm_up())
    self._loop = asyncio.get_running_loop()
    self._stop = self._loop.create_future()
    self._worker.start()
    try:
      async with ws_server.serve(self._handler, self.host, self.port, compression=None,
                                 max_size=self.max_message_bytes, max_queue=self.max_queue,
                                 process_request=self._process_request) as server:
        self.port = server.sockets[0].getsockname()[1]
        log.info("serving %s (%s) on %s%s", self.metadata.get("task", "policy"),
                 self.metadata.get("backbone", ""), self.address,
                 " (token required)" if self.requires_token else "")
        if not self.requires_token and not _is_loopback(self.host):
          log.warning("listening on %s without a token: anyone who can reach this port can "
                      "drive the policy (docs/security.md)", self.host)
        self._started.set()
        await self._stop
    finally:
      self._worker.stop()

  def serve_forever(self) -> None:
    """Blocking; SIGINT / SIGTERM stop the server cleanly."""
    import signal

    async def main():
      loop = asyncio.get_running_loop()
      for sig in (signal.SIGINT, signal.SIGTERM):
        try:
          loop.add_signal_handler(sig, self.stop)
        except (NotImplementedError, RuntimeError, ValueError):
          pass
      await self.serve()

    asyncio.run(main())

  def start(self, timeout: float = 600.0) -> "PolicyServer":
    """Serves from a background thread; returns once connections are accepted."""
    def target():
      try:
        asyncio.run(self.serve())
      except BaseException as e:  # noqa: BLE001 -- surfaced by start()
        self._start_error = e
        self._started.set()

    self._thread = threading.Thread(target=target, name="policy-server", daemon=True)
    self._thread.start()
    if not self._started.wait(timeout):
      raise TimeoutError(f"policy server did not start within {timeout} s")
    if self._start_error is not None:
      raise self._start_error
    return self

  def stop(self, timeout: float = 30.0) -> None:
    loop, stop = self._loop, self._stop
    if loop is not None and stop is not None and not loop.is_closed():
      try:
        loop.call_soon_threadsafe(lambda: stop.done() or stop.set_result(None))
      except RuntimeError:
        pass
    if self._thread is not None and self._thread is not threading.current_thread():
      self._thread.join(timeout)

  def __enter__(self):
    return self.start() if self._thread is None else self

  def __exit__(self, *exc):
    self.stop()

  # ------------------------------------------------------------------ handshake
  def _token_ok(self, token: Optional[str]) -> bool:
    if self._token is None:
      return True
    if not isinstance(token, str):
      return False
    return hmac.compare_digest(token.strip().encode("utf-8"), self._token)

  def _refuse(self, connection, status: http.HTTPStatus, reason: str):
    log.info("refused %s: HTTP %d: %s", connection.remote_address, status.value, reason)
    response = connection.respond(status, reason + "\n")
    if status == http.HTTPStatus.UNAUTHORIZED:
      response.headers["WWW-Authenticate"] = 'Bearer realm="policy server"'
    return response

  def _process_request(self, connection, request):
    """Runs before the websocket handshake: health check, Origin, token, connection cap."""
    if request.path == "/healthz":
      return connection.respond(http.HTTPStatus.OK, "OK\n")
    origins = request.headers.get_all("Origin")
    bad = [o for o in origins if o not in self.allowed_origins]
    if bad or len(origins) > 1:
      allowed = (f"allowed: {sorted(self.allowed_origins)}" if self.allowed_origins else
                 "browser pages are refused; start the server with --allow_origin=<origin> "
                 "to permit one")
      return self._refuse(connection, http.HTTPStatus.FORBIDDEN,
                          f"Origin {', '.join(origins)!s:.200} is not allowed ({allowed})")
    token = bearer_token(request.headers)
    if self.requires_token:
      if token is not None and not self._token_ok(token):
        return self._refuse(connection, http.HTTPStatus.UNAUTHORIZED,
                            "invalid token (the Authorization header's token is wrong)")
      if token is None and self.num_authenticating >= self.max_connections:
        return self._refuse(connection, http.HTTPStatus.SERVICE_UNAVAILABLE,
                            "too many connections waiting to authenticate; try again later")
    if self.num_connections >= self.max_connections:
      return self._refuse(connection, http.HTTPStatus.SERVICE_UNAVAILABLE,
                          f"server busy: {self.num_connections} connections open, the "
                          f"limit is {self.max_connections}; try again later")
    return None

  async def _authenticate(self, ws) -> bool:
    """For a connection without the Authorization header: its first message must be
    {"token": "<token>"} (msgpack map, or JSON text). Closes the connection otherwise."""
    try:
      first = await asyncio.wait_for(ws.recv(), self.auth_timeout_s)
    except asyncio.TimeoutError:
      await ws.close(1008, f"token required: send 'Authorization: Bearer <token>' or "
                           f"{{\"token\": ...}} within {self.auth_timeout_s:g} s")
      return False
    try:
      msg = json.loads(first) if isinstance(first, str) else msgpack_numpy.unpackb(first)
    except (ValueError, msgpack_numpy.CodecError):
      msg = None
    if not isinstance(msg, dict) or not isinstance(msg.get("token"), str):
      await ws.close(1008, "token required: send 'Authorization: Bearer <token>' at the "
                           "handshake or {\"token\": ...} as the first message")
      return False
    if not self._token_ok(msg["token"]):
      await ws.close(1008, "invalid token")
      return False
    return True

  # ------------------------------------------------------------------ connections
  async def _handler(self, ws) -> None:
    peer = ws.remote_address
    if self.requires_token and bearer_token(ws.request.headers) is None:
      self.num_authenticating += 1
      try:
        ok = await self._authenticate(ws)
      except websockets.ConnectionClosed:
        ok = False
      finally:
        self.num_authenticating -= 1
      if not ok:
        log.info("connection from %s closed: no valid token", peer)
        return
    self.num_connections += 1
    try:
      if self.num_connections > self.max_connections:   # raced past the handshake check
        await ws.close(1013, f"server busy: the limit is {self.max_connections} connections")
        return
      log.info("connection from %s opened", peer)
      await self._serve_connection(ws, peer)
    except websockets.ConnectionClosed:
      pass
    finally:
      self.num_connections -= 1
      log.info("connection from %s closed", peer)

  async def _serve_connection(self, ws, peer) -> None:
    session = _Session(self.runner)
    prev_total_ms = None
    await ws.send(self._packed_metadata)
    async for message in ws:
      t0 = time.monotonic()
      try:
        reply = await self._answer(session, message)
      except (ObservationError, RequestError, msgpack_numpy.CodecError) as e:
        kind = "ObservationError" if isinstance(e, ObservationError) else "RequestError"
        log.info("%s: %s: %s", peer, kind, e)
        await ws.send(protocol.error_frame(str(e), kind))
        continue
      except Exception as e:  # noqa: BLE001 -- a bug: report it, keep serving
        log.exception("request from %s failed", peer)
        await ws.send(protocol.error_frame(f"{type(e).__name__}: {e}", "InternalError"))
        continue
      if prev_total_ms is not None:
        reply["server_timing"]["prev_total_ms"] = prev_total_ms
      await ws.send(msgpack_numpy.packb(reply))
      prev_total_ms = 1000 * (time.monotonic() - t0)

  async def _answer(self, session: _Session, message) -> dict:
    if isinstance(message, str):
      raise RequestError("expected a binary msgpack frame, got a text frame")
    msg = msgpack_numpy.unpackb(message)
    if not isinstance(msg, dict):
      raise RequestError(f"a request must be a map of observations, got "
                         f"{type(msg).__name__}")
    obs, seed, step = session.prepare(msg)
    loop = asyncio.get_running_loop()
    job = _Job(obs, seed, step, loop, loop.create_future())
    self._worker.submit(job)
    actions, policy_timing, server_timing = await job.future
    session.commit()
    return {"actions": actions, "policy_timing": policy_timing,
            "server_timing": server_timing}
