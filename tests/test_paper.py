"""The main job's chain with a debug config, through the Colab notebook (so it cannot rot):
FK data -> stage 1 -> scripted demos -> decoupled and normal -> closed-loop evaluation ->
results table; then a rerun skips every finished stage, and experiments/evaluate.py loads a
stage-2 checkpoint."""
import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("robosuite")
nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

from helpers import REPO  # noqa: E402

pytestmark = pytest.mark.sim


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("paper") / "run")
  nb = nbformat.read(os.path.join(REPO, "colab", "quickstart.ipynb"), as_version=4)
  env_cell = nbformat.v4.new_code_cell(
      "import os\n"
      f"os.environ['QUICKSTART_CONFIG'] = 'configs/quickstart.py:debug'\n"
      f"os.environ['QUICKSTART_WORKDIR'] = {workdir!r}\n"
      f"os.environ['QUICKSTART_REPO'] = {REPO!r}\n")
  nb.cells.insert(0, env_cell)
  client = nbclient.NotebookClient(nb, timeout=900, kernel_name="python3",
                                   resources={"metadata": {"path": REPO}})
  client.execute()
  return workdir, nb


def test_notebook_runs_the_chain_and_writes_results(chain):
  workdir, nb = chain
  results = json.load(open(os.path.join(workdir, "results.json")))
  rows = results["rows"]
  assert {(r["task"], r["mode"]) for r in rows} == {("Lift", "normal"), ("Lift", "decoupled")}
  for r in rows:
    assert 0.0 <= r["success_rate"] <= 1.0 and r["episodes"] == 1
    lo, hi = r["ci95"]
    assert 0.0 <= lo <= r["success_rate"] <= hi <= 1.0
    assert r["backbone"] == "dp_mlp"
  by_mode = {r["mode"]: r for r in rows}
  assert by_mode["decoupled"]["trainable_params"] < by_mode["normal"]["trainable_params"]
  assert by_mode["normal"]["trainable_params"] == by_mode["normal"]["total_params"]
  for name in ("results.md", "results.png", "stage1/summary.json", "demos/Lift.hdf5"):
    assert os.path.exists(os.path.join(workdir, name)), name
  # Stage 1 is trained when the first run that freezes it comes up: the normal run (and its
  # record, in a table) finishes before it starts.
  normal_done = os.path.getmtime(os.path.join(workdir, "Lift", "normal", "summary.json"))
  assert normal_done <= min(os.path.getmtime(os.path.join(workdir, "stage1", f))
                            for f in os.listdir(os.path.join(workdir, "stage1")))
  assert any(f.endswith(".mp4") for f in os.listdir(os.path.join(workdir, "Lift", "decoupled", "videos")))
  outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
  assert any(o.get("output_type") == "display_data" and "image/png" in o.get("data", {}) for o in outputs)
  assert not any(o.get("output_type") == "error" for o in outputs)


def test_rerun_skips_finished_stages(chain):
  workdir, _ = chain
  before = os.path.getmtime(os.path.join(workdir, "Lift", "normal", "summary.json"))
  stage1_before = os.path.getmtime(os.path.join(workdir, "stage1", "summary.json"))
  proc = subprocess.run([sys.executable, os.path.join(REPO, "experiments", "paper.py"),
                         "--config=" + os.path.join(REPO, "configs/quickstart.py") + ":debug",
                         f"--workdir={workdir}"], capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "| Lift | decoupled |" in proc.stdout
  assert os.path.getmtime(os.path.join(workdir, "Lift", "normal", "summary.json")) == before
  assert os.path.getmtime(os.path.join(workdir, "stage1", "summary.json")) == stage1_before


def test_evaluate_binary_on_a_stage2_checkpoint(chain, tmp_path):
  workdir, _ = chain
  proc = subprocess.run([sys.executable, os.path.join(REPO, "experiments", "evaluate.py"),
                         f"--checkpoint={os.path.join(workdir, 'Lift', 'decoupled', 'checkpoints')}",
                         "--num_episodes=2", "--num_workers=0", "--max_steps=16", "--num_videos=1",
                         f"--output={tmp_path}"], capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  ev = json.load(open(tmp_path / "eval.json"))
  assert ev["num_episodes"] == 2 and ev["max_steps"] == 16 and len(ev["episodes"]) == 2
  assert ev["videos"] and os.path.exists(ev["videos"][0])


@pytest.mark.slow
@pytest.mark.parametrize("table", ["signal", "backbones", "conditioning", "observations",
                                   "normalization"])
def test_paper_tables_debug(table, tmp_path):
  """Every table of configs/paper_tables.py runs end to end at smoke-test size."""
  proc = subprocess.run([sys.executable, os.path.join(REPO, "experiments", "paper.py"),
                         "--config=" + os.path.join(REPO, "configs/paper_tables.py")
                         + f":table={table},debug", f"--workdir={tmp_path}"],
                        capture_output=True, text=True, timeout=3000)
  assert proc.returncode == 0, proc.stderr[-3000:]
  res = json.load(open(tmp_path / "results.json"))
  assert res["table_name"] == table and res["summary"]
  assert os.path.exists(tmp_path / "results.md")
