"""The paper presets say what the reference does (docs/method.md §1.4, §2.3, §3, §4.2, §5, §10):
sizes, LR schedule, noise samples and budgets, read from the config files themselves. No
training; backbone sizes are counted on shapes only (jax.eval_shape)."""
import os

import jax
import jax.numpy as jnp
import pytest

from decoupled_jax import backbones as bb
from decoupled_jax import config_lib
from decoupled_jax.heads import make_head
from decoupled_jax.training import partition
from decoupled_jax.training.partition import FreezeRule

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
DA = 10
DP_C_MIMICGEN = {"down_dims": (512, 1024, 2048), "diffusion_step_embed_dim": 128}
DP_C_DROID = {"down_dims": (256, 512, 1024), "diffusion_step_embed_dim": 256}


def _load(name, arg=None):
  return config_lib.from_file(os.path.join(CONFIGS, name), arg)


def _has_sizes(kwargs, sizes):
  return all((tuple(kwargs[k]) if isinstance(v, tuple) else kwargs[k]) == v
             for k, v in sizes.items())


def _frozen_backbone_params(stage, n_obs=2, cond_dim=137):
  """Params of the stage's backbone outside its conditioning pathway (what stage 2 freezes),
  for the stage-2 condition (To = 2, Dc = 137), counted on shapes only."""
  model = bb.make_backbone(stage.backbone.name, **dict(stage.backbone.kwargs))
  h = int(stage.data.horizon)
  params = jax.eval_shape(model.init, jax.random.key(0),
                          jax.ShapeDtypeStruct((2, h, DA), jnp.float32),
                          jax.ShapeDtypeStruct((2,), jnp.float32),
                          jax.ShapeDtypeStruct((2, n_obs, cond_dim), jnp.float32))["params"]
  rule = FreezeRule("backbone", bb.expert_interface(model).conditioning_patterns)
  tree = {"backbone": params}
  _, frozen = partition.split(tree, rule.frozen_paths(tree))
  return bb.count_params(frozen)


# ------------------------------------------------------------------------- LIBERO (§1.4, §3.2)
@pytest.mark.parametrize("arch,sizes", [("dp_c", DP_C_DROID),
                                        ("dp_mlp", {"n_emb": 256, "n_layer": 8})])
def test_libero_paper_preset(arch, sizes):
  c = _load("libero.py", f"paper,arch={arch}")
  for stage in (c.stage1, c.stage2, c.stage1_fk):   # the FK arm loads into stage 2: same size
    assert stage.backbone.name == arch and _has_sizes(stage.backbone.kwargs, sizes), stage.stage
  for stage in (c.stage1, c.stage2):
    # The DROID policies: Adam 1e-4, constant, no warm-up (§1.4, §5), 8 noise samples (§4.2).
    assert stage.optimizer.schedule == "constant" and stage.optimizer.warmup_steps == 0
    assert stage.optimizer.learning_rate == 1e-4 and stage.optimizer.weight_decay == 0.0
    assert stage.head.diffusion.num_noise_samples == 8
    assert stage.train.batch_size == 128
    d = stage.head.diffusion
    assert (d.sampler, d.num_inference_steps) == ("ddim", 10)
  assert c.stage2.train.num_steps == 25_000 and c.stage2.eval.episodes_per_task == 50
  assert c.demos.num_demos == 50
  fk = c.stage1_fk   # ours, not the paper's: the MimicGen stage-1 recipe (§5)
  assert (fk.optimizer.schedule, fk.optimizer.warmup_steps,
          fk.head.diffusion.num_noise_samples) == ("cosine", 500, 1)


def test_libero_paper_dp_c_is_the_droid_unet():
  """61.54 M backbone params (§3.2), not the 244 M MimicGen U-Net."""
  c = _load("libero.py", "paper")
  n = _frozen_backbone_params(c.stage2, cond_dim=512)
  assert abs(n / 1e6 - 61.54) < 0.005, n


def test_libero_cpu_preset_unchanged():
  """The measured CPU table's preset (docs/results/libero.md) keeps its narrowed sizes."""
  c = _load("libero.py")
  assert tuple(c.stage2.backbone.kwargs.down_dims) == (64, 128, 256)
  assert c.stage2.head.diffusion.num_noise_samples == 1
  assert (c.stage2.optimizer.schedule, c.stage2.optimizer.warmup_steps) == ("cosine", 100)


