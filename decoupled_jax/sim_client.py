"""The policy-server client of the simulators that run in their own venvs (LIBERO, ALOHA).

openpi's websocket client (openpi-client 0.1.2, installed --no-deps in those venvs) with
reconnects; stdlib + openpi-client + websockets only, never jax (docs/architecture.md).
"""
from __future__ import annotations

import time


class ServerGone(ConnectionError):
  pass


class Client:
  """openpi's websocket client with reconnects: `infer` raises `ServerGone` when the
  connection drops (after which `connect()` waits for the server to come back) and
  RuntimeError for the server's error frames."""

  def __init__(self, address: str, *, reconnect_timeout_s: float = 300.0):
    self.address = address if address.startswith("ws") else f"ws://{address}"
    self.reconnect_timeout_s = float(reconnect_timeout_s)
    self._policy = None
    self.metadata: dict = {}
    self.reconnects = 0

  def connect(self) -> dict:
    from openpi_client import websocket_client_policy
    deadline = time.monotonic() + self.reconnect_timeout_s
    delay = 0.5
    while True:
      try:
        self._policy = websocket_client_policy.WebsocketClientPolicy(self.address)
        self.metadata = dict(self._policy.get_server_metadata())
        return self.metadata
      except (OSError, EOFError) as e:   # refused / reset while the server (re)starts
        if time.monotonic() > deadline:
          raise ServerGone(f"no policy server at {self.address} after "
                           f"{self.reconnect_timeout_s:.0f} s ({e})") from None
        time.sleep(delay)
        delay = min(delay * 2, 5.0)

  def infer(self, obs: dict) -> dict:
    import websockets
    if self._policy is None:
      self.connect()
    try:
      return self._policy.infer(obs)
    except (websockets.ConnectionClosed, OSError, EOFError) as e:
      self._policy = None
      raise ServerGone(str(e) or type(e).__name__) from None

  def close(self):
    if self._policy is not None:
      try:
        self._policy._ws.close()   # openpi-client 0.1.2 has no close()
      except Exception:  # noqa: BLE001
        pass
      self._policy = None
