"""The LIBERO suites the paper evaluates and their protocol constants (method spec §7.2).

Kept free of libero imports so that the library side (main venv) can validate suite and task
ids before any simulator process starts.
"""
from __future__ import annotations

# max env steps per episode (the paper's, = LIBERO's own evaluation settings)
MAX_STEPS = {"libero_spatial": 280, "libero_object": 280, "libero_goal": 300, "libero_10": 520}
SUITES = tuple(MAX_STEPS)
NUM_TASKS = 10
NUM_WAIT_STEPS = 10          # "wait" steps with a closed... open gripper before each episode
WAIT_ACTION = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0)
REPLAN_EVERY = 8             # actions executed per policy call (n_action_steps)
EPISODES_PER_TASK = 50       # the bundled init states per task


def check_suite(suite: str) -> str:
  if suite not in MAX_STEPS:
    raise ValueError(f"unknown LIBERO suite {suite!r}; expected one of {list(SUITES)}")
  return suite


def check_tasks(suite: str, task_ids) -> list[int]:
  check_suite(suite)
  out = []
  for t in task_ids:
    try:
      i = int(t)
    except (TypeError, ValueError):
      raise ValueError(f"{suite}: task id {t!r} is not an integer") from None
    if not 0 <= i < NUM_TASKS:
      raise ValueError(f"{suite}: task id {i} out of range; tasks are 0..{NUM_TASKS - 1}")
    out.append(i)
  if len(set(out)) != len(out):
    raise ValueError(f"{suite}: repeated task ids in {list(task_ids)}")
  return out


def parse_task_list(spec: str, suite: str) -> list[int]:
  """'all' or '0+3+7' (the config/flag syntax)."""
  if spec in ("", "all"):
    return list(range(NUM_TASKS))
  return check_tasks(suite, [s for s in str(spec).replace(",", "+").split("+") if s])
