"""The package layers of docs/architecture.md hold: no import from a lower layer to a higher one,
no import cycle between packages, every module imports on its own, and the library launches its
binaries as modules (`python -m`), never a file of experiments/ by path; the LIBERO side and
`util` import no jax.

The layer table is parsed from docs/architecture.md (its one source). Imports are read with
`ast` from every .py file under decoupled_jax/, module-level and function-local alike, relative
imports resolved.
"""
import ast
import collections
import json
import os
import pathlib
import re
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
PKG = REPO / "decoupled_jax"
DOC = REPO / "docs" / "architecture.md"
ROOT = "decoupled_jax"            # the root __init__.py, as the table names it
_ROW = re.compile(r"^\|\s*(\d+)\s*\|\s*`([A-Za-z_][\w]*)`\s*\|")


def layers_from_doc(text: str) -> dict:
  """{package: layer} from the rows `| <layer> | `<package>` | ... |` of the Layers section."""
  section = text.split("## Layers", 1)[1].split("\n## ", 1)[0]
  layers = {}
  for line in section.splitlines():
    m = _ROW.match(line.strip())
    if m:
      assert m.group(2) not in layers, f"docs/architecture.md lists {m.group(2)} twice"
      layers[m.group(2)] = int(m.group(1))
  return layers


def _module_name(path: pathlib.Path) -> tuple[str, bool]:
  rel = path.relative_to(REPO).with_suffix("")
  parts = list(rel.parts)
  is_pkg = parts[-1] == "__init__"
  if is_pkg:
    parts = parts[:-1]
  return ".".join(parts), is_pkg


def source_files() -> list[pathlib.Path]:
  return sorted(p for p in PKG.rglob("*.py") if "__pycache__" not in p.parts)


def package_of(module: str) -> str:
  parts = module.split(".")
  return ROOT if len(parts) == 1 else parts[1]


def _exists(module: str) -> bool:
  path = REPO / module.replace(".", os.sep)
  return path.is_dir() or path.with_suffix(".py").is_file()


def imports_of(path: pathlib.Path):
  """Yields (lineno, imported decoupled_jax module) for every import in `path`."""
  module, is_pkg = _module_name(path)
  yield from _imports(ast.parse(path.read_text(), str(path)), module, is_pkg)


