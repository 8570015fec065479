"""LIBERO (docs/libero.md; method spec §1.4, §4.2, §6, §7.2): stage 1 from demonstration pairs
"end-effector state -> delta action", stage 2 on a suite's demonstrations with the
instruction as a condition, evaluated through the policy server by the LIBERO runner.

Stages (`config.stage`, built by `run.STAGE_BUILDERS`):
  'libero_pretrain'  observation-free: condition = the 16-frame window of the end-effector
                     state [pos(3), rot6d(axis-angle)(6), finger(1)] (signal 'eepose'; 'none'
                     = zeros), target = the same frames' delta actions as [dpos, rot6d, grip].
  'libero_finetune'  normal / decoupled / random_frozen on `config.data.suite`'s demos: low-dim
                     state, privileged object poses and/or the two cameras, plus the
                     instruction one-hot (`data/libero.py`).
Normalisation (§6): action positions by the fixed delta-action range [-1, 1] (the controller's
input range; `config.data.position_box`) in both stages, so the frozen backbone sees one
action scale; state positions, finger and object poses by data limits; rotations raw.

Evaluation: the trained policy is served in-process (`serving.server.PolicyServer`, port 0)
and `experiments/libero_eval.py` runs in the LIBERO venv (`config.eval.libero_python`)
against it; its per-task results land in `<workdir>/libero_eval/`.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import time

import jax
import jax.numpy as jnp
import numpy as np

from decoupled_jax.backbones import expert_interface
from decoupled_jax.data import libero as libero_data
from decoupled_jax.data import rotation
from decoupled_jax.data.episodes import EpisodeData
from decoupled_jax.data.normalizer import FieldStats, LimitsNormalizer
from decoupled_jax.data.windows import prepare_policy_dataset
from decoupled_jax.errors import ConfigError
from decoupled_jax.heads import make_head
from decoupled_jax.libero import suites
from decoupled_jax.pipelines import common, finetune
from decoupled_jax.pipelines.pretrain import COND_KEY, mean_pose_baseline, pose_errors
from decoupled_jax.training import sharding
from decoupled_jax.training.policy import ACTION_DIM, make_sample_fn, policy_from_config
from decoupled_jax.training.stage import Stage

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DELTA_POS_M = 0.05        # metres per unit of LIBERO's delta position action (OSC output_max)
STATE_KEYS = ("robot0_eef_pos", "robot0_eef_axis_angle", "robot0_gripper_qpos")
DATA_LIMIT_KEYS = ("robot0_eef_pos", "robot0_gripper_qpos", "object_poses", "robot0_joint_pos")
ACTION_LAYOUT = ("LIBERO delta OSC_POSE actions [dpos(3), d-axis-angle(3), gripper(1)] in "
                 "[-1, 1]")


def _action_stats(box) -> FieldStats:
  lo, hi = (np.asarray(b, np.float32) for b in box)
  return FieldStats.create(lo, hi, dims=slice(0, 3))


# ------------------------------------------------------------------------------ stage 1
def state_action_pairs(data: EpisodeData, signal: str) -> EpisodeData:
  """(cond (N, 10), target (N, 10)) per frame from a suite's episodes (spec §1.4)."""
  f = data.fields
  rot = rotation.axis_angle_to_rot6d(f["robot0_eef_axis_angle"].astype(np.float64))
  state = np.concatenate([f["robot0_eef_pos"], rot, f["robot0_gripper_qpos"][:, :1]], -1)
  cond = state.astype(np.float32) if signal == "eepose" else np.zeros_like(state, np.float32)
  target = rotation.env_action_to_model(f["actions"].astype(np.float64)).astype(np.float32)
  return EpisodeData({"cond": cond, "target": target}, data.episode_ends, source=data.source,
                     attrs=dict(data.attrs))


