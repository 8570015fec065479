"""Export and serving: a tiny checkpoint trained by experiments/train.py on synthetic demos is
exported and reloaded bit for bit, and served over websockets on 127.0.0.1 to the real
openpi-client and to `RemotePolicy`, which must reproduce in-process actions exactly. Bad
requests get an error frame and leave the connection and the server running.

Every network call here is bounded (explicit timeouts; servers listen on 127.0.0.1 only)."""
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

websockets = pytest.importorskip("websockets")
import websockets.sync.client as ws_client  # noqa: E402

from decoupled_jax import export, inference  # noqa: E402
from decoupled_jax.serving import msgpack_numpy, protocol  # noqa: E402
from decoupled_jax.serving.client import RemotePolicy  # noqa: E402
from decoupled_jax.serving.server import PolicyServer  # noqa: E402
from helpers import REPO, frames, free_port, openpi_client, stack, train_debug_policy  # noqa: E402

TIMEOUT = 60.0


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """A real stage-2 (mode=normal, debug-size DP-MLP, DDIM-4) checkpoint on synthetic demos."""
  return train_debug_policy(tmp_path_factory.mktemp("serving"))


def fresh_runner(ckpt, **kw):
  return inference.load_policy(ckpt, **kw)[0]


@pytest.fixture(scope="module")
def reference(trained):
  return fresh_runner(trained)


@pytest.fixture(scope="module")
def server(trained):
  srv = PolicyServer(fresh_runner(trained), host="127.0.0.1", port=0).start(timeout=300)
  yield srv
  srv.stop()


def recv_bounded(conn, timeout=TIMEOUT):
  return conn.recv(timeout=timeout)


# ----------------------------------------------------------------------------- codec
def test_codec_is_openpi_compatible_and_refuses_bad_messages():
  from openpi_client import msgpack_numpy as theirs
  msg = {"a": np.arange(12, dtype=np.float32).reshape(3, 4), "img": np.zeros((2, 4, 4, 3), np.uint8),
         "s": np.float64(1.5), "i": np.int64(-3), "nested": {"x": [1, 2.0, "t"]}, "seed": 7,
         "f64": np.linspace(0, 1, 5)}
  for packed in (msgpack_numpy.packb(msg), theirs.packb(msg)):
    for unpack in (msgpack_numpy.unpackb, theirs.unpackb):
      out = unpack(packed)
      for k in ("a", "img", "f64"):
        assert out[k].dtype == msg[k].dtype and np.array_equal(out[k], msg[k])
      assert out["s"] == 1.5 and out["i"] == -3 and out["seed"] == 7
      assert out["nested"] == {"x": [1, 2.0, "t"]}
  assert msgpack_numpy.packb(msg) == theirs.packb(msg)   # byte-identical encoding
  with pytest.raises(TypeError):
    msgpack_numpy.packb({"o": np.array([object()])})
  for bad in (b"\xc1\x00", b"\x92\x01"):   # never-used byte; truncated array
    with pytest.raises(msgpack_numpy.CodecError, match="malformed msgpack"):
      msgpack_numpy.unpackb(bad)
  import msgpack
  short = msgpack.packb({b"__ndarray__": True, b"data": b"\0" * 12, b"dtype": "<f4",
                         b"shape": [4]})
  with pytest.raises(msgpack_numpy.CodecError, match="needs 16 bytes"):
    msgpack_numpy.unpackb(short)
  obj = msgpack.packb({b"__ndarray__": True, b"data": b"\0" * 8, b"dtype": "|O", b"shape": [1]})
  with pytest.raises(msgpack_numpy.CodecError, match="not accepted"):
    msgpack_numpy.unpackb(obj)