def _imports(tree, module: str, is_pkg: bool):
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      for a in node.names:
        if a.name == ROOT or a.name.startswith(ROOT + "."):
          yield node.lineno, a.name
    elif isinstance(node, ast.ImportFrom):
      if node.level:
        base = module.split(".") if is_pkg else module.split(".")[:-1]
        base = base[:len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
      else:
        target = node.module or ""
      if not (target == ROOT or target.startswith(ROOT + ".")):
        continue
      for a in node.names:   # `from decoupled_jax import training` imports the package
        sub = f"{target}.{a.name}"
        yield node.lineno, sub if a.name != "*" and _exists(sub) else target


def import_edges():
  """[(importing package, imported package, 'file:line', imported module)] across packages."""
  edges = []
  for path in source_files():
    src = package_of(_module_name(path)[0])
    for line, target in imports_of(path):
      dst = package_of(target)
      if dst != src:
        edges.append((src, dst, f"{path.relative_to(REPO)}:{line}", target))
  return edges


def layer_violations(edges, layers) -> list[str]:
  bad = []
  for src, dst, where, target in edges:
    for p in (src, dst):
      if p not in layers:
        bad.append(f"{where}: package {p!r} is not in the layer table of docs/architecture.md "
                   f"(add a row for it)")
    if src in layers and dst in layers and layers[dst] > layers[src]:
      bad.append(f"{where}: {src} (layer {layers[src]}) imports {target} "
                 f"({dst}, layer {layers[dst]}): upward import")
  return sorted(set(bad))


def package_cycles(edges) -> list[str]:
  """The strongly connected components with more than one package, each with its edges."""
  graph = collections.defaultdict(set)
  for src, dst, _, _ in edges:
    graph[src].add(dst)
  index, low, stack, on_stack, comps = {}, {}, [], set(), []

  def visit(v):   # Tarjan
    index[v] = low[v] = len(index)
    stack.append(v)
    on_stack.add(v)
    for w in sorted(graph[v]):
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on_stack:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      comp = set()
      while True:
        w = stack.pop()
        on_stack.discard(w)
        comp.add(w)
        if w == v:
          break
      if len(comp) > 1:
        comps.append(comp)

  for v in sorted(graph):
    if v not in index:
      visit(v)
  out = []
  for comp in comps:   # one shortest cycle through the component's first package, edge by edge
    start = min(comp)
    prev, queue = {}, collections.deque([start])
    while queue and start not in prev:
      v = queue.popleft()
      for w in sorted(graph[v] & comp):
        if w not in prev:
          prev[w] = v
          queue.append(w)
    path, v = [start], start
    while True:
      v = prev[v]
      path.append(v)
      if v == start:
        break
    path.reverse()
    steps = [next(f"{w} ({s} -> {d}: {t})" for s, d, w, t in sorted(edges)
                  if s == a and d == b) for a, b in zip(path, path[1:])]
    out.append(f"import cycle between packages {sorted(comp)}: " + "; ".join(steps))
  return out


# ------------------------------------------------------------------------------ the tests
def test_layer_table_lists_every_package():
  layers = layers_from_doc(DOC.read_text())
  assert layers, "docs/architecture.md has no layer table under '## Layers'"
  present = {ROOT} | {package_of(_module_name(p)[0]) for p in source_files()}
  assert not present - set(layers), (f"packages missing from the layer table of "
                                     f"docs/architecture.md: {sorted(present - set(layers))}")
  assert not set(layers) - present, (f"docs/architecture.md lists packages that do not "
                                     f"exist: {sorted(set(layers) - present)}")


def test_root_package_imports_nothing():
  tree = ast.parse((PKG / "__init__.py").read_text())
  found = [f"decoupled_jax/__init__.py:{n.lineno}" for n in ast.walk(tree)
           if isinstance(n, (ast.Import, ast.ImportFrom))]
  assert not found, f"the root package must stay import-free: {found}"


def test_no_upward_import_and_no_cycle():
  edges = import_edges()
  problems = layer_violations(edges, layers_from_doc(DOC.read_text())) + package_cycles(edges)
  assert not problems, "\n".join(problems)


def test_the_checks_catch_an_upward_import_and_a_cycle():
  layers = {"a": 0, "b": 1, "c": 1}
  edges = [("b", "a", "x.py:1", "decoupled_jax.a"), ("a", "b", "y.py:7", "decoupled_jax.b.m"),
           ("b", "c", "z.py:2", "decoupled_jax.c"), ("c", "b", "w.py:3", "decoupled_jax.b")]
  bad = layer_violations(edges, layers)
  assert bad == ["y.py:7: a (layer 0) imports decoupled_jax.b.m (b, layer 1): upward import"]
  cycles = package_cycles(edges)
  assert cycles == ["import cycle between packages ['a', 'b', 'c']: y.py:7 (a -> b: "
                    "decoupled_jax.b.m); x.py:1 (b -> a: decoupled_jax.a)"]
  assert "not in the layer table" in layer_violations([("d", "a", "v.py:4", "x")], layers)[0]


JAX_STACK = ("jax", "jaxlib", "flax", "optax", "orbax", "chex", "ml_collections", "tensorflow",
             "tensorflow_datasets")


@pytest.mark.parametrize("side", ["libero", "aloha"])
def test_simulator_sides_and_util_import_no_jax(side):
  """`decoupled_jax/libero/` and `decoupled_jax/aloha/` run in their simulators' venvs (no jax
  there) and use `util` and `sim_client`; these (and `errors`) import neither the jax stack
  nor other decoupled_jax packages."""
  bad = []
  files = sorted((PKG / side).glob("*.py")) + [PKG / "util.py", PKG / "errors.py",
                                               PKG / "sim_client.py"]
  for path in files:
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
      names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
               [node.module] if isinstance(node, ast.ImportFrom) and not node.level else [])
      bad += [f"{path.relative_to(REPO)}:{node.lineno}: imports {name}" for name in names
              if name.split(".")[0] in JAX_STACK]
    bad += [f"{path.relative_to(REPO)}:{line}: imports {target}"
            for line, target in imports_of(path)
            if package_of(target) not in (side, "util", "errors", "sim_client", ROOT)]
  assert not bad, "\n".join(bad)


def test_imports_are_resolved():
  src = ("import os\nfrom ..training import policy\nfrom . import flow\n"
         "def f():\n  from decoupled_jax import util, heads\n  import decoupled_jax.data.rotation\n"
         "  from decoupled_jax.kinematics import SIGNALS\n")
  found = sorted(_imports(ast.parse(src), "decoupled_jax.heads.probe", False))
  assert found == [(2, "decoupled_jax.training.policy"), (3, "decoupled_jax.heads.flow"),
                   (5, "decoupled_jax.heads"), (5, "decoupled_jax.util"),
                   (6, "decoupled_jax.data.rotation"), (7, "decoupled_jax.kinematics")]
  # in a package's __init__, `from . import x` is relative to the package itself
  assert list(_imports(ast.parse("from . import robot\n"), "decoupled_jax.kinematics", True)) \
      == [(1, "decoupled_jax.kinematics.robot")]


