"""Serving a policy over the network (openpi's websocket protocol) and calling it remotely.

  server.py         `PolicyServer`: websocket server, per-connection history, batching thread
  client.py         `RemotePolicy`: the runner's call contract over a websocket (evaluator-ready)
  protocol.py       the wire format (documented there) and error frames
  msgpack_numpy.py  msgpack with numpy arrays, byte-compatible with openpi-client
  cli.py            the `serve` / `export` binaries (experiments/serve.py, experiments/export.py)

Submodules are imported on use: `from decoupled_jax.serving.server import PolicyServer`.
"""
