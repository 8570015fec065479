"""The policy server facing hostile or careless clients (docs/security.md): shared-secret
token, Origin allow-list, connection cap, message-size bound, no paths in the metadata,
observations that overflow once cast to float32 / normalised, non-finite actions, and
request fields (seed, step) that used to fail every request of a batch.

Servers listen on 127.0.0.1 only; every wait is bounded (timeouts, bounded loops)."""
import threading
import time

import numpy as np
import pytest

websockets = pytest.importorskip("websockets")
import websockets.sync.client as ws_client  # noqa: E402

from decoupled_jax import inference  # noqa: E402
from decoupled_jax.serving import msgpack_numpy, protocol  # noqa: E402
from decoupled_jax.serving import server as server_lib  # noqa: E402
from decoupled_jax.serving.client import RemotePolicy  # noqa: E402
from decoupled_jax.serving.protocol import RemotePolicyError  # noqa: E402
from decoupled_jax.serving.server import PolicyServer  # noqa: E402

from helpers import frames, openpi_client, stack, train_debug_policy  # noqa: E402

TIMEOUT = 60.0
TOKEN = "s3cret-token"


class EchoRunner:
  """Duck-typed runner: actions echo the last frame of 'x' (and the seed in the gripper)."""
  obs_keys = ("x",)
  obs_shapes = {"x": (3,)}
  obs_dtypes = {"x": "float32"}
  n_obs, n_act, batch = 2, 4, 4

  def __init__(self, metadata=None):
    self.calls = 0
    self.metadata = dict(metadata or {"task": "fake"})

  def check(self, obs):
    return inference.PolicyRunner.check(self, obs)

  def __call__(self, obs, seeds=None, steps=None):
    self.calls += 1
    x = np.asarray(obs["x"], np.float64)
    out = np.zeros((x.shape[0], self.n_act, 7))
    out[..., :3] = x[:, -1][:, None]
    out[..., 6] = -1 if seeds is None else np.asarray(seeds)[:, None]
    return out


def _req(value=1.0, **kw):
  return dict({"x": np.full(3, value, np.float32)}, **kw)


def _uri(srv):
  return f"ws://127.0.0.1:{srv.port}"


def _wait_for(cond, timeout=10.0):
  deadline = time.monotonic() + timeout
  while not cond() and time.monotonic() < deadline:
    time.sleep(0.05)
  return cond()


def _error(reply):
  assert isinstance(reply, str), "expected an error frame"
  return protocol.parse_error_frame(reply)


def _closed_with(conn_or_fn, timeout=TIMEOUT):
  """The close frame a server sent (code, reason) once `recv` fails."""
  with pytest.raises(websockets.ConnectionClosed) as e:
    conn_or_fn.recv(timeout=timeout)
  return e.value.rcvd.code, e.value.rcvd.reason