def load_stage1_pairs(config) -> tuple[EpisodeData, EpisodeData]:
  """(train, held-out) pairs over every suite in `config.data.suites`; the last
  `eval.holdout_fraction` of each suite's episodes are held out."""
  parts_train, parts_eval = [], []
  for suite in config.data.suites:
    data = libero_data.load_suite(config.data.dataset, suite, STATE_KEYS)
    pairs = state_action_pairs(data, config.data.signal)
    n = pairs.num_episodes
    k = max(1, int(round(n * float(config.eval.holdout_fraction)))) if n > 1 else 0
    parts_train.append(_episodes(pairs, 0, n - k))
    if k:
      parts_eval.append(_episodes(pairs, n - k, n))
  return _concat(parts_train), (_concat(parts_eval) if parts_eval else None)


def _episodes(data: EpisodeData, a: int, b: int) -> EpisodeData:
  starts = data.episode_starts
  lo, hi = int(starts[a]), int(data.episode_ends[b - 1])
  return EpisodeData({k: v[lo:hi] for k, v in data.fields.items()},
                     data.episode_ends[a:b] - lo, source=data.source, attrs=data.attrs)


def _concat(parts) -> EpisodeData:
  lens = np.concatenate([np.diff(np.concatenate([[0], p.episode_ends])) for p in parts])
  return EpisodeData({k: np.concatenate([p.fields[k] for p in parts]) for k in parts[0].fields},
                     np.cumsum(lens), source="+".join(p.source for p in parts))


def stage1_normalizer(pairs: EpisodeData, box) -> LimitsNormalizer:
  """cond: data limits on position (0:3) and finger (9); rot6d raw. target: the box."""
  stats = {"actions": _action_stats(box)}
  if np.any(pairs.fields["cond"]):
    stats[COND_KEY] = LimitsNormalizer.fit(pairs.fields, {"cond": [0, 1, 2, 9]}).to_dict()[
        "fields"]["cond"]
  return LimitsNormalizer.from_stats(stats)


def make_pretrain_stage(config) -> Stage:
  from decoupled_jax.kinematics.demo_pairs import gather_windows
  horizon, batch = int(config.data.horizon), int(config.train.batch_size)
  train, held = load_stage1_pairs(config)
  norm = stage1_normalizer(train, config.data.position_box)
  fields = [f for f in norm.fields if f in (COND_KEY, "actions")]

  def normalise(cond, target):
    d = norm.normalize({COND_KEY: cond, "actions": target}, fields=fields)
    return {"obs": {COND_KEY: d[COND_KEY]}, "actions": d["actions"]}

  rows = sharding.process_rows(batch)

  def host_batches(start):
    step = start
    while True:   # global batch k is a function of (seed, k); this process's rows
      t = np.random.default_rng((config.seed, step)).integers(0, train.num_frames, size=batch)
      cond, target = gather_windows(train, horizon, t[rows])
      yield jax.tree.map(np.asarray, normalise(cond, target))
      step += 1

  cond_dim = train.fields["cond"].shape[-1]
  policy = policy_from_config(config, lowdim_keys=(COND_KEY,))
  head = make_head(config.head)
  expert = expert_interface(policy.backbone)
  logging.info("LIBERO stage 1 (%s): %d train episodes / %d frames, %d held-out episodes",
               config.data.signal, train.num_episodes, train.num_frames,
               held.num_episodes if held is not None else 0)
  meta = {"config": common.config_to_dict(config), "normalizer": norm.to_dict(),
          "backbone": config.backbone.name, "head": config.head.type,
          "signal": config.data.signal, "source": "libero_demos", "obs_keys": [COND_KEY],
          "cond_dim": cond_dim, "horizon": horizon, "suites": list(config.data.suites)}

  evaluate = final_evaluate = None
  if held is not None:
    rng = np.random.default_rng(10_000 + config.seed)
    ends = rng.integers(0, held.num_frames, size=min(int(config.eval.num_windows),
                                                     held.num_frames))
    e_cond, e_target = gather_windows(held, horizon, ends)
    _, ref_target = gather_windows(train, horizon, rng.integers(0, train.num_frames, 4096))
    eval_obs = normalise(e_cond, e_target)["obs"]
    sample_fn = jax.jit(make_sample_fn(policy, head, (horizon, ACTION_DIM)))

    def metres(x):
      x = np.array(x)
      x[..., :3] *= DELTA_POS_M
      return x

    baseline = mean_pose_baseline(metres(ref_target), metres(e_target))

    def evaluate(params, step):
      pred = np.asarray(sample_fn(params, eval_obs, jax.random.PRNGKey(step)))
      out = pose_errors(metres(norm.unnormalize_field("actions", pred)), metres(e_target))
      out.update({f"baseline_{k}": v for k, v in baseline.items()})
      logging.info("LIBERO stage-1 eval @%d: dpos %.2f mm/step (baseline %.2f), drot %.2f deg "
                   "(baseline %.2f), gripper %.3f", step, out["pos_err_mm"],
                   baseline["pos_err_mm"], out["rot_err_deg"], baseline["rot_err_deg"],
                   out["gripper_acc"])
      return out

    def final_evaluate(params, workdir, step):
      return evaluate(params, step)

  return Stage(name="libero_pretrain", policy=policy, head=head,
               example_obs={COND_KEY: jnp.zeros((1, horizon, cond_dim), jnp.float32)},
               action_shape=(horizon, ACTION_DIM), meta=meta,
               no_weight_decay=expert.no_weight_decay_patterns, host_batches=host_batches,
               evaluate=evaluate if int(config.train.eval_every) else None,
               final_evaluate=final_evaluate)


