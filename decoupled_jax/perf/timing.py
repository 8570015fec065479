"""Wall-clock timers of (jitted) calls; every one waits with `jax.block_until_ready` and
excludes a first warm-up call (compilation)."""
import time

import jax


def timed(fn, reps):
  """Mean seconds of `reps` calls of `fn` after one warm-up call."""
  out = fn()                     # warm-up (compiles)
  jax.block_until_ready(out)
  t0 = time.perf_counter()
  for _ in range(reps):
    out = fn()
  jax.block_until_ready(out)
  return (time.perf_counter() - t0) / reps


def best_time(fn, reps):
  """Fastest of `reps` timed calls of `fn` after one warm-up (for peak rates; `timed` gives
  the mean)."""
  jax.block_until_ready(fn())
  best = float("inf")
  for _ in range(reps):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    best = min(best, time.perf_counter() - t0)
  return best


def time_for(fn, min_seconds):
  """Seconds per call (after one warm call), repeated until min_seconds have passed (and at
  least 3 calls)."""
  jax.block_until_ready(fn())
  n, t0 = 0, time.perf_counter()
  while True:
    jax.block_until_ready(fn())
    n += 1
    dt = time.perf_counter() - t0
    if dt >= min_seconds and n >= 3:
      return dt / n


def compile_timed(jitted, *args):
  """(compiled program, seconds to lower + compile it) of `jitted` for `args`."""
  t0 = time.perf_counter()
  compiled = jitted.lower(*args).compile()
  return compiled, time.perf_counter() - t0
