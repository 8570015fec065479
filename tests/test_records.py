"""Raw run records (pipelines/records.py) and the oracle diagnosis (mode='oracle').

The table command records each finished run in the repository-side record folder; rerun on a
fresh workdir it retrains nothing and rebuilds the same page. The oracle run freezes the
normal run's backbone under a freshly initialised conditioning pathway.
"""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from decoupled_jax.pipelines import records
from helpers import REPO


def _record(**kw):
  base = {"task": "Lift", "mode": "normal", "seed": 0, "backbone": "dp_mlp", "stage1": "none",
          "successes": 3, "episodes": 4, "code_version": "abc", "chain": "c", "fingerprint": "f"}
  return dict(base, **kw)


def test_fingerprint_ignores_paths_and_progress_but_not_settings():
  a = {"stage2": {"data": {"dataset": "/x/Lift.hdf5", "horizon": 16}, "progress": True,
                  "eval": {"num_workers": 2, "num_episodes": 50}}}
  b = {"stage2": {"data": {"dataset": "/y/Lift.hdf5", "horizon": 16}, "progress": False,
                  "eval": {"num_workers": 1, "num_episodes": 50}}}
  c = {"stage2": {"data": {"dataset": "/x/Lift.hdf5", "horizon": 16}, "progress": True,
                  "eval": {"num_workers": 2, "num_episodes": 49}}}
  assert records.fingerprint(a) == records.fingerprint(b)
  assert records.fingerprint(a) != records.fingerprint(c)
  assert len(records.fingerprint(a)) == 16


def test_a_decoupled_arm_fingerprint_covers_its_own_stage1():
  """`decoupled_<arm>` runs freeze the chain's `stage1_<arm>`: a change there is a new run
  (and a change to `config.stage1` is not), as `config.stage1` is for `decoupled`."""
  from decoupled_jax import config_lib
  from decoupled_jax.pipelines import paper
  c = config_lib.from_file(os.path.join(REPO, "configs", "paper_tables.py"),
                           "table=gap,part=libero,debug").chains.libero_spatial_fk_delta
  fp = lambda: paper.run_fingerprint(c, "libero_spatial", "decoupled_fk", 0)
  before = fp()
  c.stage1.train.num_steps += 1
  assert fp() == before
  c.stage1_fk.data.fk.target = "absolute"
  assert fp() != before


# The flat head section every config had before the typed `head.diffusion` / `head.flow`
# sections (the old `heads.head_defaults()` layout): the form committed records hashed.
OLD_FLAT_HEAD = {"type": "diffusion", "num_train_steps": 100,
                 "beta_schedule": "squaredcos_cap_v2", "beta_start": 1e-4, "beta_end": 0.02,
                 "sampler": "ddpm", "num_inference_steps": None, "clip_sample": True,
                 "clip_range": 1.0, "num_noise_samples": 1, "prediction_type": "epsilon",
                 "eta": 0.0, "set_alpha_to_one": True, "steps_offset": 0, "flow_num_steps": 10,
                 "time_scale": 100.0, "flow_clip_sample": False}