# ----------------------------------------------------------------------------- export
def test_export_roundtrip_is_bit_identical(trained, reference, tmp_path, monkeypatch):
  workdir = os.path.dirname(trained)
  with open(os.path.join(workdir, "eval.json"), "w") as f:   # an evaluation beside checkpoints/
    json.dump({"success_rate": 0.5, "ci95": [0.1, 0.9], "num_episodes": 2,
               "mean_episode_length": 12.0, "max_steps": 16}, f)
  out = export.export_policy(trained, str(tmp_path / "exp"))
  assert sorted(os.listdir(out)) == ["config.json", "model_card.md", "norm_stats.json",
                                     "params.safetensors"]
  assert not [p for p in os.listdir(tmp_path) if p.startswith(".exp.tmp")]
  cfg = json.load(open(os.path.join(out, "config.json")))
  assert cfg["backbone"]["name"] == "dp_mlp" and cfg["sampler"]["method"] == "ddim"
  assert cfg["n_obs_steps"] == reference.n_obs and cfg["n_action_steps"] == reference.n_act
  assert cfg["observations"]["object"] == {"shape": [10], "dtype": "float32", "kind": "lowdim"}
  card = open(os.path.join(out, "model_card.md")).read()
  assert "Lift" in card and "Success rate: 0.500" in card and "Training steps: 3" in card

  params, meta = inference.ckpt_lib.load_inference_params(trained)
  loaded, meta2 = export.read_exported(out)
  flat, flat2 = export.flatten_params(params)[0], export.flatten_params(loaded)[0]
  assert sorted(flat) == sorted(flat2)
  for k in flat:
    assert flat2[k].dtype == flat[k].dtype and np.array_equal(flat2[k], np.asarray(flat[k])), k
  assert meta2 == meta

  a = fresh_runner(trained)
  with monkeypatch.context() as m:   # loading an export reads no checkpoint
    def no_checkpoint(*args, **kw):
      raise AssertionError("load_exported read a checkpoint")
    m.setattr(inference.ckpt_lib, "load_inference_params", no_checkpoint)
    m.setattr(inference.ckpt_lib, "load_meta", no_checkpoint)
    b = export.load_exported(out)
  fs = frames(a, 3)
  for obs, kw in ((stack(fs[0], fs[1]), {}), (stack(fs[1], fs[2]), {"seeds": [5], "steps": [8]})):
    np.testing.assert_array_equal(a(obs, **kw), b(obs, **kw))
  batch = {k: np.concatenate([stack(fs[0], fs[1])[k], stack(fs[1], fs[2])[k]]) for k in fs[0]}
  np.testing.assert_array_equal(a(batch, seeds=[1, 2], steps=[0, 8]),
                                b(batch, seeds=[1, 2], steps=[0, 8]))


def test_export_refuses_non_empty_output_atomically(trained, tmp_path):
  target = tmp_path / "busy"
  target.mkdir()
  (target / "keep.txt").write_text("mine")
  with pytest.raises(export.ExportError, match="refusing to overwrite"):
    export.export_policy(trained, str(target))
  assert os.listdir(target) == ["keep.txt"]
  empty = tmp_path / "empty"
  empty.mkdir()
  assert export.export_policy(trained, str(empty)) == str(empty)   # an empty folder is fine
  with pytest.raises(Exception):
    export.export_policy(str(tmp_path / "no_such_run"), str(tmp_path / "never"))
  assert sorted(os.listdir(tmp_path)) == ["busy", "empty"]   # no partial or temporary folder
  proc = subprocess.run([sys.executable, os.path.join(REPO, "experiments", "export.py"),
                         f"--checkpoint={trained}", f"--output={target}"],
                        capture_output=True, text=True, timeout=300, cwd=REPO)
  assert proc.returncode == 2
  err = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
  assert len(err) == 1 and "refusing to overwrite" in err[0] and str(target) in err[0]


# ----------------------------------------------------------------------------- openpi client
def test_openpi_client_history_and_seeds_match_in_process(server, reference):
  client = openpi_client().WebsocketClientPolicy(f"ws://127.0.0.1:{server.port}")
  md = client.get_server_metadata()
  assert md["obs_keys"] == list(reference.obs_keys) and md["n_obs_steps"] == reference.n_obs
  assert md["n_action_steps"] == reference.n_act and md["task"] == "Lift"
  f = frames(reference, 4, seed=1)
  # Per-connection history: one frame per request, 'reset' starts the episode.
  expect = [stack(f[0], f[0]), stack(f[0], f[1]), stack(f[1], f[2])]
  for t, (frame, want) in enumerate(zip(f, expect)):
    req = dict(frame, seed=11, step=8 * t, **({"reset": True} if t == 0 else {}))
    out = client.infer(req)
    assert out["actions"].shape == (reference.n_act, 7)
    np.testing.assert_array_equal(out["actions"], reference(want, seeds=[11], steps=[8 * t])[0])
    assert {"infer_ms", "batch_size"} <= set(out["policy_timing"])
    assert {"infer_ms", "queue_ms"} <= set(out["server_timing"])
    if t:
      assert "prev_total_ms" in out["server_timing"]
  # The whole history in the request; it becomes the connection's history.
  full = {k: v[0] for k, v in stack(f[3], f[0]).items()}
  np.testing.assert_array_equal(client.infer(dict(full, seed=3, step=1))["actions"],
                                reference(stack(f[3], f[0]), seeds=[3], steps=[1])[0])
  np.testing.assert_array_equal(client.infer(dict(f[2], seed=3, step=2))["actions"],
                                reference(stack(f[0], f[2]), seeds=[3], steps=[2])[0])
  np.testing.assert_array_equal(client.infer(dict(f[2], seed=3, step=0, reset=True))["actions"],
                                reference(stack(f[2], f[2]), seeds=[3], steps=[0])[0])
  # Without a seed the server draws fresh noise: still valid actions.
  assert np.all(np.isfinite(client.infer(f[1])["actions"]))


