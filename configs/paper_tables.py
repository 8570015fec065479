r"""The paper's tables as resumable experiments (docs/results/), sized for a 2-core CPU.

  python experiments/paper.py --config=configs/paper_tables.py:table=main --workdir=workdirs/tables/main

table=main (paper Table I): normal vs decoupled, DP-MLP, on Lift, Stack, NutAssemblySquare and
PickPlaceCan, seeds 0 / 42 / 420 (the paper's), 50 test episodes per run. CPU scale, as in
configs/quickstart.py: DP-MLP narrowed to n_emb 128 x 4 blocks (~0.5 M backbone params; the
paper: 4.8 M), stage 1 4000 steps x 64 on generated FK data (the paper: 45 k x 256 on demo
pairs), 100 scripted demos per task (the paper: 1000 MimicGen demos), 3000 stage-2 steps x 64
with windows drawn with replacement (the paper: 50 shuffled epochs), lr 1e-3, DDIM-10
sampling at evaluation (the paper: DDPM-100). `full_mlp` selects the paper's DP-MLP size
and, with `paper_budget`, the paper's step budgets (for accelerators).
"""
import os

from decoupled_jax import config_lib

HERE = os.path.dirname(os.path.abspath(__file__))
TABLES = ("main",)


def get_config(arg=None):
  a = config_lib.parse_arg(arg, table="main", full_mlp=False, paper_budget=False,
                           seeds="0+42+420", tasks="Lift+Stack+NutAssemblySquare+PickPlaceCan")
  if a.table not in TABLES:
    raise config_lib.ConfigError(f"table={a.table!r}: implemented tables are {TABLES}")
  c = config_lib.from_file(os.path.join(HERE, "quickstart.py"),
                           "full_mlp" if a.full_mlp else None)
  c.table = a.table
  c.tasks = tuple(t for t in a.tasks.split("+") if t)
  c.seeds = tuple(int(s) for s in a.seeds.split("+") if s)
  c.modes = ("normal", "decoupled")
  if a.paper_budget:
    c.stage1.train.batch_size, c.stage1.train.num_steps = 256, 45_000
    c.stage1.optimizer.learning_rate = 1e-4
    c.stage2.data.sampling, c.stage2.train.epochs = "epochs", 50
    c.stage2.optimizer.learning_rate = 1e-4
    c.stage2.head.sampler, c.stage2.head.num_inference_steps = "ddpm", 100
    c.demos.num_demos = 1000
  return c