@pytest.mark.parametrize("kind,edits", [
    ("diffusion", {}),
    ("diffusion", {"sampler": "ddim", "num_inference_steps": 10, "num_noise_samples": 8}),
    ("flow", {}),
    ("flow", {"flow_num_steps": 4, "sampler": "ddim", "num_inference_steps": 4,
              "clip_range": 2.0, "num_noise_samples": 8, "flow_clip_sample": True}),
])
def test_typed_head_fingerprints_and_builds_as_its_old_flat_form(kind, edits):
  from decoupled_jax import config_lib, heads
  flat = dict(OLD_FLAT_HEAD, type=kind, **edits)
  typed = heads.typed_head_config(flat)
  assert set(typed) == {"type", "diffusion", "flow"}
  assert heads.make_head(typed) == heads.make_head(flat)
  stage = {"stage": "finetune", "seed": 0, "backbone": {"name": "dp_mlp"}}
  assert (records.fingerprint({"stage2": dict(stage, head=typed)}, {"head": typed})
          == records.fingerprint({"stage2": dict(stage, head=flat)}, {"head": flat}))
  assert records._legacy_head({"s": {"head": typed}}) == {"s": {"head": flat}}
  # a config's typed section (config_lib.head_config) hashes as the old defaults did
  c = config_lib.head_config(kind)
  for k, v in edits.items():   # the old flat key's new home
    section = "flow" if k.startswith("flow_") or k == "time_scale" else "diffusion"
    c[section][k[5:] if k.startswith("flow_") else k] = v
    if k in ("clip_range", "num_noise_samples"):   # shared by both heads then
      c.flow[k] = v
  assert records.fingerprint({"head": c.to_dict()}) == records.fingerprint({"head": flat})
  # a setting the run does not use (the other head's shared key) does not change it
  other = "flow" if kind == "diffusion" else "diffusion"
  moved = json.loads(json.dumps(typed))
  moved[other]["num_noise_samples"] = 3
  assert records.fingerprint({"head": moved}) == records.fingerprint({"head": typed})
  moved[kind]["num_noise_samples"] = 3
  assert records.fingerprint({"head": moved}) != records.fingerprint({"head": typed})


def _gap_part(chain: str) -> str:
  """The `table=gap` part that defines a committed record's chain."""
  if chain.startswith("stage1_"):
    return "scaling"
  if chain.startswith("libero_spatial"):
    return "libero"
  return {"oracle": "oracle", "demo_pairs": "data", "paper_width": "width",
          "final": "final"}[chain]


def test_committed_gap_records_match_the_table_configs():
  """docs/results/raw/decoupled_gap/runs.jsonl: each record's fingerprint is the one the
  gap table's config gives that run today, so rerunning the table reuses every record."""
  from decoupled_jax import config_lib
  from decoupled_jax.pipelines import paper
  path = os.path.join(REPO, "docs/results/raw/decoupled_gap/runs.jsonl")
  recs = [json.loads(line) for line in open(path) if line.strip()]
  assert recs
  for r in recs:
    t = config_lib.from_file(os.path.join(REPO, "configs/paper_tables.py"),
                             f"table=gap,part={_gap_part(r['chain'])}")
    fp = paper.run_fingerprint(t.chains[r["chain"]], r["task"], r["mode"], r["seed"])
    assert fp == r["fingerprint"], r["episodes_file"]


def test_committed_signal_records_match_the_table_config():
  """docs/results/raw/signal/runs.jsonl (T3): each record's fingerprint is the one
  `table=signal` gives that run today, so rerunning T3 on a fresh clone skips it."""
  from decoupled_jax import config_lib
  from decoupled_jax.pipelines import paper
  path = os.path.join(REPO, "docs/results/raw/signal/runs.jsonl")
  recs = [json.loads(line) for line in open(path) if line.strip()]
  t = config_lib.from_file(os.path.join(REPO, "configs/paper_tables.py"), "table=signal")
  assert recs and {r["chain"] for r in recs} <= set(t.chains)
  for r in recs:
    assert r["task"] in t.chains[r["chain"]].tasks and r["seed"] in t.chains[r["chain"]].seeds
    fp = paper.run_fingerprint(t.chains[r["chain"]], r["task"], r["mode"], r["seed"])
    assert fp == r["fingerprint"], r["episodes_file"]