# ----------------------------------------------------------------------------- token
def test_token_header_first_message_and_refusals(monkeypatch):
  openpi = openpi_client()
  compared = []
  real_compare = server_lib.hmac.compare_digest
  monkeypatch.setattr(server_lib.hmac, "compare_digest",
                      lambda a, b: compared.append(1) or real_compare(a, b))
  with PolicyServer(EchoRunner(), port=0, token=TOKEN, auth_timeout_s=1.0) as srv:
    # openpi-client's own api_key (it sends 'Authorization: Api-Key <key>').
    client = openpi.WebsocketClientPolicy("127.0.0.1", srv.port, api_key=TOKEN)
    assert client.get_server_metadata()["task"] == "fake"
    assert np.all(client.infer(_req(2.0, seed=3))["actions"][:, :3] == 2)
    client._ws.close()
    assert compared, "the token was not compared with hmac.compare_digest"

    with pytest.raises(websockets.InvalidStatus) as e:   # a wrong key: refused at handshake
      openpi.WebsocketClientPolicy("127.0.0.1", srv.port, api_key="wrong")
    assert e.value.response.status_code == 401
    assert b"invalid token" in e.value.response.body

    # No key at all: the server waits auth_timeout_s for a first-message token, then closes
    # with the reason (openpi-client cannot wait for metadata with a timeout: a thread).
    failure = []

    def no_key():
      try:
        openpi.WebsocketClientPolicy("127.0.0.1", srv.port)
      except websockets.ConnectionClosed as exc:
        failure.append(exc)

    th = threading.Thread(target=no_key, daemon=True)
    th.start()
    th.join(TIMEOUT)
    assert not th.is_alive() and len(failure) == 1
    assert failure[0].rcvd.code == 1008 and "token required" in failure[0].rcvd.reason

    # Raw clients: the Bearer header; the first message (msgpack or JSON text).
    with ws_client.connect(_uri(srv), open_timeout=10,
                           additional_headers={"Authorization": f"Bearer {TOKEN}"}) as c:
      assert msgpack_numpy.unpackb(c.recv(timeout=10))["task"] == "fake"
    for first in (msgpack_numpy.packb({"token": TOKEN}), '{"token": "%s"}' % TOKEN):
      with ws_client.connect(_uri(srv), open_timeout=10) as c:
        c.send(first)
        assert msgpack_numpy.unpackb(c.recv(timeout=10))["task"] == "fake"
        c.send(msgpack_numpy.packb(_req(4.0)))
        assert np.all(msgpack_numpy.unpackb(c.recv(timeout=10))["actions"][:, :3] == 4)
    for first, needle in ((msgpack_numpy.packb({"token": "nope"}), "invalid token"),
                          (msgpack_numpy.packb(_req()), "token required")):
      with ws_client.connect(_uri(srv), open_timeout=10) as c:
        c.send(first)   # no metadata before a valid token, then a close with the reason
        code, reason = _closed_with(c, 10)
        assert code == 1008 and needle in reason
    with pytest.raises(websockets.InvalidStatus) as e:
      ws_client.connect(_uri(srv), open_timeout=10,
                        additional_headers={"Authorization": "Basic czNjcmV0"})
    assert e.value.response.status_code == 401

    # RemotePolicy: token= works; a wrong or missing token is a RemotePolicyError saying why.
    with RemotePolicy(srv.address, token=TOKEN, connect_timeout=10) as policy:
      obs = {"x": np.ones((2, 2, 3), np.float32)}
      assert policy(obs, seeds=[1, 2], steps=[0, 0]).shape == (2, 4, 7)
    with pytest.raises(RemotePolicyError, match="HTTP 401 invalid token"):
      RemotePolicy(srv.address, token="wrong", connect_timeout=10)
    with pytest.raises(RemotePolicyError, match="token required"):
      RemotePolicy(srv.address, connect_timeout=10)
    assert server_lib.PolicyServer  # the server survived all of it:
    assert _wait_for(lambda: srv.num_connections == 0 and srv.num_authenticating == 0)
    import http.client
    c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=5)
    c.request("GET", "/healthz")   # no token needed, reveals nothing
    assert c.getresponse().status == 200
    c.close()
  with pytest.raises(ValueError, match="empty"):
    PolicyServer(EchoRunner(), port=0, token="  ")


# ----------------------------------------------------------------------------- Origin
def test_origin_is_refused_unless_allowed():
  with PolicyServer(EchoRunner(), port=0) as srv:
    with pytest.raises(websockets.InvalidStatus) as e:   # what a browser page would send
      ws_client.connect(_uri(srv), open_timeout=10, origin="http://evil.example")
    assert e.value.response.status_code == 403
    assert b"--allow_origin" in e.value.response.body
    with ws_client.connect(_uri(srv), open_timeout=10) as c:   # no Origin: not a browser
      assert msgpack_numpy.unpackb(c.recv(timeout=10))["task"] == "fake"
  with PolicyServer(EchoRunner(), port=0, allowed_origins=["https://ok.example"]) as srv:
    with ws_client.connect(_uri(srv), open_timeout=10, origin="https://ok.example") as c:
      assert msgpack_numpy.unpackb(c.recv(timeout=10))["task"] == "fake"
    for bad in ("https://evil.example", "null", "https://ok.example.evil.example"):
      with pytest.raises(websockets.InvalidStatus) as e:
        ws_client.connect(_uri(srv), open_timeout=10, origin=bad)
      assert e.value.response.status_code == 403