# --------------------------------------------------------------------------- MimicGen (§2.3, §5)
@pytest.mark.parametrize("arch", ["dp_c", "dp_mlp"])
def test_paper_mimicgen_preset(arch):
  c = _load("paper_mimicgen.py", f"arch={arch}")
  for stage in (c.stage1, c.stage2):
    assert stage.optimizer.schedule == "cosine" and stage.optimizer.warmup_steps == 500
    assert stage.optimizer.learning_rate == 1e-4
  assert c.stage1.train.batch_size == 256 and c.stage1.train.num_steps == 45_000
  # 50 shuffled epochs at batch 64 (pipelines/finetune.py derives the steps from the data).
  assert c.stage2.train.epochs == 50 and "sampling" not in c.stage2.data
  assert c.stage2.train.batch_size == 64
  assert c.stage2.train.eval_every > 0 and c.stage2.eval.num_episodes == 50
  head = make_head(c.stage2.head)
  assert head.sampler == "ddpm" and head.inference_steps == 100 and head.num_noise_samples == 1
  assert _load("paper_mimicgen.py", "epochs=3").stage2.train.epochs == 3
  if arch == "dp_c":   # the 244 M MimicGen U-Net (§3.1)
    assert _has_sizes(c.stage1.backbone.kwargs, DP_C_MIMICGEN)
    assert _has_sizes(c.stage2.backbone.kwargs, DP_C_MIMICGEN)


# ------------------------------------------------------------------- paper_tables (§3, §10)
def test_paper_tables_paper_budget():
  c = _load("paper_tables.py", "paper_budget")
  for stage in (c.stage1, c.stage2):
    assert stage.optimizer.schedule == "cosine" and stage.optimizer.warmup_steps == 500
    assert stage.optimizer.learning_rate == 1e-4
  assert (c.stage1.train.batch_size, c.stage1.train.num_steps) == (256, 45_000)
  assert c.stage2.train.epochs == 50
  assert c.demos.num_demos == 1000
  cpu = _load("paper_tables.py")   # the CPU tables keep their measured recipe
  assert (cpu.stage2.optimizer.warmup_steps, cpu.stage2.train.epochs) == (100, 0)


def test_paper_tables_full_size_dp_mlp():
  for arg in ("full_size", "full_mlp"):   # full_mlp: the older switch, DP-MLP alone
    c = _load("paper_tables.py", arg)
    for stage in (c.stage1, c.stage2):
      assert (stage.backbone.kwargs.n_emb, stage.backbone.kwargs.n_layer) == (256, 8)
    assert _frozen_backbone_params(c.stage2) == 4_782_346   # §3.5, the paper's "4M/5M"
  assert _load("paper_tables.py").stage2.backbone.kwargs.n_emb == 128   # CPU default


def test_paper_tables_full_size_backbones_table():
  t = _load("paper_tables.py", "table=backbones,full_size")
  assert t.chains.dp_mlp.stage2.backbone.kwargs.n_emb == 256
  for stage in (t.chains.dp_c.stage1, t.chains.dp_c.stage2):
    assert stage.backbone.name == "dp_c"
    assert tuple(stage.backbone.kwargs.down_dims) == DP_C_MIMICGEN["down_dims"]
    assert stage.backbone.kwargs.diffusion_step_embed_dim == 128
  assert _frozen_backbone_params(t.chains.dp_c.stage2) == 244_057_226   # §3.1, "244M"
  narrow = _load("paper_tables.py", "table=backbones")
  assert tuple(narrow.chains.dp_c.stage2.backbone.kwargs.down_dims) == (64, 128, 256)


# Frozen (non-conditioning) backbone params in stage 2, docs/method.md §2.1's table.
UNIFIED_FROZEN = {"adaln_zero": 6_841_354, "adaln": 6_841_354, "ada_rms_norm": 6_841_354,
                  "film": 6_849_546, "additive": 6_849_546, "lora_cond": 6_849_546,
                  "cross_attn": 8_433_418, "prefix": 6_323_978}


def test_paper_tables_full_size_conditioning_table():
  t = _load("paper_tables.py", "table=conditioning,full_size")
  assert set(t.chains) == set(UNIFIED_FROZEN) == set(config_lib.CONDITIONINGS)
  for cond, frozen in UNIFIED_FROZEN.items():
    for stage in (t.chains[cond].stage1, t.chains[cond].stage2):
      k = stage.backbone.kwargs
      assert stage.backbone.name == "unified" and k.conditioning == cond
      assert (k.n_emb, k.n_layer, k.n_head) == (256, 8, 4) and stage.data.horizon == 10
    assert _frozen_backbone_params(t.chains[cond].stage2) == frozen, cond
  narrow = _load("paper_tables.py", "table=conditioning")
  assert (narrow.chains.adaln_zero.stage2.backbone.kwargs.n_emb,
          narrow.chains.adaln_zero.stage2.backbone.kwargs.n_layer) == (128, 4)