def test_gap_libero_part_is_the_libero_preset_with_the_oracle_and_a_16k_stage1():
  """table=gap,part=libero: configs/libero.py's CPU preset on libero_spatial (no FK arm), the
  oracle after normal, the tables' stage-1 length, records beside the other gap parts."""
  from decoupled_jax import config_lib
  t = config_lib.from_file(os.path.join(REPO, "configs/paper_tables.py"), "table=gap,part=libero")
  c = t.chains.libero_spatial
  base = config_lib.from_file(os.path.join(REPO, "configs/libero.py"), "suites=libero_spatial,fk=False")
  assert c.tasks == ("libero_spatial",) and c.modes == ("normal", "decoupled", "oracle")
  assert c.stage1.train.num_steps == 16_000 and base.stage1.train.num_steps == 4000
  assert c.stage2.to_dict() == base.stage2.to_dict()   # stage 2 exactly the LIBERO table's
  assert t.record_dir.endswith(os.path.join("raw", "decoupled_gap"))


def test_each_benchmark_names_the_demos_folder_its_chains_share():
  """A table's chains share `workdir/<folder>` when their demonstrations are the same files;
  each benchmark says which of its chains' demos differ (robosuite and ALOHA: images,
  LIBERO: cameras), so a low-dim and an image chain never overwrite each other's."""
  from decoupled_jax import benchmarks, config_lib
  def folder(path, arg=None):
    c = config_lib.from_file(os.path.join(REPO, path), arg)
    return benchmarks.stage2(c.stage2).chain_demos_folder(c)
  assert folder("configs/quickstart.py") == "demos"
  t = config_lib.from_file(os.path.join(REPO, "configs/paper_tables.py"), "table=observations")
  assert {benchmarks.stage2(c.stage2).chain_demos_folder(c) for c in t.chains.values()} >= {
      "demos_images"}
  assert folder("configs/libero.py") == "demos"
  assert folder("configs/libero.py", "images") == "demos_images"
  assert folder("configs/aloha.py") == "demos"
  assert folder("configs/aloha.py", "obs=image") == "demos_images"


def test_chains_asking_for_different_demonstrations_get_different_folders():
  """A table whose chains of one benchmark folder differ in their `demos` config (here
  part=libero's 20- and 50-demo chains) gives each its own folder named by the differing value;
  chains that ask for the same demonstrations share one, and a table whose chains all agree
  keeps the benchmark's plain folder name."""
  from decoupled_jax import config_lib
  from decoupled_jax.pipelines import paper
  t = config_lib.from_file(os.path.join(REPO, "configs/paper_tables.py"), "table=gap,part=libero")
  f = paper.demos_folders(t)
  assert f["libero_spatial"] == f["libero_spatial_s1_both"] == "demos_num_demos=20"
  assert f["libero_spatial_50demos"] == "demos_num_demos=50"
  assert set(f) == set(t.chains)
  t.chains.libero_spatial_s1_both.demos.num_workers = 7   # how they are made: not what they are
  assert paper.demos_folders(t) == f
  del t.chains["libero_spatial_50demos"]
  assert set(paper.demos_folders(t).values()) == {"demos"}
  t = config_lib.from_file(os.path.join(REPO, "configs/paper_tables.py"), "table=observations")
  assert set(paper.demos_folders(t).values()) == {"demos_images"}


def test_committed_aloha_records_match_the_config():
  """docs/results/raw/aloha/runs.jsonl: each record's fingerprint is the one configs/aloha.py
  gives that run today, so `paper.py --config=configs/aloha.py` on a fresh clone reuses every
  record (and retrains nothing)."""
  from decoupled_jax import config_lib
  from decoupled_jax.pipelines import paper
  path = os.path.join(REPO, "docs/results/raw/aloha/runs.jsonl")
  recs = [json.loads(line) for line in open(path) if line.strip()]
  assert {(r["task"], r["mode"]) for r in recs} == {
      (t, m) for t in ("transfer_cube", "insertion") for m in ("normal", "decoupled")}
  c = config_lib.from_file(os.path.join(REPO, "configs/aloha.py"))
  for r in recs:
    assert r["episodes"] == 50 and r["seed"] in c.seeds
    fp = paper.run_fingerprint(c, r["task"], r["mode"], r["seed"])
    assert fp == r["fingerprint"], r["episodes_file"]