# ------------------------------------------------------------------------------ stage 2
def policy_normalizer(episodes: EpisodeData, lowdim_keys, box) -> LimitsNormalizer:
  fields = {k: None for k in lowdim_keys if k in DATA_LIMIT_KEYS}
  return LimitsNormalizer.fit(episodes, fields, overrides={"actions": _action_stats(box)})


def check_stage1(config, norm):
  """A decoupled LIBERO run takes a LIBERO stage-1 checkpoint (state -> delta action, same
  action scale) or, as the demonstration-free alternative, a stage-1 checkpoint on our
  generated Panda FK data ('pretrain': joints -> absolute pose in its workspace box; each
  stage's targets are normalised to [-1, 1] by its own scale, as the paper's DROID stage 1
  for LIBERO maps joints to delta velocities)."""
  return finetune.check_stage1_checkpoint(config, norm,
                                          stage1_names=("libero_pretrain", "pretrain"),
                                          same_action_scale=("libero_pretrain",))


def make_finetune_stage(config) -> Stage:
  d = config.data
  image_keys, lowdim_keys = tuple(d.image_keys), tuple(d.lowdim_keys)
  obs_keys = image_keys + lowdim_keys
  tasks = suites.parse_task_list(d.tasks, d.suite)
  raw = libero_data.load_suite(d.dataset, d.suite, obs_keys, tasks=tasks,
                               num_demos=int(d.num_demos))
  episodes = prepare_policy_dataset(raw, obs_keys)
  norm = policy_normalizer(episodes, lowdim_keys, d.position_box)
  language = ({"key": libero_data.TASK_KEY, "instructions": raw.attrs["instructions"]}
              if libero_data.TASK_KEY in lowdim_keys else None)
  extra = {"suite": d.suite, "tasks": tasks, "action_layout": ACTION_LAYOUT,
           "max_steps": suites.MAX_STEPS[d.suite], "language": language}
  if image_keys:   # the evaluation renders its cameras at the size the policy trained on
    extra["image_size"] = int(episodes.fields[image_keys[0]].shape[-3])

  def evaluators(runner, meta):
    def final_evaluate(params, workdir, step):
      if int(config.eval.episodes_per_task) <= 0:
        return {}
      return served_evaluation(runner(params), meta, config, os.path.join(workdir,
                                                                           "libero_eval"))
    return None, final_evaluate

  return finetune.policy_stage(config, episodes, norm, task=d.suite, name="libero_finetune",
                               evaluators=evaluators, extra_meta=extra,
                               check_stage1=check_stage1)


def server_extras(meta: dict) -> dict:
  """Metadata a LIBERO policy's server sends besides the generic fields."""
  return {k: meta[k] for k in ("suite", "action_layout", "language", "max_steps")
          if meta.get(k) is not None}


