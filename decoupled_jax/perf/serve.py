"""Round-trip latency of the policy server over localhost, beside in-process latency
(`experiments/benchmark_serve.py`; the server and its protocol: decoupled_jax/serving/,
docs/security.md for its limits).

Policy: the paper-size DP-MLP (`dp_mlp` with the registry's default kwargs, H = 16, To = 2,
Ta = 8) on Lift's low-dim observations, with freshly initialised params (no checkpoint: the
config, normaliser and shapes are written into a meta dict and `inference.runner_from_meta`
builds the runner; latency does not depend on the weights' values). Heads: DDIM-10 and
flow-10.

For each head and runner batch size B, a server process builds the runner, times it
in-process (B rows per call: what one batched server call costs), then serves it on
127.0.0.1 with `max_batch = B`; this process then times round trips (msgpack encode, send,
queue, policy, reply, decode) with 1 and 4 concurrent clients, each on its own connection
sending one single-frame observation per request with seed/step (per-connection history).
Reports p50/p95/p99 in ms and requests/s, plus the transport overhead (round trip minus the
server's own queue + policy time, from the reply's server_timing); the machine's load
average is recorded.

Imports nothing heavy at module level: the server process (spawned) imports jax itself.
"""
import multiprocessing as mp
import os
import threading
import time
from typing import Sequence

import numpy as np

from decoupled_jax import util

OBS_SHAPES = {"robot0_eef_pos": [3], "robot0_eef_quat": [4], "robot0_gripper_qpos": [2],
              "object": [10]}   # Lift, low-dim


def build_runner(head: str, steps: int, batch_size: int):
  """A paper-size DP-MLP runner with fresh params (no checkpoint)."""
  import jax
  from decoupled_jax import config_lib, inference
  from decoupled_jax.data.normalizer import FieldStats, LimitsNormalizer
  from decoupled_jax.pipelines import common
  from decoupled_jax.training.policy import ACTION_DIM, init_policy, policy_from_config
  config = config_lib.finetune_config(mode="normal", arch="dp_mlp",
                                      head="flow" if head == "flow" else "diffusion")
  if head == "flow":
    config.head.flow.num_steps = steps
  else:
    config.head.diffusion.sampler, config.head.diffusion.num_inference_steps = "ddim", steps
  keys = list(OBS_SHAPES)
  n_obs, horizon = int(config.data.n_obs_steps), int(config.data.horizon)
  policy = policy_from_config(config, (), keys)
  example = {k: np.zeros((1, n_obs) + tuple(v), np.float32) for k, v in OBS_SHAPES.items()}
  params = init_policy(policy, jax.random.key(0), example, (horizon, ACTION_DIM))
  lo, hi = config.data.position_box
  norm = LimitsNormalizer.from_stats({
      "actions": FieldStats.create(lo, hi, dims=slice(0, 3)),
      "robot0_eef_pos": FieldStats.create(lo, hi),
      "object": FieldStats.create(-np.ones(10), np.ones(10))})
  meta = {"stage": "finetune", "mode": "normal", "task": "Lift", "backbone": "dp_mlp",
          "config": common.config_to_dict(config), "normalizer": norm.to_dict(),
          "image_keys": [], "lowdim_keys": keys, "obs_shapes": OBS_SHAPES,
          "obs_dtypes": {k: "float32" for k in keys}, "horizon": horizon,
          "n_obs_steps": n_obs, "n_action_steps": int(config.data.n_action_steps)}
  n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
  return inference.runner_from_meta(params, meta, batch_size=batch_size), n_params


def percentiles(lat_s) -> dict:
  ms = 1000 * np.asarray(lat_s)
  return {"p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)),
          "p99_ms": float(np.percentile(ms, 99)), "mean_ms": float(ms.mean()), "n": int(ms.size)}


def random_obs(rng, n_rows, n_obs):
  return {k: rng.uniform(-0.5, 0.5, (n_rows, n_obs) + tuple(v)).astype(np.float32)
          for k, v in OBS_SHAPES.items()}


def server_process(conn, head, steps, batch_size, requests):
  """Builds the runner, times it in-process, serves it until told to stop."""
  import logging
  from decoupled_jax.runtime import configure_environment
  configure_environment()   # before jax is imported in this (spawned) process
  logging.basicConfig(level=logging.WARNING)
  from decoupled_jax.serving.server import PolicyServer
  runner, n_params = build_runner(head, steps, batch_size)
  t0 = time.perf_counter()
  srv = PolicyServer(runner, host="127.0.0.1", port=0, max_batch=batch_size)
  srv.warm_up()
  compile_s = time.perf_counter() - t0
  rng = np.random.default_rng(0)
  lat = []
  for i in range(requests + 10):
    obs = random_obs(rng, batch_size, runner.n_obs)
    t = time.perf_counter()
    runner(obs, seeds=np.arange(batch_size) + i, steps=np.zeros(batch_size, np.int64))
    if i >= 10:
      lat.append(time.perf_counter() - t)
  srv.warmup = False
  srv.start()
  conn.send({"port": srv.port, "in_process": percentiles(lat), "compile_s": compile_s,
             "num_params": n_params})
  conn.recv()   # stop
  srv.stop()
  conn.send("stopped")