def test_records_append_find_and_episode_files(tmp_path):
  recs = records.RunRecords(str(tmp_path / "t"))
  assert recs.all() == [] and recs.find("c", "Lift", "normal", 0, "f") is None
  eps = [{"seed": 100000 + i, "success": i < 3, "length": 10 + i} for i in range(4)]
  recs.append(_record(), eps)
  recs.append(_record(mode="decoupled", fingerprint="g", successes=2), None)
  assert recs.find("c", "Lift", "normal", 0, "f")["successes"] == 3
  assert recs.find("c", "Lift", "normal", 0, "other") is None      # settings changed: rerun
  assert recs.find("c", "Lift", "normal", 42, "f") is None
  rec = recs.find("c", "Lift", "normal", 0, "f")
  lines = open(tmp_path / "t" / rec["episodes_file"]).read().splitlines()
  assert [json.loads(l) for l in lines] == eps
  with pytest.raises(ValueError, match="lacks"):
    recs.append({"task": "Lift"})
  with open(recs.path, "a") as f:
    f.write("{torn\n")
  with pytest.raises(ValueError, match="runs.jsonl:3"):
    recs.all()


def test_code_version_names_a_commit():
  v = records.code_version()
  assert v == "unknown" or len(v.split("-")[0]) >= 7


def test_records_written_into_the_checkout_do_not_make_its_version_dirty(tmp_path):
  """A table writes its records into the checkout it runs from: those are results, not code.
  Any other tracked change still marks the version '-dirty'."""
  import subprocess
  def git(*args):
    subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)
  raw = tmp_path / records.RAW_ROOT / "t"
  raw.mkdir(parents=True)
  (raw / "runs.jsonl").write_text("{}\n")
  (tmp_path / "code.py").write_text("x = 1\n")
  git("init", "-q")
  git("add", ".")
  git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "c")
  clean = records.describe(str(tmp_path / records.RAW_ROOT))
  assert clean and not clean.endswith("-dirty")
  (raw / "runs.jsonl").write_text("{}\n{}\n")
  (raw / "new_episodes.jsonl").write_text("{}\n")
  assert records.describe(str(tmp_path / records.RAW_ROOT)) == clean
  (tmp_path / "code.py").write_text("x = 2\n")
  assert records.describe(str(tmp_path / records.RAW_ROOT)) == clean + "-dirty"