def test_concurrent_clients_keep_their_own_history(server, reference):
  openpi = openpi_client()
  clients = [openpi.WebsocketClientPolicy(f"ws://127.0.0.1:{server.port}") for _ in range(3)]
  eps = [frames(reference, 3, seed=10 + i) for i in range(3)]
  results = [[None] * 3 for _ in clients]
  barrier = threading.Barrier(len(clients), timeout=TIMEOUT)

  def run(i):
    for t in range(3):
      barrier.wait()   # the three episodes interleave step by step
      req = dict(eps[i][t], seed=100 + i, step=t, **({"reset": True} if t == 0 else {}))
      results[i][t] = clients[i].infer(req)["actions"]

  threads = [threading.Thread(target=run, args=(i,)) for i in range(3)]
  for th in threads:
    th.start()
  for th in threads:
    th.join(TIMEOUT)
  for i, f in enumerate(eps):
    hist = [stack(f[0], f[0]), stack(f[0], f[1]), stack(f[1], f[2])]
    for t in range(3):
      np.testing.assert_array_equal(results[i][t],
                                    reference(hist[t], seeds=[100 + i], steps=[t])[0])


def test_bad_requests_get_an_error_and_the_connection_survives(server, reference):
  client = openpi_client().WebsocketClientPolicy(f"ws://127.0.0.1:{server.port}")
  f = frames(reference, 2, seed=3)
  client.infer(dict(f[0], reset=True, seed=1, step=0))
  nan = dict(f[1], object=np.full(10, np.nan, np.float32))
  cases = [
      ({k: v for k, v in f[1].items() if k != "object"}, "missing observation key"),
      (dict(f[1], object=np.zeros(9, np.float32)), "'object' has shape (9,)"),
      (dict(f[1], object=np.zeros((3, 10), np.float32)), "'object' has shape (3, 10)"),
      (dict(f[1], object=np.zeros(10, np.bool_)), "'object' must be numeric"),
      (dict(f[1], object=np.array(["a"] * 10)), "'object' must be numeric"),
      (nan, "'object' contains NaN"),
      (dict(f[1], seed="x"), "'seed' must be an integer"),
      (dict(f[1], step=3), "'step' was sent without 'seed'"),
      (dict(f[1], reset="yes"), "'reset' must be a boolean"),
  ]
  for req, needle in cases:
    with pytest.raises(RuntimeError) as e:
      client.infer(req)
    message, kind = protocol.parse_error_frame(str(e.value).split("\n", 1)[1])
    assert needle in message, (needle, message)
    assert kind in ("ObservationError", "RequestError")
  # The connection still works and the failed requests did not touch its history.
  np.testing.assert_array_equal(client.infer(dict(f[1], seed=1, step=8))["actions"],
                                reference(stack(f[0], f[1]), seeds=[1], steps=[8])[0])

  # Frames that are not observation messages at all, on a raw websocket.
  with ws_client.connect(f"ws://127.0.0.1:{server.port}", open_timeout=TIMEOUT) as conn:
    recv_bounded(conn)   # metadata
    for frame, needle in ((b"\xc1\x00\x01", "malformed msgpack"),
                          ("not msgpack", "expected a binary msgpack frame"),
                          (msgpack_numpy.packb([1, 2]), "must be a map")):
      conn.send(frame)
      reply = recv_bounded(conn)
      assert isinstance(reply, str)
      message, kind = protocol.parse_error_frame(reply)
      assert kind == "RequestError" and needle in message
    conn.send(msgpack_numpy.packb(dict(f[0], seed=2, step=0)))
    out = msgpack_numpy.unpackb(recv_bounded(conn))
    np.testing.assert_array_equal(out["actions"],
                                  reference(stack(f[0], f[0]), seeds=[2], steps=[0])[0])


