"""What a compiled XLA program costs and where its time goes (docs/performance.md, "What the
profile shows"): FLOPs from XLA's cost analysis, the fp32 GEMM rate and elementwise memory
bandwidth this process reaches (the peaks those FLOPs are compared with), and per-op time of
a `jax.profiler` trace grouped by what each instruction computes."""
import glob
import os
import re
import tempfile

import jax
import jax.numpy as jnp
import numpy as np

from decoupled_jax.perf.timing import best_time


def step_flops(compiled) -> float:
  """FLOPs of one call of a compiled XLA program (XLA's cost analysis)."""
  ca = compiled.cost_analysis()
  if isinstance(ca, (list, tuple)):
    ca = ca[0] if ca else {}
  return float((ca or {}).get("flops", float("nan")))


def gemm_rate(n: int = 2048, reps: int = 5) -> float:
  """FLOP/s of a jitted fp32 n x n x n matmul in this process (best of `reps`): the peak the
  train steps' achieved FLOP/s are compared with."""
  a = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (n, n)), jnp.float32)
  f = jax.jit(lambda x, y: x @ y)
  return 2.0 * n ** 3 / best_time(lambda: f(a, a), reps)


def stream_rate(n: int = 1 << 26, reps: int = 5) -> float:
  """Bytes/s of a jitted a * s + b over float32 arrays of n elements (two reads, one write):
  the memory bandwidth an elementwise pass over parameters gets in this process."""
  a = jnp.ones((n,), jnp.float32)
  b = jnp.ones((n,), jnp.float32)
  f = jax.jit(lambda x, y: x * 1.0001 + y)
  return 3 * 4 * n / best_time(lambda: f(a, b), reps)


def hlo_op_kinds(hlo_text: str) -> dict:
  """{instruction name: kind} for the instructions of a compiled HLO module: 'matmul' where
  the instruction is or fuses a dot/convolution (XLA:CPU fuses epilogues into them), else
  'rng', 'reduce', 'copy/transpose' or 'elementwise' by what its computation contains."""
  comps, cur = {}, None
  for line in hlo_text.splitlines():
    m = re.match(r"^(?:ENTRY )?%?([\w.\-]+) .*\{\s*$", line)
    if m and not line.startswith(" "):
      cur = comps.setdefault(m.group(1), [])
    elif cur is not None and line.startswith("  "):
      cur.append(line)

  def body(name, seen=()):
    lines = list(comps.get(name, ()))
    for ln in comps.get(name, ()):
      for callee in re.findall(r"(?:calls|to_apply)=%([\w.\-]+)", ln):
        if callee not in seen:
          lines += body(callee, seen + (name,))
    return lines

  def kind(lines):
    text = "\n".join(lines)
    if re.search(r" (dot|convolution)\(", text):
      return "matmul"
    if "rng" in text:
      return "rng"
    if re.search(r" reduce(-window)?\(", text):
      return "reduce"
    if all(re.search(r" (parameter|copy|transpose|bitcast|reshape|broadcast|constant|slice|"
                     r"concatenate|dynamic-slice|dynamic-update-slice|tuple|"
                     r"get-tuple-element)\(", ln) for ln in lines):
      return "copy/transpose"
    return "elementwise"

  out = {}
  for comp_lines in comps.values():
    for ln in comp_lines:
      m = re.match(r"\s*(?:ROOT )?%([\w.\-]+) = .*", ln)
      if not m:
        continue
      callees = re.findall(r"calls=%([\w.\-]+)", ln)
      out[m.group(1)] = kind([ln] + sum((body(c) for c in callees), []))
  return out


def op_profile(run, hlo_text: str, top: int = 10) -> dict:
  """Per-op time of `run()` (a few train steps) from a jax.profiler trace: the XLA:CPU
  thunk events summed by instruction name, with each instruction's kind (`hlo_op_kinds`),
  and the totals per kind. Shares are of the summed op time (ops can overlap on 2 cores)."""
  from jax.profiler import ProfileData
  kinds = hlo_op_kinds(hlo_text)
  with tempfile.TemporaryDirectory() as tmp:
    jax.profiler.start_trace(tmp)
    try:
      run()
    finally:
      jax.profiler.stop_trace()
    path = glob.glob(os.path.join(tmp, "**", "*.xplane.pb"), recursive=True)[0]
    data = ProfileData.from_file(path)
  per_op = {}
  for plane in data.planes:
    for line in plane.lines:
      if not line.name.startswith("tf_XLA"):
        continue
      for ev in line.events:
        name = ev.name.split(":")[0]
        if name in kinds and ev.duration_ns > 0:
          per_op[name] = per_op.get(name, 0.0) + ev.duration_ns
  total = max(sum(per_op.values()), 1.0)
  by_kind = {}
  for k, v in per_op.items():
    by_kind[kinds[k]] = by_kind.get(kinds[k], 0.0) + v
  rows = sorted(per_op.items(), key=lambda kv: -kv[1])[:top]
  return {"by_kind": {k: v / total for k, v in sorted(by_kind.items(), key=lambda kv: -kv[1])},
          "top": [{"op": k, "kind": kinds[k], "share": v / total} for k, v in rows],
          "traced_op_ms": total / 1e6}