def client_round_trips(port, n_clients, requests, warmup, n_obs):
  import websockets.sync.client as ws_client
  from decoupled_jax.serving import msgpack_numpy
  lat = [[] for _ in range(n_clients)]
  overhead = [[] for _ in range(n_clients)]   # round trip - the server's own time
  spans = [[None, None] for _ in range(n_clients)]   # first timed send, last timed reply
  errors = []
  barrier = threading.Barrier(n_clients, timeout=120)

  def run(i):
    rng = np.random.default_rng(100 + i)
    try:
      with ws_client.connect(f"ws://127.0.0.1:{port}", compression=None, max_size=None,
                             open_timeout=60) as c:
        msgpack_numpy.unpackb(c.recv(timeout=60))
        barrier.wait()
        for t in range(warmup + requests):
          frame = {k: v[0, 0] for k, v in random_obs(rng, 1, 1).items()}
          req = dict(frame, seed=i, step=t, reset=(t == 0))
          t0 = time.perf_counter()
          c.send(msgpack_numpy.packb(req))
          reply = c.recv(timeout=120)
          if isinstance(reply, str):
            raise RuntimeError(reply)
          out = msgpack_numpy.unpackb(reply)
          t1 = time.perf_counter()
          if t == warmup:
            spans[i][0] = t0
          if t >= warmup:
            lat[i].append(t1 - t0)
            overhead[i].append(t1 - t0 - out["server_timing"]["infer_ms"] / 1000)
            spans[i][1] = t1
    except Exception as e:  # noqa: BLE001
      errors.append(e)

  threads = [threading.Thread(target=run, args=(i,)) for i in range(n_clients)]
  for th in threads:
    th.start()
  for th in threads:
    th.join(600)
  if errors:
    raise errors[0]
  flat = [x for l in lat for x in l]
  wall = max(s[1] for s in spans) - min(s[0] for s in spans)
  over = percentiles([x for l in overhead for x in l])
  return dict(percentiles(flat), requests_per_s=len(flat) / wall,
              transport_overhead={k: over[k] for k in ("p50_ms", "p95_ms", "p99_ms")})


def run(heads: Sequence[str], batch_sizes: Sequence[int], clients: Sequence[int],
        inference_steps: int, requests: int, warmup_requests: int, output: str) -> dict:
  """Every (head, batch size, number of clients): prints the table, writes `output` (JSON,
  atomically), returns it."""
  ctx = mp.get_context("spawn")
  results = {"machine": {"cpus": os.cpu_count(), "loadavg_start": list(os.getloadavg())},
             "policy": "dp_mlp (paper size), Lift low-dim, H=16, To=2, Ta=8, fresh params",
             "rows": []}
  for head in heads:
    for bs in map(int, batch_sizes):
      parent, child = ctx.Pipe()
      proc = ctx.Process(target=server_process, daemon=True,
                         args=(child, head, inference_steps, bs, requests))
      proc.start()
      info = parent.recv()
      name = f"{head}-{inference_steps}"
      row = {"head": name, "batch_size": bs, "num_params": info["num_params"],
             "compile_s": info["compile_s"], "in_process": info["in_process"], "served": {}}
      for n in map(int, clients):
        row["served"][str(n)] = client_round_trips(info["port"], n, requests,
                                                   warmup_requests, 2)
      parent.send("stop")
      parent.recv()
      proc.join(60)
      results["rows"].append(row)
      print(f"done: {name} batch {bs}", flush=True)
  results["machine"]["loadavg_end"] = list(os.getloadavg())

  hdr = (f"{'head':<10}{'B':>3}  {'where':<22}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}"
         f"{'req/s':>9}")
  lines = [hdr, "-" * len(hdr)]
  for r in results["rows"]:
    ip = r["in_process"]
    lines.append(f"{r['head']:<10}{r['batch_size']:>3}  {'in-process (B rows)':<22}"
                 f"{ip['p50_ms']:>9.2f}{ip['p95_ms']:>9.2f}{ip['p99_ms']:>9.2f}"
                 f"{1000 * r['batch_size'] / ip['mean_ms']:>9.1f}")
    for n, s in r["served"].items():
      o = s["transport_overhead"]
      lines.append(f"{'':<10}{'':>3}  {f'served, {n} client(s)':<22}{s['p50_ms']:>9.2f}"
                   f"{s['p95_ms']:>9.2f}{s['p99_ms']:>9.2f}{s['requests_per_s']:>9.1f}"
                   f"   (transport p50/p99 {o['p50_ms']:.2f}/{o['p99_ms']:.2f} ms)")
  m = results["machine"]
  lines.append(f"{m['cpus']} CPUs; load average {m['loadavg_start'][0]:.2f} at start, "
               f"{m['loadavg_end'][0]:.2f} at end; {requests} timed requests per client")
  print("\n".join(lines))
  results["table"] = lines
  util.write_json(output, results, indent=2, makedirs=True)
  print(f"wrote {output}")
  return results