def served_evaluation(runner, meta: dict, config, out_dir: str) -> dict:
  """Serves `runner` on a free local port and runs the LIBERO runner against it."""
  from decoupled_jax.serving.server import PolicyServer
  e = config.eval
  py = e.libero_python or default_libero_python()
  if not os.path.exists(py):
    raise ConfigError(f"config.eval.libero_python: {py} does not exist; build the LIBERO "
                      f"environment with `make libero-env`")
  server = PolicyServer(runner, port=0, metadata=server_extras(meta)).start()
  t0 = time.time()
  try:
    tasks = "+".join(str(t) for t in meta["tasks"])
    cmd = [py, os.path.join(REPO, "experiments", "libero_eval.py"),
           f"--address=127.0.0.1:{server.port}", f"--suite={meta['suite']}", f"--tasks={tasks}",
           f"--episodes={int(e.episodes_per_task)}", f"--eval_seed={int(e.eval_seed)}",
           f"--out_dir={out_dir}"]
    if meta.get("image_size"):
      cmd.append(f"--image_size={int(meta['image_size'])}")
    logging.info("LIBERO evaluation: %s", " ".join(cmd))
    env = dict(os.environ, MUJOCO_GL=os.environ.get("MUJOCO_GL", "egl"))
    proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)
    log_path = os.path.join(out_dir, "runner.log")
    os.makedirs(out_dir, exist_ok=True)
    with open(log_path, "a") as f:
      f.write(proc.stdout)
    if proc.returncode != 0:
      tail = proc.stdout.strip().splitlines()[-1:] or ["(no output)"]
      raise RuntimeError(f"LIBERO runner failed (exit {proc.returncode}): {tail[0]}; see "
                         f"{log_path}")
  finally:
    server.stop()
  with open(os.path.join(out_dir, meta["suite"], "summary.json")) as f:
    summary = json.load(f)
  summary["wall_time_s"] = time.time() - t0
  return summary


def default_libero_python() -> str:
  return os.path.join(REPO, ".venv-libero", "bin", "python")



# ------------------------------------------------------------------------------ the chain
def generate_demos(config, workdir: str) -> dict:
  """Scripted demonstrations of every suite (`experiments/libero_demos.py` in the LIBERO
  venv; resumable per task). Returns {suite: [per-task sidecar dicts]}."""
  d = config.demos
  out_dir = d.dataset_dir or os.path.join(workdir, "demos")
  py = d.libero_python or default_libero_python()
  if not os.path.exists(py):
    raise ConfigError(f"config.demos.libero_python: {py} does not exist; build the LIBERO "
                      f"environment with `make libero-env`")
  info = {}
  for suite in config.suites:
    cmd = [py, os.path.join(REPO, "experiments", "libero_demos.py"), f"--suite={suite}",
           f"--tasks={config.tasks}", f"--num_demos={int(d.num_demos)}",
           f"--out_dir={out_dir}", f"--seed={int(d.seed)}"]
    if tuple(d.cameras):
      cmd += [f"--cameras={','.join(d.cameras)}", f"--image_size={int(d.image_size)}"]
    logging.info("LIBERO demos: %s", " ".join(cmd))
    env = dict(os.environ, MUJOCO_GL=os.environ.get("MUJOCO_GL", "egl"))
    proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, f"{suite}.log"), "a") as f:
      f.write(proc.stdout)
    if proc.returncode != 0:
      tail = proc.stdout.strip().splitlines()[-1:] or ["(no output)"]
      raise RuntimeError(f"LIBERO demo generation failed for {suite} (exit "
                         f"{proc.returncode}): {tail[0]}")
    info[suite] = [json.load(open(p)) for p in sorted(
        os.path.join(out_dir, suite, n) for n in os.listdir(os.path.join(out_dir, suite))
        if n.endswith("_demo.hdf5.json"))]
  return {"dir": out_dir, "suites": info}


def _stage_run(c, run_dir: str, progress: bool) -> dict:
  from decoupled_jax.pipelines import run
  summary_path = os.path.join(run_dir, run.SUMMARY)
  if os.path.exists(summary_path):
    logging.info("reusing %s", summary_path)
    with open(summary_path) as f:
      return json.load(f)
  c.progress = progress
  ckpt = os.path.join(run_dir, "checkpoints")
  resume = os.path.isdir(ckpt) and any(n.isdigit() for n in os.listdir(ckpt))
  return run.run(c, run_dir, resume=resume)


