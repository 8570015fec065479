"""Closed-loop evaluation of a stage-2 checkpoint (MimicGen protocol, docs/method.md §7.1; an
ALOHA policy is served and rolled out by the ALOHA runner in its venv, docs/aloha.md).

  python experiments/evaluate.py --checkpoint=workdirs/lift_decoupled/checkpoints \
      --num_episodes=50 --num_workers=2 --output=workdirs/lift_decoupled/eval50

Writes <output>/eval.json (success rate with a 95% Wilson interval, episode lengths, policy
latency, env steps/s, per-episode records) and mp4 videos of the first --num_videos episodes.
An episode is a function of its seed: evaluating twice, with any --num_workers, gives the same
per-episode outcomes, lengths and final-state hashes (--num_workers only sets how many env
processes run; the policy samples every episode's row with the same batch-1 program).
"""
import os

from decoupled_jax import cli

cli.prelude()  # before jax / mujoco are imported

from absl import flags  # noqa: E402
import ml_collections  # noqa: E402

from decoupled_jax import inference  # noqa: E402
from decoupled_jax.benchmarks import aloha, robosuite  # noqa: E402

flags.DEFINE_string("checkpoint", None, "Checkpoints directory of an experiments/train.py run.")
flags.DEFINE_integer("step", None, "Checkpoint step (default: the newest intact one).")
flags.DEFINE_string("task", "", "Task to evaluate on (default: the task the policy was trained on).")
flags.DEFINE_integer("num_episodes", 50, "Episodes, on seeds 100000 + seed_offset + i (the paper: 50).")
flags.DEFINE_integer("seed_offset", 0, "Shift of the episode seeds.")
flags.DEFINE_integer("num_workers", 2, "Parallel environment processes (<=1: inline).")
flags.DEFINE_integer("max_steps", 0, "Episode limit (0: 2.5 x the average demo length).")
flags.DEFINE_integer("num_videos", 2, "Episodes to save as mp4.")
flags.DEFINE_string("sampler", "", "Override the diffusion sampler: ddpm | ddim.")
flags.DEFINE_integer("inference_steps", 0, "Override the number of sampling steps.")
flags.DEFINE_string("output", None, "Output directory (default: <checkpoint>/../eval).")
flags.DEFINE_integer("seed", 0, "Sampling seed (ALOHA: also the object poses' seed).")
flags.DEFINE_string("aloha_python", "", "ALOHA policies: the ALOHA venv's interpreter "
                    "('' = <repo>/.venv-aloha/bin/python, `make aloha-env`).")
flags.mark_flags_as_required(["checkpoint"])
FLAGS = flags.FLAGS


def main(argv):
  del argv
  overrides = {"diffusion": {}, "flow": {}}   # typed head sections (heads.merge_head_config)
  if FLAGS.sampler:
    overrides["diffusion"]["sampler"] = FLAGS.sampler
  if FLAGS.inference_steps:
    overrides["diffusion"]["num_inference_steps"] = FLAGS.inference_steps
    overrides["flow"]["num_steps"] = FLAGS.inference_steps
  # Batch 1 whatever --num_workers: each row (episode) is sampled by the same batch-1
  # program, so the episodes do not depend on the worker count (inference.PolicyRunner).
  runner, meta = inference.load_policy(
      FLAGS.checkpoint, batch_size=1, seed=FLAGS.seed, step=FLAGS.step,
      head_overrides=overrides)
  out = FLAGS.output or os.path.join(os.path.dirname(os.path.abspath(FLAGS.checkpoint)), "eval")
  os.makedirs(out, exist_ok=True)
  if meta.get("benchmark") == "aloha":   # gym-aloha runs in its venv against the served policy
    if FLAGS.task and FLAGS.task != meta["aloha_task"]:
      raise flags.ValidationError(f"--task={FLAGS.task}: this ALOHA policy was trained on "
                                  f"{meta['aloha_task']!r}")
    eval_config = ml_collections.ConfigDict(dict(eval=dict(
        num_episodes=FLAGS.num_episodes, eval_seed=FLAGS.seed, num_videos=FLAGS.num_videos,
        max_steps=FLAGS.max_steps or meta["config"]["eval"]["max_steps"],
        aloha_python=FLAGS.aloha_python)))
    r = aloha.served_evaluation(runner, meta, eval_config, out)
    print(f"{r['task']}: success {r['success_rate']:.2f} (95% CI {r['ci95'][0]:.2f}-"
          f"{r['ci95'][1]:.2f}) over {r['num_episodes']} episodes; results in {out}/eval.json")
    return
  eval_config = ml_collections.ConfigDict(dict(
      num_episodes=FLAGS.num_episodes, num_workers=FLAGS.num_workers, num_videos=FLAGS.num_videos,
      seed_offset=FLAGS.seed_offset, progress=True))
  r = robosuite.closed_loop(runner, FLAGS.task or meta["task"], eval_config,
                           max_steps=FLAGS.max_steps or meta["max_steps"],
                           use_images=bool(meta["image_keys"]),
                           video_dir=os.path.join(out, "videos"),
                           json_path=os.path.join(out, "eval.json"))
  print(f"{r['task']}: success {r['success_rate']:.2f} (95% CI {r['ci95'][0]:.2f}-"
        f"{r['ci95'][1]:.2f}) over {r['num_episodes']} episodes; mean length "
        f"{r['mean_episode_length']:.1f}; policy latency {r['policy_latency_ms']:.1f} ms; "
        f"results in {out}/eval.json")


if __name__ == "__main__":
  cli.run(main)