@pytest.mark.sim
def test_oracle_table_records_and_resumes_from_records_alone(tmp_path):
  """normal -> decoupled -> oracle at debug size, recorded; then a fresh workdir reruns
  nothing and writes the same page. The oracle froze exactly the normal run's
  non-conditioning backbone leaves and trained a fresh conditioning pathway."""
  pytest.importorskip("robosuite")
  from decoupled_jax.backbones import expert_interface
  from decoupled_jax.backbones.paths import matches_any
  from decoupled_jax.training import checkpoint as ckpt_lib
  from decoupled_jax.training.partition import flatten
  from decoupled_jax.training.policy import policy_from_config
  import ml_collections

  rec_dir, work = tmp_path / "raw", tmp_path / "w"
  cmd = [sys.executable, os.path.join(REPO, "experiments", "paper.py"),
         "--config=" + os.path.join(REPO, "configs", "paper_tables.py")
         + f":table=gap,part=oracle,debug,record_dir={rec_dir}", f"--workdir={work}"]
  proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  recs = records.RunRecords(str(rec_dir)).all()
  assert [(r["chain"], r["task"], r["mode"]) for r in recs] == [
      ("oracle", "PickPlaceCan", m) for m in ("normal", "decoupled", "oracle")]
  for r in recs:
    for k in records.REQUIRED:
      assert k in r, k
    assert r["table"] == "gap" and os.path.exists(rec_dir / r["episodes_file"])
    curve = [json.loads(l) for l in open(rec_dir / r["metrics_file"])]
    assert any("loss" in row for row in curve) and r["last_loss"] > 0
  by_mode = {r["mode"]: r for r in recs}
  assert by_mode["oracle"]["trainable_params"] == by_mode["decoupled"]["trainable_params"]
  assert by_mode["oracle"]["trainable_params"] < by_mode["normal"]["trainable_params"]

  # The oracle's frozen leaves are the normal run's; its conditioning pathway is its own.
  run = work / "oracle" / "PickPlaceCan"
  normal, _ = ckpt_lib.load_inference_params(str(run / "normal" / "checkpoints"))
  oracle, meta = ckpt_lib.load_inference_params(str(run / "oracle" / "checkpoints"))
  summary = json.load(open(run / "oracle" / "summary.json"))
  policy = policy_from_config(ml_collections.ConfigDict(meta["config"]), meta["image_keys"],
                              meta["lowdim_keys"])
  patterns = expert_interface(policy.backbone).conditioning_patterns
  fn, fo = flatten(normal), flatten(oracle)
  backbone = [p for p in fn if p.startswith("backbone/")]
  cond = [p for p in backbone if matches_any(p[len("backbone/"):], patterns)]
  frozen = [p for p in backbone if p not in cond]
  assert cond and frozen
  assert summary["loaded"] == {"copied": len(frozen), "fresh": len(cond)}
  for p in frozen:
    np.testing.assert_allclose(fo[p], fn[p], rtol=1e-6, atol=1e-7, err_msg=p)
  assert any(not np.allclose(fo[p], fn[p]) for p in cond)

  # Fresh workdir, same records: nothing is trained or generated, the page is identical.
  page = (work / "results.md").read_text()
  shutil.rmtree(work)
  proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert (work / "results.md").read_text() == page
  assert not (work / "oracle" / "PickPlaceCan").exists() and not (work / "demos").exists()
  assert not (work / "oracle" / "stage1").exists()
  assert len(records.RunRecords(str(rec_dir)).all()) == 3
  # The summary a results page quotes is rebuilt from the records alone.
  table = records.summary_markdown(records.RunRecords(str(rec_dir)).all())
  assert table.count("| oracle | PickPlaceCan |") == 3


def test_stage1_checkpoint_keeps_refusing_a_finetune_checkpoint_and_oracle_is_named(tmp_path):
  from decoupled_jax import config_lib
  from decoupled_jax.errors import ConfigError
  c = config_lib.finetune_config(mode="oracle")
  c.data.dataset = str(tmp_path)
  with pytest.raises(ConfigError, match="oracle_checkpoint"):
    config_lib.validate(c)
  c.mode, c.oracle_checkpoint = "decoupled", str(tmp_path)
  c.stage1_checkpoint = str(tmp_path)
  with pytest.raises(ConfigError, match="oracle_checkpoint.*only used by mode='oracle'"):
    config_lib.validate(c)


