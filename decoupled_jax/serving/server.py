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
* The inference thread batches: it takes every queued request (up to `max_batch`, by default
  the runner's batch size, so the compiled program is the one used) into one runner call.
  Requests carrying "seed" get per-row keys fold_in(seed, step): their actions do not depend
  on which other requests share the call. Requests without seeds and with seeds are never
  mixed in one call.
* The runner is compiled by a warm-up call before the socket is opened; the warm-up does not
  advance the runner's call counter (unseeded requests draw the same noise as in-process).
* A bad request gets an error frame and the connection stays usable; a client that
  disconnects while its request is being computed only loses the reply.

Any object with the runner's duck type works: `__call__(obs, seeds=None, steps=None)`,
`check(obs)`, `obs_keys`, `obs_shapes`, `obs_dtypes`, `n_obs`, `n_act`, optional `metadata`
and `batch`.
"""
from __future__ import annotations

import asyncio
import dataclasses
import http
import logging
import queue
import threading
import time
from typing import Any, Mapping, Optional

import numpy as np
import websockets
import websockets.asyncio.server as ws_server

from decoupled_jax.inference import ObservationError
from decoupled_jax.serving import msgpack_numpy, protocol

log = logging.getLogger(__name__)


class RequestError(ValueError):
  """A request that is not a valid observation message (bad frame, bad field)."""


def server_metadata(runner, extra: Optional[Mapping[str, Any]] = None) -> dict:
  """The dict sent to every client on connect."""
  md = {
      "protocol": protocol.PROTOCOL, "protocol_version": protocol.PROTOCOL_VERSION,
      "obs_keys": list(runner.obs_keys),
      "obs_shapes": {k: list(runner.obs_shapes[k]) for k in runner.obs_keys},
      "obs_dtypes": {k: str(runner.obs_dtypes[k]) for k in runner.obs_keys},
      "n_obs_steps": int(runner.n_obs), "n_action_steps": int(runner.n_act),
      "action_dim": protocol.ACTION_DIM, "action_layout": protocol.ACTION_LAYOUT,
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
  return md


def _as_int(value, name: str) -> int:
  v = np.asarray(value)
  if v.shape != () or not (np.issubdtype(v.dtype, np.integer)) or isinstance(value, bool):
    raise RequestError(f"'{name}' must be an integer, got {value!r}")
  return int(v)


class _Session:
  """One connection's observation history (key -> (n_obs, *shape) array)."""

  def __init__(self, runner):
    self.runner = runner
    self.history: dict[str, np.ndarray] = {}

  def prepare(self, msg: Mapping) -> tuple[dict, Optional[int], Optional[int]]:
    """(obs with history, seed, step) for one request; the history is updated only if the
    whole request is valid."""
    r = self.runner
    reset = msg.get("reset", False)
    if not isinstance(reset, (bool, int, np.bool_, np.integer)):
      raise RequestError(f"'reset' must be a boolean, got {reset!r}")
    seed = _as_int(msg["seed"], "seed") if msg.get("seed") is not None else None
    step = _as_int(msg["step"], "step") if msg.get("step") is not None else None
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
    # dtype, NaN/inf of what was sent (before it is mixed with the stored frames)
    r.check({k: v[None] for k, v in sent.items()})
    new = {}
    for k, x in sent.items():
      prev = history.get(k)
      if full[k] or prev is None:   # a whole history, or an episode's first frame repeated
        new[k] = np.array(x)
      else:
        new[k] = np.concatenate([prev[1:], x[-1:]])
    self.history = new
    return new, seed, step


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

  def _call(self, jobs: list[_Job]) -> None:
    t0 = time.monotonic()
    try:
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
      exc = None
    except Exception as e:  # noqa: BLE001 -- reported to the clients of this call
      log.exception("policy call failed")
      actions, exc = None, e
    t1 = time.monotonic()
    for i, j in enumerate(jobs):
      value = None
      if exc is None:
        value = (np.ascontiguousarray(actions[i]),
                 {"infer_ms": 1000 * (t1 - t0), "batch_size": len(jobs)},
                 {"infer_ms": 1000 * (t1 - j.t_submit), "queue_ms": 1000 * (t0 - j.t_submit)})
      try:
        j.loop.call_soon_threadsafe(_resolve, j.future, value, exc)
      except RuntimeError:   # that event loop is closed (server shutting down)
        pass


def _health_check(connection, request):
  if request.path == "/healthz":
    return connection.respond(http.HTTPStatus.OK, "OK\n")
  return None


def _dummy_batch(runner) -> dict:
  return {k: np.zeros((1, runner.n_obs) + tuple(runner.obs_shapes[k]),
                      np.dtype(runner.obs_dtypes[k]))
          for k in runner.obs_keys}


class PolicyServer:
  """See the module docstring. `port=0` picks a free port (read `.port` once started)."""

  def __init__(self, runner, *, host: str = "127.0.0.1", port: int = 8000,
               max_batch: Optional[int] = None, batch_wait_ms: float = 0.0,
               metadata: Optional[Mapping[str, Any]] = None,
               max_message_bytes: Optional[int] = 64 * 2**20, warmup: bool = True):
    self.runner = runner
    self.host, self.port = host, int(port)
    self.max_batch = int(max_batch or getattr(runner, "batch", 1) or 1)
    self.metadata = server_metadata(runner, dict(metadata or {}, max_batch=self.max_batch))
    self.max_message_bytes = max_message_bytes
    self.warmup = warmup
    self._worker = _InferenceThread(runner, self.max_batch, batch_wait_ms / 1000.0)
    self._packed_metadata = msgpack_numpy.packb(self.metadata)
    self._loop: Optional[asyncio.AbstractEventLoop] = None
    self._stop: Optional[asyncio.Future] = None
    self._thread: Optional[threading.Thread] = None
    self._started = threading.Event()
    self._start_error: Optional[BaseException] = None
    self.num_connections = 0

  @property
  def address(self) -> str:
    return f"ws://{self.host}:{self.port}"

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
                                 max_size=self.max_message_bytes,
                                 process_request=_health_check) as server:
        self.port = server.sockets[0].getsockname()[1]
        log.info("serving %s (%s) on %s", self.metadata.get("task", "policy"),
                 self.metadata.get("backbone", ""), self.address)
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

  # ------------------------------------------------------------------ connections
  async def _handler(self, ws) -> None:
    peer = ws.remote_address
    self.num_connections += 1
    log.info("connection from %s opened", peer)
    session = _Session(self.runner)
    prev_total_ms = None
    try:
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
    except websockets.ConnectionClosed:
      pass
    finally:
      self.num_connections -= 1
      log.info("connection from %s closed", peer)

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
    return {"actions": actions, "policy_timing": policy_timing,
            "server_timing": server_timing}