# ----------------------------------------------------------------------------- RemotePolicy
def test_remote_policy_matches_the_runner(server, reference):
  f = frames(reference, 6, seed=4)
  batch = {k: np.concatenate([stack(f[0], f[1])[k], stack(f[2], f[3])[k], stack(f[4], f[5])[k]])
           for k in f[0]}
  for connections in (1, 2):
    with RemotePolicy(server.address, connections=connections) as policy:
      assert policy.n_obs == reference.n_obs and policy.n_act == reference.n_act
      got = policy(batch, seeds=[100000, 100001, 100002], steps=[0, 8, 16])
      np.testing.assert_array_equal(
          got, reference(batch, seeds=[100000, 100001, 100002], steps=[0, 8, 16]))
      nan = dict(batch, object=batch["object"].copy())
      nan["object"][1, 0, 3] = np.nan
      with pytest.raises(inference.ObservationError, match="row 1: observation 'object' contains"):
        policy(nan, seeds=[1, 2, 3], steps=[0, 0, 0])   # the server's message
      bad = dict(batch, robot0_eef_quat=batch["robot0_eef_quat"][..., :3])
      with pytest.raises(inference.ObservationError, match="'robot0_eef_quat' has shape"):
        policy(bad)   # rows without their history never reach the server
      assert policy.check(batch) == 3
      with pytest.raises(inference.ObservationError, match="contains NaN"):
        policy.check(nan)
      assert policy(batch).shape == (3, reference.n_act, 7)   # usable after the error


# ----------------------------------------------------------------------------- a slow policy
class SlowRunner:
  """Duck-typed runner: sleeps, returns actions that echo its input row (x, seed)."""
  obs_keys = ("x",)
  obs_shapes = {"x": (3,)}
  obs_dtypes = {"x": "float32"}
  n_obs, n_act, batch = 2, 4, 4
  metadata = {"task": "fake"}

  def __init__(self, delay):
    self.delay, self.calls, self.log = delay, 0, []

  def check(self, obs):
    return inference.PolicyRunner.check(self, obs)

  def __call__(self, obs, seeds=None, steps=None):
    self.calls += 1
    time.sleep(self.delay)
    x = np.asarray(obs["x"], np.float64)
    self.log.append(None if seeds is None else list(seeds))
    out = np.zeros((x.shape[0], self.n_act, 7))
    out[..., :3] = x[:, -1][:, None]
    out[..., 6] = -1 if seeds is None else np.asarray(seeds)[:, None]
    return out


def _healthz(port):
  c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
  try:
    c.request("GET", "/healthz")
    return c.getresponse().status
  finally:
    c.close()


def test_slow_policy_blocks_nobody_and_disconnects_crash_nothing(caplog):
  runner = SlowRunner(delay=1.5)
  with PolicyServer(runner, port=0) as srv:
    uri = f"ws://127.0.0.1:{srv.port}"
    a = ws_client.connect(uri, open_timeout=10)
    recv_bounded(a)
    a.send(msgpack_numpy.packb({"x": np.ones(3, np.float32), "seed": 1}))
    time.sleep(0.1)   # a's request is now being computed
    t0 = time.monotonic()
    with ws_client.connect(uri, open_timeout=10) as b:
      assert msgpack_numpy.unpackb(recv_bounded(b, 5))["task"] == "fake"
      assert b.ping().wait(timeout=5)
    assert _healthz(srv.port) == 200
    assert time.monotonic() - t0 < 1.2, "connect/ping/health waited for the policy"
    assert np.all(msgpack_numpy.unpackb(recv_bounded(a, 10))["actions"][:, :3] == 1)
    # Clients that vanish with a request in flight (queued or computing).
    for _ in range(2):
      c = ws_client.connect(uri, open_timeout=10)
      recv_bounded(c)
      c.send(msgpack_numpy.packb({"x": np.zeros(3, np.float32)}))
      c.close()
    time.sleep(0.5)   # their close frames arrive while their requests are queued/computed
    a.send(msgpack_numpy.packb({"x": np.full(3, 2, np.float32), "seed": 2}))
    assert np.all(msgpack_numpy.unpackb(recv_bounded(a, 20))["actions"][:, :3] == 2)
    a.close()
    deadline = time.monotonic() + 5
    while srv.num_connections and time.monotonic() < deadline:
      time.sleep(0.05)
    assert srv.num_connections == 0
  assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]