def test_stage1_scaling_plot_pools_the_records(tmp_path):
  """pipelines/scaling.py (experiments/plot_stage1_scaling.py) groups the decoupled runs of the
  scaling chains by stage-1 length, pools seeds (Wilson), carries the FK error, and plots."""
  from decoupled_jax.pipelines import scaling as mod

  def rec(chain, mode, seed, k, steps=None, fk=None):
    return {"chain": chain, "task": "PickPlaceCan", "mode": mode, "seed": seed, "successes": k,
            "episodes": 50, "code_version": "x", "stage1_steps": steps,
            "stage1_eval": {"pos_err_mm": fk, "rot_err_deg": 1.0} if fk else None}
  recs = [rec("oracle", "normal", 0, 17), rec("oracle", "decoupled", 0, 10, 4000, 116.0),
          rec("oracle", "oracle", 0, 15), rec("oracle", "decoupled", 42, 12, 4000, 116.0),
          rec("stage1_16k", "decoupled", 0, 25, 16000, 77.0),
          rec("demo_pairs", "decoupled", 0, 3, 4000, 200.0),     # another study: left out
          dict(rec("stage1_16k", "decoupled", 1, 40, 16000, 77.0), task="Lift")]
  points, normal = mod.scaling_points(recs, "PickPlaceCan")
  assert list(points) == [4000, 16000]
  assert (points[4000]["successes"], points[4000]["episodes"]) == (22, 100)
  assert points[4000]["fk_mm"] == 116.0 and points[16000]["rate"] == 0.5
  assert normal["successes"] == 17 and normal["episodes"] == 50
  table = mod.markdown(points, normal)
  assert "| 4,000 | 116.0 / 1.00 | 2 | 22 / 100 | 22.0% |" in table
  mod.plot(points, normal, "PickPlaceCan", str(tmp_path / "s.png"))
  assert os.path.getsize(tmp_path / "s.png") > 1000
  out = subprocess.run([sys.executable, os.path.join(REPO, "experiments", "plot_stage1_scaling.py"),
                        f"--output={tmp_path / 'b.png'}"], capture_output=True, text=True,
                       cwd=REPO, timeout=300)
  assert out.returncode == 0 and "| 64,000 |" in out.stdout, out.stderr[-2000:]


def test_simulator_venv_paths_stay_out_of_the_fingerprint():
  """Where the ALOHA / LIBERO interpreter lives differs between machines and worktrees; a
  record made with an explicit path must match the table run with the default ''."""
  from decoupled_jax import config_lib
  from decoupled_jax.pipelines import paper
  base = config_lib.from_file(os.path.join(REPO, "configs/aloha.py"))
  moved = config_lib.from_file(os.path.join(REPO, "configs/aloha.py"))
  moved.demos.aloha_python = moved.stage2.eval.aloha_python = "/elsewhere/bin/python"
  for mode in ("normal", "decoupled"):
    assert paper.run_fingerprint(base, "insertion", mode, 0) == \
        paper.run_fingerprint(moved, "insertion", mode, 0)
  moved.stage2.train.num_steps += 1                       # a value that changes the result
  assert paper.run_fingerprint(base, "insertion", "normal", 0) != \
      paper.run_fingerprint(moved, "insertion", "normal", 0)


def test_stage1_description_names_what_each_benchmark_pretrains_on():
  """A LIBERO stage 1 (demonstration state -> delta action) is not described as generated FK."""
  from decoupled_jax import benchmarks
  ev = {"eval": {"pos_err_mm": 5.6, "baseline_pos_err_mm": 37.8}}
  libero = benchmarks.get("pretrain", "libero").describe(
      {"benchmark": "libero", "data": {"signal": "eepose"}, "train": {"num_steps": 16}}, ev)
  fk = benchmarks.get("pretrain", "fk").describe(
      {"benchmark": "fk", "data": {"signal": "jp"}, "train": {"num_steps": 16}}, ev)
  assert libero.startswith("LIBERO demonstrations") and "delta-action error 5.6" in libero
  assert fk.startswith("generated Panda FK") and "held-out FK 5.6 mm" in fk


