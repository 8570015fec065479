"""Simulators in their own virtual environments (LIBERO, ALOHA): their interpreter, running one
of their binaries, and a policy served to them for the length of a call.

A simulator whose pins conflict with ours (LIBERO: robosuite 1.4; ALOHA: mujoco < 3.9 and
dm_control < 1.1) runs in `<repo>/.venv-<name>` (`make <name>-env`) and imports only numpy,
its simulator and the JAX-free parts of this package (`decoupled_jax.libero`,
`decoupled_jax.aloha`); it talks to our policies through the policy server
(`serving.server.PolicyServer`, openpi's websocket protocol) on a free local port.
"""
from __future__ import annotations

import logging
import os
import subprocess
from typing import Callable, Sequence

from decoupled_jax.errors import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def default_python(name: str) -> str:
  """`<repo>/.venv-<name>/bin/python`."""
  return os.path.join(REPO, f".venv-{name}", "bin", "python")


def python(given: str, name: str, field: str) -> str:
  """The venv interpreter `given` (a config value; '' = the default one), or a ConfigError
  naming `field` and the make target that builds it."""
  py = given or default_python(name)
  if not os.path.exists(py):
    raise ConfigError(f"{field}: {py} does not exist; build the {name} environment with "
                      f"`make {name}-env`")
  return py


def run(cmd: Sequence[str], log_path: str, what: str) -> None:
  """Runs `cmd` (a venv binary) with this repository on its PYTHONPATH, appending its output
  to `log_path`; a failure raises RuntimeError with the last line of its output."""
  logging.info("%s: %s", what, " ".join(cmd))
  env = dict(os.environ, MUJOCO_GL=os.environ.get("MUJOCO_GL", "egl"),
             PYTHONPATH=os.pathsep.join(filter(None, (REPO, os.environ.get("PYTHONPATH")))))
  proc = subprocess.run(list(cmd), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                        text=True)
  os.makedirs(os.path.dirname(os.path.abspath(log_path)), exist_ok=True)
  with open(log_path, "a") as f:
    f.write(proc.stdout)
  if proc.returncode != 0:
    tail = proc.stdout.strip().splitlines()[-1:] or ["(no output)"]
    raise RuntimeError(f"{what} failed (exit {proc.returncode}): {tail[0]}; see {log_path}")


def run_served(policy_runner, metadata: dict, cmd: Callable[[int], Sequence[str]],
               log_path: str, what: str) -> None:
  """Serves `policy_runner` (an `inference.PolicyRunner`) with `metadata` on a free local
  port and runs `cmd(port)` against it; the server stops when the command ends."""
  from decoupled_jax.serving.server import PolicyServer
  server = PolicyServer(policy_runner, port=0, metadata=metadata).start()
  try:
    run(cmd(server.port), log_path, what)
  finally:
    server.stop()
