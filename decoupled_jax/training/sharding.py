"""Data parallelism with `jax.jit` over a Mesh of every device (the successor of pmap).

The batch is sharded along its leading axis over the 'data' mesh axis; the train state is
replicated. Multi-host: the binaries' `--distributed` calls `jax.distributed.initialize()` first,
then every host feeds its local slice of the global batch through `shard_batch`.
"""
from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def make_mesh(devices=None) -> Mesh:
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def check_batch_size(global_batch_size: int, mesh: Mesh) -> None:
  n = mesh.devices.size
  if global_batch_size % n:
    raise ValueError(f"config.train.batch_size={global_batch_size} is not divisible by the "
                     f"{n} devices of the mesh")


def shard_batch(batch, mesh: Mesh):
  """Host-local numpy batch (this host's slice) -> global arrays sharded over 'data'."""
  sharding = batch_sharding(mesh)
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)),
                      batch)


def replicate(tree, mesh: Mesh):
  return jax.device_put(tree, replicated(mesh))
