"""The LIBERO chain through the one chain driver (pipelines/paper.py with benchmark 'libero'):
demos in the LIBERO venv -> LIBERO stage 1 and the generated-FK stage 1 -> normal, decoupled
and decoupled_fk -> the served LIBERO evaluation; a rerun reuses everything."""
import json
import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
LIBERO_PY = os.environ.get("LIBERO_PYTHON", str(REPO / ".venv-libero" / "bin" / "python"))


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists(LIBERO_PY), reason="no LIBERO venv (make libero-env)")
def test_libero_debug_chain_runs_and_resumes(tmp_path):
  cmd = [sys.executable, str(REPO / "experiments" / "libero_chain.py"),
         "--config=" + str(REPO / "configs" / "libero.py") + ":debug,suites=libero_spatial",
         f"--workdir={tmp_path}", f"--config.demos.libero_python={LIBERO_PY}",
         f"--config.stage2.eval.libero_python={LIBERO_PY}"]
  env = dict(os.environ, MUJOCO_GL="egl")
  first = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3000)
  assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
  results = json.load(open(tmp_path / "results.json"))
  rows = {(r["task"], r["mode"]): r for r in results["rows"]}
  assert set(rows) == {("libero_spatial", m) for m in ("normal", "decoupled", "decoupled_fk")}
  for (task, mode), r in rows.items():
    assert r["episodes"] == 2 and set(r["per_task"]) == {"0", "1"}, r   # 1 episode x 2 tasks
    # the per-episode outcomes beside the run (what a table's record keeps)
    eps = json.load(open(tmp_path / task / mode / "eval.json"))["episodes"]
    assert [e["task_id"] for e in eps] == [0, 1]
    assert sum(e["success"] for e in eps) == sum(t["successes"] for t in r["per_task"].values())
  assert rows[("libero_spatial", "decoupled")]["stage1_eval"]["pos_err_mm"] > 0
  assert results["stage1_fk"]["benchmark"] == "fk" and results["stage1"]["benchmark"] == "libero"
  table = (tmp_path / "results.md").read_text()
  assert "Per task" in table and "Expert (scripted demonstrations)" in table
  # A rerun trains and evaluates nothing: every summary is reused.
  again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
  assert again.returncode == 0, again.stderr[-3000:]
  assert again.stderr.count("reusing") >= 5, again.stderr[-3000:]
