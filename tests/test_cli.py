"""The binaries' shared prelude (decoupled_jax/cli.py): an override of a key the config does
not have is one line naming the key and the keys that exist, not an AttributeError traceback."""
import subprocess
import sys

from helpers import REPO_PATH as REPO


def test_unknown_config_override_is_one_line(tmp_path):
  proc = subprocess.run(
      [sys.executable, str(REPO / "experiments" / "train.py"),
       f"--config={REPO / 'configs' / 'train.py'}:debug", "--config.head.sampler=ddim",
       f"--workdir={tmp_path / 'w'}"], capture_output=True, text=True, timeout=300)
  assert proc.returncode == 2, proc.stderr[-2000:]
  lines = proc.stderr.strip().splitlines()
  assert lines[-1] == ("error: --config.head.sampler: config.head has no key 'sampler' "
                       "(its keys: diffusion, flow, type)"), proc.stderr[-2000:]
  assert "Traceback" not in proc.stderr
  assert not (tmp_path / "w").exists()


def test_unknown_override_message_walks_nested_keys():
  from decoupled_jax.cli import unknown_config_override
  cfg = f"--config={REPO / 'configs' / 'pretrain.py'}:debug"
  assert unknown_config_override(["x", cfg, "--config.train.num_steps=3"]) is None
  msg = unknown_config_override(["x", cfg, "--config.robot.gripper.width=3"])
  assert msg.startswith("--config.robot.gripper.width: config.robot.gripper has no key 'width'")