# ----------------------------------------------------------------------------- caps
def test_connection_cap():
  openpi = openpi_client()
  with PolicyServer(EchoRunner(), port=0, max_connections=2) as srv:
    a = openpi.WebsocketClientPolicy("127.0.0.1", srv.port)
    b = openpi.WebsocketClientPolicy("127.0.0.1", srv.port)
    assert _wait_for(lambda: srv.num_connections == 2)
    with pytest.raises(websockets.InvalidStatus) as e:
      openpi.WebsocketClientPolicy("127.0.0.1", srv.port)
    assert e.value.response.status_code == 503 and b"server busy" in e.value.response.body
    assert np.all(a.infer(_req(5.0))["actions"][:, :3] == 5)   # the open ones still work
    b._ws.close()
    assert _wait_for(lambda: srv.num_connections == 1)
    c = openpi.WebsocketClientPolicy("127.0.0.1", srv.port)
    assert np.all(c.infer(_req(6.0))["actions"][:, :3] == 6)
    a._ws.close()
    c._ws.close()


def test_message_size_is_bounded_by_the_policy():
  runner = EchoRunner()
  with PolicyServer(runner, port=0) as srv:
    biggest = 2 * 3 * 8   # the whole (2, 3) history as float64
    assert server_lib.max_request_bytes(runner) == biggest
    assert srv.max_message_bytes == 2 * biggest + 2**20
    assert srv.max_inflight_bytes_per_connection <= 8 * srv.max_message_bytes
    with ws_client.connect(_uri(srv), open_timeout=10, max_size=None) as c:
      assert msgpack_numpy.unpackb(c.recv(timeout=10))["max_message_bytes"] == \
          srv.max_message_bytes
    # Several clients sending 8 MiB requests at once: each connection is closed (1009,
    # "message too big") from the frame header, nothing is buffered, the server serves on.
    codes = []

    def big():
      with ws_client.connect(_uri(srv), open_timeout=10) as c:
        c.recv(timeout=10)
        try:
          c.send(msgpack_numpy.packb(dict(_req(), pad=b"\0" * (8 * 2**20))))
        except websockets.ConnectionClosed:
          pass
        try:
          c.recv(timeout=20)
        except websockets.ConnectionClosed as e:
          codes.append(e.rcvd.code if e.rcvd else None)

    threads = [threading.Thread(target=big, daemon=True) for _ in range(4)]
    for th in threads:
      th.start()
    for th in threads:
      th.join(TIMEOUT)
    assert codes == [1009] * 4
    with ws_client.connect(_uri(srv), open_timeout=10) as c:
      c.recv(timeout=10)
      c.send(msgpack_numpy.packb(_req(7.0)))
      assert np.all(msgpack_numpy.unpackb(c.recv(timeout=10))["actions"][:, :3] == 7)


def test_metadata_names_the_policy_without_paths(tmp_path):
  runner = EchoRunner({"task": "fake", "where": str(tmp_path / "secret" / "run"),
                       "nested": {"p": ["/home/someone/ckpt", "relative/ok"]}})
  md = server_lib.server_metadata(runner, {"policy": server_lib.policy_name(
      str(tmp_path / "lift_run" / "checkpoints"))})
  assert md["policy"] == "lift_run" and md["where"] == "run"
  assert md["nested"]["p"] == ["ckpt", "relative/ok"]
  assert str(tmp_path) not in repr(md) and "/home/" not in repr(md)
  assert server_lib.policy_name(str(tmp_path / "exports" / "lift") + "/") == "lift"


# ----------------------------------------------------------------------------- a real policy
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """A real stage-2 (mode=normal, debug-size DP-MLP) checkpoint on synthetic demos."""
  return train_debug_policy(tmp_path_factory.mktemp("hostile"))


POISON = 1e6   # a finite observation this large makes the poisoned runner's samples NaN