def test_a_libero_stage1_reads_the_suites_stage1_suites_names(monkeypatch, tmp_path):
  """`stage1_suites` (LIBERO chains): the chain generates those suites' demonstrations and its
  stage 1 reads all of them while stage 2 stays on the chain's suite; the fingerprint of a
  decoupled run changes with it and no other run's does (part=libero's records still match);
  a robosuite stage 1 on demonstrations reads the first task's and refuses the key."""
  from decoupled_jax import config_lib
  from decoupled_jax.benchmarks import libero as libero_bench
  from decoupled_jax.pipelines import paper
  t = config_lib.from_file(os.path.join(REPO, "configs/paper_tables.py"), "table=gap,part=libero")
  one, both = t.chains.libero_spatial, t.chains.libero_spatial_s1_both
  assert both.modes == ("decoupled",) and both.tasks == ("libero_spatial",)
  assert both.stage1.to_dict() == one.stage1.to_dict()
  assert both.stage2.to_dict() == one.stage2.to_dict()
  assert paper.stage1_tasks(one) == ("libero_spatial",)
  assert paper.stage1_tasks(both) == ("libero_spatial", "libero_object")
  fp = lambda c, m: paper.run_fingerprint(c, "libero_spatial", m, 0)
  assert fp(both, "normal") == fp(one, "normal") and fp(both, "decoupled") != fp(one, "decoupled")
  with_fk = config_lib.from_file(os.path.join(REPO, "configs/libero.py"),
                                 "suites=libero_spatial,stage1_suites=libero_spatial+libero_object")
  assert paper.stage1_tasks(with_fk, "fk") == ("libero_spatial",)   # its FK arm: no demos
  assert paper.stage1_tasks(with_fk) == ("libero_spatial", "libero_object")

  calls = {}

  def demos(self, chain, demos_dir, suites):
    calls["demos"] = list(suites)
    return {s: {"output": str(tmp_path / "demos"), "tasks": []} for s in suites}

  def stage1(config, workdir, arm="", dataset=""):
    c = paper.stage1_run_config(config, arm, dataset)   # what run_stage1 trains
    calls["stage1"] = tuple(c.data.suites)
    calls["described"] = libero_bench.LiberoPairs().describe(c, None)
    raise KeyboardInterrupt   # stop the chain before any training

  monkeypatch.setattr(libero_bench.LiberoSuite, "chain_demos", demos)
  monkeypatch.setattr(paper, "run_stage1", stage1)
  with pytest.raises(KeyboardInterrupt):
    paper._chain(both, str(tmp_path / "chain"))
  assert calls.pop("described").startswith(
      "LIBERO demonstrations of libero_spatial + libero_object (state -> delta action)")
  assert calls == {"demos": ["libero_spatial", "libero_object"],
                   "stage1": ("libero_spatial", "libero_object")}

  can = config_lib.from_file(os.path.join(REPO, "configs/paper_tables.py"), "table=gap,part=data")
  pairs = can.chains.demo_pairs
  assert paper.stage1_tasks(pairs) == ("PickPlaceCan",)
  pairs.stage1_suites = ("PickPlaceCan", "Lift")
  with pytest.raises(config_lib.ConfigError, match="stage1_suites"):
    paper.stage1_tasks(pairs)


def test_committed_stage1_descriptions_are_what_describe_gives_today():
  """Every committed record of a stage 1 the chain trained (gap and T3 tables) carries the line
  its benchmark's `describe` gives for that chain's stage-1 run config and evaluation."""
  from decoupled_jax import benchmarks, config_lib
  from decoupled_jax.pipelines import paper
  n = 0
  for table in ("decoupled_gap", "signal"):
    for line in open(os.path.join(REPO, "docs/results/raw", table, "runs.jsonl")):
      r = json.loads(line)
      if (paper.stage1_arm(r["mode"]) is None or not r.get("stage1_eval")
          or (r.get("stage1_name") or "").startswith("pretrained:")):
        continue
      arg = "table=signal"
      if table == "decoupled_gap":
        arg = "table=gap,part=" + _gap_part(r["chain"])
      t = config_lib.from_file(os.path.join(REPO, "configs/paper_tables.py"), arg)
      c = paper.stage1_run_config(t.chains[r["chain"]], paper.stage1_arm(r["mode"]))
      assert benchmarks.stage1(c).describe(c, {"eval": r["stage1_eval"]}) == r["stage1"], r["chain"]
      n += 1
  assert n >= 20   # the FK, demo-pairs and LIBERO stage 1s of both tables
