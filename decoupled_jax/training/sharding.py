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


def process_rows(global_batch_size: int) -> slice:
  """The rows of a global batch this process feeds (`config.train.batch_size` is global,
  whatever the number of hosts): process p holds rows [p*L, (p+1)*L), L = global / P.
  Host data pipelines draw the *global* batch's indices from (seed, step) and gather only
  these rows, so every process feeds a distinct slice and the global batch does not depend
  on the number of processes."""
  p, n = jax.process_index(), jax.process_count()
  if global_batch_size % n:
    raise ValueError(f"config.train.batch_size={global_batch_size} is not divisible by the "
                     f"{n} processes")
  local = global_batch_size // n
  return slice(p * local, (p + 1) * local)


def is_primary() -> bool:
  """Process 0 writes summaries, metrics, videos and results and runs evaluations."""
  return jax.process_index() == 0


def shard_batch(batch, mesh: Mesh):
  """Host-local numpy batch (this host's slice) -> global arrays sharded over 'data'."""
  sharding = batch_sharding(mesh)
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)),
                      batch)


def replicate(tree, mesh: Mesh):
  """The same value on every device of the mesh. On several processes each process holds
  an identical host copy (same seed, same checkpoint) and contributes its own devices."""
  sharding = replicated(mesh)
  if jax.process_count() == 1:
    return jax.device_put(tree, sharding)

  def put(x):
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      return jax.random.wrap_key_data(put(jax.random.key_data(x)), impl=jax.random.key_impl(x))
    host = np.asarray(jax.device_get(x))
    return jax.make_array_from_callback(host.shape, sharding, lambda idx: host[idx])

  return jax.tree.map(put, tree)


def to_host(tree):
  """Numpy copies of (replicated) arrays, e.g. parameters for a single-process evaluation."""
  return jax.tree.map(lambda x: np.asarray(jax.device_get(x)), tree)