def poisoned(runner):
  """The runner, except that rows whose normalised object[-1, 0] exceeds POISON sample NaN
  (what a real network can do with finite but absurd inputs), deterministically."""
  sample = runner._sample

  def _sample(params, chunk, keys):
    out = np.asarray(sample(params, chunk, keys))
    bad = np.asarray(chunk["object"])[:, -1, 0] > POISON
    return np.where(bad[:, None, None], np.nan, out)

  runner._sample = _sample
  return runner


def test_in_process_runner_refuses_overflow_and_non_finite_actions(trained):
  runner = inference.load_policy(trained)[0]
  f = frames(runner, 2, seed=1)
  good = stack(f[0], f[1])
  want = runner(good, seeds=[3], steps=[4])
  # Finite values (they pass a plain NaN check) that overflow as float32 (1e300) or once
  # normalised (3e38 times robot0_eef_pos's scale 2/0.8): refused before sampling.
  for key, big in (("object", np.full((1, 2, 10), 1e300, np.float64)),
                   ("robot0_eef_pos", np.full((1, 2, 3), 3e38, np.float32)),
                   ("robot0_eef_pos", np.full((1, 2, 3), -3.4e38, np.float32))):
    assert np.all(np.isfinite(big))
    for fn in (runner, runner.predict, runner.check):
      with pytest.raises(inference.ObservationError, match=f"'{key}' is out of range"):
        fn(dict(good, **{key: big}))
  # 3e38 in 'object' (scale 2/4.5) stays finite as a model input; its actions do not.
  big = dict(good, object=np.full((1, 2, 10), 3e38, np.float32))
  assert runner.check(big) == 1
  for fn in (runner, runner.predict):
    with pytest.raises(inference.ObservationError, match="non-finite actions"):
      fn(big, seeds=[3], steps=[4])
  for seeds, steps in (([2**63], [0]), ([1], [2**64 - 1]), ([1], [-1]), ([1], [2**32])):
    with pytest.raises(ValueError, match="seeds/steps|steps must be"):
      runner(good, seeds=seeds, steps=steps)
  poisoned(runner)
  with pytest.raises(inference.ObservationError, match=r"non-finite actions for row\(s\) \[1\]"):
    runner(dict({k: np.concatenate([v, v]) for k, v in good.items()},
                object=np.concatenate([good["object"], np.full((1, 2, 10), 1e9, np.float32)])),
           seeds=[3, 3], steps=[4, 4])
  np.testing.assert_array_equal(runner(good, seeds=[3], steps=[4]), want)   # still usable


def test_overflowing_or_nan_producing_frames_never_enter_the_history(trained):
  openpi = openpi_client()
  reference = inference.load_policy(trained)[0]
  f = frames(reference, 2, seed=2)
  with PolicyServer(poisoned(inference.load_policy(trained)[0]), port=0) as srv:
    client = openpi.WebsocketClientPolicy("127.0.0.1", srv.port)
    fresh = openpi.WebsocketClientPolicy("127.0.0.1", srv.port)
    client.infer(dict(f[0], seed=9, step=0, reset=True))
    hostile = [(dict(f[1], object=np.full(10, 1e300)), "'object' is out of range"),
               (dict(f[1], robot0_eef_pos=np.full(3, 3e38, np.float32)),
                "'robot0_eef_pos' is out of range"),
               (dict(f[1], object=np.full(10, 3e38, np.float32)), "non-finite actions"),
               (dict(f[1], object=np.full(10, 1e9, np.float32), seed=9, step=8),
                "non-finite actions")]
    for req, needle in hostile:
      with pytest.raises(RuntimeError) as e:
        client.infer(req)
      message, kind = protocol.parse_error_frame(str(e.value).split("\n", 1)[1])
      assert needle in message and kind == "ObservationError", message
    got = client.infer(dict(f[1], seed=9, step=8))["actions"]
    fresh.infer(dict(f[0], seed=9, step=0, reset=True))
    assert np.all(np.isfinite(got))
    np.testing.assert_array_equal(got, fresh.infer(dict(f[1], seed=9, step=8))["actions"])
    np.testing.assert_array_equal(got, reference(stack(f[0], f[1]), seeds=[9], steps=[8])[0])
    client._ws.close()
    fresh._ws.close()