def test_concurrent_requests_are_batched_without_mixing_rows():
  runner = SlowRunner(delay=0.4)
  with PolicyServer(runner, port=0, max_batch=4) as srv:
    conns = [ws_client.connect(f"ws://127.0.0.1:{srv.port}", open_timeout=10) for _ in range(5)]
    for c in conns:
      recv_bounded(c)
    for i, c in enumerate(conns):   # 3 seeded, 2 unseeded, all at once
      req = {"x": np.full((2, 3), i, np.float32)}
      if i < 3:
        req["seed"] = 50 + i
      c.send(msgpack_numpy.packb(req))
    replies = [msgpack_numpy.unpackb(recv_bounded(c, 20)) for c in conns]
    for c in conns:
      c.close()
  for i, r in enumerate(replies):
    assert np.all(r["actions"][:, :3] == i)
    assert np.all(r["actions"][:, 6] == (50 + i if i < 3 else -1))
  assert max(r["policy_timing"]["batch_size"] for r in replies) > 1
  warmup, calls = runner.log[0], runner.log[1:]
  assert warmup == [0] and sum(len(c) if c else 0 for c in calls) == 3
  for seeds in calls:   # one call never mixes seeded and unseeded requests
    assert seeds is None or all(s >= 50 for s in seeds)


# ----------------------------------------------------------------------------- binaries
def test_serve_binary_from_export(trained, reference, tmp_path):
  out = export.export_policy(trained, str(tmp_path / "exp"))
  port = free_port()
  proc = subprocess.Popen([sys.executable, os.path.join(REPO, "experiments", "serve.py"),
                           f"--export={out}", f"--port={port}", "--host=127.0.0.1",
                           # the head overrides (typed sections), here the policy's own DDIM-4
                           "--sampler=ddim", "--inference_steps=4"],
                          cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  try:
    deadline = time.monotonic() + 300
    while True:
      assert proc.poll() is None, proc.stdout.read()[-3000:]
      try:
        if _healthz(port) == 200:
          break
      except OSError:
        pass
      assert time.monotonic() < deadline, "server did not come up"
      time.sleep(0.5)
    client = openpi_client().WebsocketClientPolicy("127.0.0.1", port)
    md = client.get_server_metadata()   # names the policy, never where it lives
    assert md["source"] == "export" and md["policy"] == os.path.basename(out)
    assert out not in repr(md) and str(tmp_path) not in repr(md)
    f = frames(reference, 1, seed=9)[0]
    np.testing.assert_array_equal(client.infer(dict(f, seed=4, step=0, reset=True))["actions"],
                                  reference(stack(f, f), seeds=[4], steps=[0])[0])
  finally:
    proc.send_signal(signal.SIGTERM)
    try:
      rc = proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
      proc.kill()
      raise
  assert rc == 0, proc.stdout.read()[-3000:]


# ----------------------------------------------------------------------------- closed loop
@pytest.mark.sim
def test_remote_evaluation_equals_in_process(trained, server):
  pytest.importorskip("robosuite")
  from decoupled_jax.sim.evaluator import evaluate_policy

  def recording(policy, log):
    def fn(obs_batch, seeds=None, steps=None):
      a = policy(obs_batch, seeds=seeds, steps=steps)
      log.append((None if seeds is None else np.asarray(seeds).copy(),
                  None if steps is None else np.asarray(steps).copy(), np.asarray(a).copy()))
      return a
    return fn

  local_log, remote_log = [], []
  kw = dict(seeds=[100000, 100001], n_obs_steps=2, n_action_steps=8, max_steps=16,
            num_workers=0)
  local = evaluate_policy(recording(fresh_runner(trained), local_log), "Lift", **kw)
  with RemotePolicy(server.address) as remote_policy:
    remote = evaluate_policy(recording(remote_policy, remote_log), "Lift", **kw)
  assert local["episodes"] == remote["episodes"]
  assert len(local_log) == len(remote_log) >= 2
  for (s1, t1, a1), (s2, t2, a2) in zip(local_log, remote_log):
    assert s1 is not None, "the evaluator no longer passes seeds= / steps="
    np.testing.assert_array_equal(s1, s2)
    np.testing.assert_array_equal(t1, t2)
    np.testing.assert_array_equal(a1, a2)