# A third-party package the optional simulators need; a module whose import fails only on one
# of these is reported as skipped, not failed (robosuite and mujoco are in the main venv).
OPTIONAL = ("libero", "robosuite", "openpi_client", "torch")

_ISOLATION = r"""
import importlib, json, sys, traceback
names, optional = json.loads(sys.argv[1]), tuple(json.loads(sys.argv[2]))
out = {"failed": {}, "skipped": {}}
for name in names:
  for m in [m for m in sys.modules if m == "decoupled_jax" or m.startswith("decoupled_jax.")]:
    del sys.modules[m]
  try:
    importlib.import_module(name)
  except ModuleNotFoundError as e:
    top = (e.name or "").split(".")[0]
    if top in optional:
      out["skipped"][name] = f"needs {e.name}"
    else:
      out["failed"][name] = traceback.format_exc(limit=-3)
  except BaseException:
    out["failed"][name] = traceback.format_exc(limit=-3)
print("RESULT " + json.dumps(out))
"""


def all_modules() -> list[str]:
  names = []
  for path in source_files():
    name, _ = _module_name(path)
    names.append(name)
  return sorted(set(names))


def test_every_module_imports_in_isolation():
  names = all_modules()
  env = dict(os.environ, JAX_PLATFORMS="cpu", MUJOCO_GL=os.environ.get("MUJOCO_GL", "egl"),
             PYTHONPATH=os.pathsep.join(filter(None, (str(REPO), os.environ.get("PYTHONPATH")))))
  proc = subprocess.run([sys.executable, "-c", _ISOLATION, json.dumps(names),
                         json.dumps(OPTIONAL)], capture_output=True, text=True, cwd=str(REPO),
                        env=env, timeout=300)
  lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
  assert proc.returncode == 0 and lines, proc.stdout[-3000:] + proc.stderr[-3000:]
  out = json.loads(lines[-1][len("RESULT "):])
  for name, why in sorted(out["skipped"].items()):
    print(f"skipped {name}: {why}")
  assert not out["failed"], "\n".join(f"{n}:\n{tb}" for n, tb in sorted(out["failed"].items()))


def test_library_launches_no_experiments_file_by_path():
  """`os.path.join(..., "experiments", ...)` or a literal 'experiments/<x>.py' in a command
  list: the library runs its binaries as `python -m decoupled_jax.<module>`."""
  bad = []
  for path in source_files():
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
      if isinstance(node, ast.Call) and ast.unparse(node.func).endswith("path.join") and any(
          isinstance(a, ast.Constant) and a.value == "experiments" for a in node.args):
        bad.append(f"{path.relative_to(REPO)}:{node.lineno}: {ast.unparse(node)}")
      elif isinstance(node, (ast.List, ast.Tuple)) and any(
          isinstance(e, ast.Constant) and isinstance(e.value, str) and
          re.fullmatch(r"(.*/)?experiments/\w+\.py", e.value) for e in node.elts):
        bad.append(f"{path.relative_to(REPO)}:{node.lineno}: {ast.unparse(node)[:120]}")
  assert not bad, "run library binaries with `python -m`:\n" + "\n".join(bad)


@pytest.mark.parametrize("module,args,named", [
    ("decoupled_jax.libero.eval_main", ["--suite=libero_99"], "libero_99"),
    ("decoupled_jax.libero.demos_main", ["--suite=libero_object", "--tasks=0+12"], "12"),
])
def test_libero_binaries_run_as_modules(tmp_path, module, args, named):
  """What pipelines launch in the LIBERO venv; flag checks run before libero is imported, so
  the main venv runs them too. The repository root comes through PYTHONPATH alone."""
  env = dict(os.environ, PYTHONPATH=str(REPO))
  proc = subprocess.run([sys.executable, "-m", module, *args, f"--out_dir={tmp_path}"],
                        capture_output=True, text=True, cwd=str(tmp_path), env=env, timeout=120)
  assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
  errors = [l for l in proc.stderr.splitlines() if l.startswith("error: ")]
  assert len(errors) == 1 and named in errors[0], proc.stderr[-2000:]