def train_and_evaluate(config, workdir: str) -> dict:
  """demos -> LIBERO stage 1 -> per suite: normal and decoupled stage 2 -> served LIBERO
  evaluation -> results.{json,md}. Every step is skipped when its outputs exist."""
  import ml_collections
  from decoupled_jax.training.workdir import WorkdirLock
  t0 = time.time()
  with WorkdirLock(workdir):
    demos = generate_demos(config, workdir)
    data_dir = demos["dir"]
    c1 = ml_collections.ConfigDict(config.stage1.to_dict())
    c1.data.dataset, c1.data.suites = data_dir, tuple(config.suites)
    stage1 = _stage_run(c1, os.path.join(workdir, "stage1"), bool(config.progress))
    stage1_fk = None
    if "decoupled_fk" in config.modes:   # the demonstration-free stage 1 (generated FK data)
      stage1_fk = _stage_run(ml_collections.ConfigDict(config.stage1_fk.to_dict()),
                             os.path.join(workdir, "stage1_fk"), bool(config.progress))
    runs = {}
    for suite in config.suites:
      for mode in config.modes:
        c2 = ml_collections.ConfigDict(config.stage2.to_dict())
        c2.mode = "decoupled" if mode.startswith("decoupled") else mode
        c2.data.dataset, c2.data.suite, c2.data.tasks = data_dir, suite, config.tasks
        c2.stage1_checkpoint = {"decoupled": stage1["checkpoint_dir"],
                                "decoupled_fk": (stage1_fk or {}).get("checkpoint_dir", "")
                                }.get(mode, "")
        runs[(suite, mode)] = _stage_run(c2, os.path.join(workdir, suite, mode),
                                         bool(config.progress))
    results = {"stage1": stage1, "stage1_fk": stage1_fk, "demos": demos,
               "runs": [dict(r, suite=s, mode=m) for (s, m), r in runs.items()],
               "wall_time_this_invocation_s": time.time() - t0}
    common.write_json(os.path.join(workdir, "results.json"), results)
    table = results_markdown(results)
    with open(os.path.join(workdir, "results.md"), "w") as f:
      f.write(table)
    results["table"] = table
    return results


def results_markdown(results: dict) -> str:
  lines = ["| suite | mode | success (mean over tasks) | 95% CI (pooled) | episodes | per task |",
           "|---|---|---|---|---|---|"]
  for r in results["runs"]:
    ev = r.get("eval") or {}
    if not ev.get("tasks"):
      lines.append(f"| {r['suite']} | {r['mode']} | (not evaluated) | | | |")
      continue
    per = " ".join(f"{int(t['successes'])}/{int(t['episodes'])}"
                   for _, t in sorted(ev["tasks"].items(), key=lambda kv: int(kv[0])))
    lo, hi = ev["ci95_pooled"]
    lines.append(f"| {r['suite']} | {r['mode']} | {100 * ev['success_rate']:.1f}% | "
                 f"{100 * lo:.0f}–{100 * hi:.0f}% | {ev['episodes']} | {per} |")
  demo_rows = ["", "Expert (scripted demonstrations) success per task:", "",
               "| suite | task | demos | attempts | expert success |", "|---|---|---|---|---|"]
  for suite, tasks in results["demos"]["suites"].items():
    for t in tasks:
      demo_rows.append(f"| {suite} | {t.get('task_id')} | {t.get('num_demos', t.get('written'))}"
                       f" | {t.get('attempts')} | {100 * float(t.get('success_rate', 0)):.0f}% |")
  s1 = results["stage1"].get("eval") or {}
  head = [f"Stage 1 (LIBERO demos, signal {results['stage1'].get('signal', 'eepose')}): "
          f"held-out delta-action error {s1.get('pos_err_mm', float('nan')):.2f} mm/step "
          f"(mean baseline {s1.get('baseline_pos_err_mm', float('nan')):.2f}), rotation "
          f"{s1.get('rot_err_deg', float('nan')):.2f} deg "
          f"(baseline {s1.get('baseline_rot_err_deg', float('nan')):.2f}).", ""]
  return "\n".join(head + lines + demo_rows) + "\n"