def test_one_hostile_client_never_fails_a_shared_batch(trained):
  """Three honest clients and a hostile one send at the same moment into a batching server
  (max_batch 4, a 400 ms batch wait, so the honest requests share a call); the hostile one
  gets error frames, the honest ones their actions."""
  openpi = openpi_client()
  reference = inference.load_policy(trained, batch_size=4)[0]
  runner = poisoned(inference.load_policy(trained, batch_size=4)[0])
  f1 = frames(reference, 1, seed=3)[0]
  hostile = [  # (request, error type, message)
      (dict(f1, seed=2**63), "RequestError", "'seed' must be in"),
      (dict(f1, seed=1, step=2**64 - 1), "RequestError", "'step' must be in"),
      (dict(f1, seed=np.uint64(2**64 - 1)), "RequestError", "'seed' must be in"),
      (dict(f1, seed=1.5), "RequestError", "'seed' must be an integer"),
      (dict(f1, object=np.full(10, 1e300), seed=1), "ObservationError", "out of range"),
      (dict(f1, object=np.full(10, 1e9, np.float32), seed=1), "ObservationError",
       "non-finite actions"),   # passes validation, joins the batch, fails in it
      (dict(f1, object=np.zeros((2, 10), np.int8)[:, :9], seed=1), "ObservationError",
       "'object' has shape"),
  ]
  rounds = len(hostile)
  n_honest = 3
  eps = [frames(reference, rounds, seed=20 + i) for i in range(n_honest)]
  replies = [[None] * rounds for _ in range(n_honest)]
  errors_seen, failures = [None] * rounds, []
  barrier = threading.Barrier(n_honest + 1, timeout=TIMEOUT)
  with PolicyServer(runner, port=0, max_batch=4, batch_wait_ms=400) as srv:
    honest = [openpi.WebsocketClientPolicy("127.0.0.1", srv.port) for _ in range(n_honest)]
    bad = ws_client.connect(_uri(srv), open_timeout=10)
    bad.recv(timeout=10)

    def run_honest(i):
      try:
        for t in range(rounds):
          barrier.wait()
          req = dict(eps[i][t], seed=100 + i, step=t, **({"reset": True} if t == 0 else {}))
          replies[i][t] = honest[i].infer(req)
      except Exception as e:  # noqa: BLE001 -- reported below
        failures.append(e)
        barrier.abort()

    def run_hostile():
      try:
        for t in range(rounds):
          barrier.wait()
          bad.send(msgpack_numpy.packb(hostile[t][0]))
          errors_seen[t] = bad.recv(timeout=TIMEOUT)
      except Exception as e:  # noqa: BLE001
        failures.append(e)
        barrier.abort()

    threads = [threading.Thread(target=run_honest, args=(i,), daemon=True)
               for i in range(n_honest)] + [threading.Thread(target=run_hostile, daemon=True)]
    for th in threads:
      th.start()
    for th in threads:
      th.join(4 * TIMEOUT)
    assert not failures and not any(th.is_alive() for th in threads), failures
    for t, (_, kind, needle) in enumerate(hostile):
      message, got_kind = _error(errors_seen[t])
      assert got_kind == kind and needle in message, (t, message)
    # The hostile connection's own history was never touched: it works like a fresh one.
    bad.send(msgpack_numpy.packb(dict(f1, seed=7, step=0)))
    out = msgpack_numpy.unpackb(bad.recv(timeout=TIMEOUT))
    np.testing.assert_array_equal(out["actions"],
                                  reference(stack(f1, f1), seeds=[7], steps=[0])[0])
    bad.close()
    for c in honest:
      c._ws.close()
  sizes = []
  for i, ep in enumerate(eps):
    for t in range(rounds):
      hist = stack(ep[max(t - 1, 0)], ep[t])
      want = reference(hist, seeds=[100 + i], steps=[t])[0]
      np.testing.assert_allclose(replies[i][t]["actions"], want, rtol=1e-5, atol=1e-6)
      sizes.append(replies[i][t]["policy_timing"]["batch_size"])
  assert max(sizes) >= 2, f"the honest requests never shared a batch: {sizes}"
