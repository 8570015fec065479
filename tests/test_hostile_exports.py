"""Exports are untrusted input: a real tiny export (DP-MLP trained by experiments/train.py on
synthetic demos) is forged one way per test: safetensors headers with overlapping, negative
or out-of-bounds offsets, size/shape mismatches, unknown dtypes, bad header lengths or JSON;
config.json paths leaving the folder (`..`, absolute, symlinks); unbounded shapes; unknown
backbones; tensors that do not fit the architecture. Each is refused with one ExportError line
naming the file and the field or tensor, and (through experiments/serve.py) one `error:` line
on stderr without a traceback. A genuine export still loads with identical values.

Forged params files get their sha256 re-signed in config.json, so the checks under test (not
the checksum) are what refuses them."""
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

from decoupled_jax import export, inference
from decoupled_jax.export import ExportError

from helpers import REPO, train_debug_policy  # noqa: E402
PARAMS = export.PARAMS_FILE


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """A real stage-2 (mode=normal, debug-size DP-MLP) checkpoint on synthetic demos."""
  return train_debug_policy(tmp_path_factory.mktemp("hostile"))


@pytest.fixture(scope="module")
def genuine(trained, tmp_path_factory):
  return export.export_policy(trained, str(tmp_path_factory.mktemp("genuine") / "exp"))


@pytest.fixture
def copy(genuine, tmp_path):
  """A fresh writable copy of the genuine export."""
  out = str(tmp_path / "exp")
  shutil.copytree(genuine, out)
  return out


# ----------------------------------------------------------------------------- forging
def read_config(folder):
  with open(os.path.join(folder, "config.json")) as f:
    return json.load(f)


def write_config(folder, cfg):
  with open(os.path.join(folder, "config.json"), "w") as f:
    json.dump(cfg, f)


def resign(folder, params_file=PARAMS):
  """Puts the params file's real sha256 into config.json (a forger would)."""
  cfg = read_config(folder)
  with open(os.path.join(folder, params_file), "rb") as f:
    cfg["params"]["sha256"] = hashlib.sha256(f.read()).hexdigest()
  write_config(folder, cfg)


def split(folder):
  with open(os.path.join(folder, PARAMS), "rb") as f:
    raw = f.read()
  n = int.from_bytes(raw[:8], "little")
  return json.loads(raw[8:8 + n]), raw[8 + n:]


def write_params(folder, header=None, body=None, raw_header=None, length=None):
  """A params file from a header dict (or raw header bytes) and body; resigned."""
  head = raw_header if raw_header is not None else json.dumps(header).encode()
  if raw_header is None:
    head += b" " * (-len(head) % 8)
  n = len(head) if length is None else length
  with open(os.path.join(folder, PARAMS), "wb") as f:
    f.write(n.to_bytes(8, "little") + head + body)
  resign(folder)


def tensors(header):
  """Tensor names in file order (by data offset)."""
  return sorted((k for k in header if k != "__metadata__"),
                key=lambda k: header[k]["data_offsets"][0])


def forge_header(folder, edit):
  header, body = split(folder)
  edit(header, tensors(header))
  write_params(folder, header, body)


def edit_meta(folder, edit):
  cfg = read_config(folder)
  edit(cfg["meta"])
  write_config(folder, cfg)


def set_obs_shape(folder, key, shape):
  """Changes an observation's shape in meta and in the top-level summary alike."""
  cfg = read_config(folder)
  cfg["meta"]["obs_shapes"][key] = shape
  cfg["observations"][key]["shape"] = shape
  write_config(folder, cfg)


def refused(folder, match, **kw):
  with pytest.raises(ExportError, match=match) as e:
    export.read_exported(folder, **kw)
  assert "\n" not in str(e.value)
  return str(e.value)


# ----------------------------------------------------------------------------- round trip
def test_genuine_export_loads_with_identical_values(trained, genuine):
  params, meta = inference.ckpt_lib.load_inference_params(trained)
  loaded, meta2 = export.read_exported(genuine)
  assert meta2 == meta
  want, got = export.flatten_params(params)[0], export.flatten_params(loaded)[0]
  assert sorted(want) == sorted(got)
  for k in want:
    assert got[k].dtype == want[k].dtype and np.array_equal(got[k], want[k]), k
  # the file is plain safetensors: the reference reader sees the same tensors and metadata
  from safetensors.numpy import load_file
  from safetensors import safe_open
  ref = load_file(os.path.join(genuine, PARAMS))
  assert sorted(ref) == sorted(want) and all(np.array_equal(ref[k], want[k]) for k in want)
  with safe_open(os.path.join(genuine, PARAMS), framework="numpy") as f:
    assert f.metadata() == {"format": export.EXPORT_FORMAT, "empty_dicts": "[]"}
  runner = export.load_exported(genuine, batch_size=2)   # builds, does not run
  assert runner.batch == 2
  flat = export.flatten_params(runner.params)[0]
  assert all(np.array_equal(flat[k], want[k]) for k in want)


def test_expected_params_are_abstract_and_match_the_file(genuine):
  cfg = read_config(genuine)
  expected, empty = export.expected_params(cfg["meta"], "config.json")
  header, _ = split(genuine)
  assert empty == []
  assert {k: tuple(v.shape) for k, v in expected.items()} == {
      k: tuple(v["shape"]) for k, v in header.items() if k != "__metadata__"}


# ----------------------------------------------------------------------------- safetensors
def test_overlapping_offsets(copy):
  def edit(h, names):
    lo, hi = h[names[1]]["data_offsets"]
    h[names[1]]["data_offsets"] = [lo - 4, hi - 4]   # same size, reaches into tensor 0
  forge_header(copy, edit)
  refused(copy, r"params\.safetensors: not a valid safetensors file .*invalid offset")


def test_aliased_offsets(copy):
  def edit(h, names):   # two same-sized tensors share bytes; the rest shift down
    a, b = names[0], names[1]
    h[b]["shape"], h[b]["data_offsets"] = h[a]["shape"], list(h[a]["data_offsets"])
  forge_header(copy, edit)
  refused(copy, r"not a valid safetensors file")


def test_negative_offsets(copy):
  def edit(h, names):
    lo, hi = h[names[0]]["data_offsets"]
    h[names[0]]["data_offsets"] = [-16, hi - lo - 16]
  forge_header(copy, edit)
  refused(copy, r"not a valid safetensors file")


def test_offsets_out_of_bounds(copy):
  def edit(h, names):
    lo, hi = h[names[-1]]["data_offsets"]
    h[names[-1]]["data_offsets"] = [lo + 4096, hi + 4096]
  forge_header(copy, edit)
  refused(copy, r"not a valid safetensors file")


def test_truncated_and_padded_body(copy):
  header, body = split(copy)
  write_params(copy, header, body[:-4])
  refused(copy, r"not a valid safetensors file")
  write_params(copy, header, body + b"\0" * 8)
  refused(copy, r"not a valid safetensors file")


def test_size_not_dtype_times_shape(copy):
  def edit(h, names):
    h[names[0]]["shape"] = [h[names[0]]["shape"][0] - 1] + h[names[0]]["shape"][1:]
  forge_header(copy, edit)
  refused(copy, r"not a valid safetensors file .*invalid shape")


def test_unknown_dtype(copy):
  def edit(h, names):
    h[names[0]]["dtype"] = "F128"
  forge_header(copy, edit)
  refused(copy, r"not a valid safetensors file .*F128")


def test_valid_file_with_the_wrong_dtype(copy):
  def edit(h, names):
    h[names[0]]["dtype"] = "I32"   # same itemsize: the file itself is consistent
  forge_header(copy, edit)
  name = tensors(split(copy)[0])[0]
  refused(copy, rf"tensor '{name}' has dtype I32, the architecture in config.json needs F32")


@pytest.mark.parametrize("how", ["length_past_end", "length_short", "not_json", "not_object",
                                 "empty_file"])
def test_bad_header(copy, how):
  header, body = split(copy)
  head = json.dumps(header).encode()
  head += b" " * (-len(head) % 8)
  if how == "length_past_end":
    write_params(copy, raw_header=head, body=body, length=10**12)
  elif how == "length_short":
    write_params(copy, raw_header=head, body=body, length=5)
  elif how == "not_json":
    write_params(copy, raw_header=b"{" + b"x" * (len(head) - 1), body=body)
  elif how == "not_object":
    write_params(copy, raw_header=b"[1, 2]  ", body=body)
  else:
    open(os.path.join(copy, PARAMS), "wb").close()
    resign(copy)
  refused(copy, r"params\.safetensors: not a valid safetensors file")


def test_wrong_tensor_shape(copy):
  """A well-formed file whose tensor does not fit the architecture."""
  from safetensors.numpy import load_file, save_file
  path = os.path.join(copy, PARAMS)
  flat = load_file(path)
  name = next(k for k in sorted(flat) if flat[k].ndim == 2)
  flat[name] = np.ascontiguousarray(flat[name].T)
  save_file(flat, path, metadata={"format": export.EXPORT_FORMAT, "empty_dicts": "[]"})
  resign(copy)
  refused(copy, rf"tensor '{name}' has shape \({flat[name].shape[0]}, "
                rf"{flat[name].shape[1]}\), the architecture in config.json needs")


def test_missing_and_extra_tensors(copy):
  from safetensors.numpy import load_file, save_file
  path = os.path.join(copy, PARAMS)
  flat = load_file(path)
  gone = sorted(flat)[0]
  save_file({k: v for k, v in flat.items() if k != gone}, path)
  resign(copy)
  refused(copy, rf"tensor '{gone}' is missing")
  save_file(dict(flat, **{"backbone/evil/kernel": np.zeros(3, np.float32)}), path)
  resign(copy)
  refused(copy, r"tensor 'backbone/evil/kernel' is not part of the architecture")


def test_checksum_mismatch(copy):
  with open(os.path.join(copy, PARAMS), "r+b") as f:
    f.seek(-4, 2)
    f.write(b"\x01\x02\x03\x04")
  refused(copy, r"does not match the sha256")


# ----------------------------------------------------------------------------- paths
@pytest.mark.parametrize("name", ["../../etc/passwd", "/etc/passwd", "sub/../../x",
                                  "..\\..\\etc\\passwd", ""])
def test_params_path_escaping(copy, name):
  cfg = read_config(copy)
  cfg["params"]["file"] = name
  write_config(copy, cfg)
  msg = refused(copy, r"config\.json: params\.file: ")
  assert "outside the export folder" in msg or "must be a file name" in msg


def test_symlink_escaping(copy, tmp_path):
  outside = tmp_path / "outside.safetensors"
  shutil.copy(os.path.join(copy, PARAMS), outside)
  os.symlink(outside, os.path.join(copy, "link.safetensors"))
  cfg = read_config(copy)
  cfg["params"]["file"] = "link.safetensors"
  write_config(copy, cfg)
  refused(copy, r"params\.file: 'link\.safetensors' resolves to .*outside the export folder")
  # a symlink inside the folder that stays inside is fine
  os.symlink(PARAMS, os.path.join(copy, "inside.safetensors"))
  cfg["params"]["file"] = "inside.safetensors"
  write_config(copy, cfg)
  export.read_exported(copy)
  # the fixed-name files may not escape either
  os.replace(os.path.join(copy, export.NORM_FILE), tmp_path / "norm.json")
  os.symlink(tmp_path / "norm.json", os.path.join(copy, export.NORM_FILE))
  refused(copy, r"norm_stats\.json: file: .*outside the export folder")


def test_params_path_is_not_a_regular_file(copy):
  os.mkdir(os.path.join(copy, "adir"))
  cfg = read_config(copy)
  cfg["params"]["file"] = "adir"
  write_config(copy, cfg)
  refused(copy, r"params\.file: 'adir' is not a regular file")


# ----------------------------------------------------------------------------- config bounds
def test_huge_observation_shape_is_refused_before_anything_is_built(copy, monkeypatch):
  set_obs_shape(copy, "object", [200000000])

  def must_not_run(*a, **k):
    raise AssertionError("built or compiled something for a refused export")
  import jax
  monkeypatch.setattr(export, "expected_params", must_not_run)
  monkeypatch.setattr(jax, "eval_shape", must_not_run)
  monkeypatch.setattr(jax, "jit", must_not_run)
  monkeypatch.setattr(inference, "runner_from_meta", must_not_run)
  t0 = time.monotonic()
  with pytest.raises(ExportError, match=r"meta\.obs_shapes\.object: .*exceed"):
    export.load_exported(copy)
  assert time.monotonic() - t0 < 10


@pytest.mark.parametrize("shape,match", [
    ([-3], "positive integer"), ([2.5], "positive integer"), (["10"], "positive integer"),
    ([], "1 to 4 dimensions"), ("10", "1 to 4 dimensions"), ([4096, 4096], "exceed"),
    ([1, 1, 1, 1, 1], "1 to 4 dimensions")])
def test_bad_observation_shapes(copy, shape, match):
  set_obs_shape(copy, "object", shape)
  refused(copy, rf"meta\.obs_shapes\.object: .*{match}")


def test_input_cap_counts_the_batch(copy):
  set_obs_shape(copy, "object", [1 << 20])    # within the per-key cap...
  refused(copy, r"meta\.obs_shapes: one call's input", batch_size=1024)   # ...not x 1024 rows
  refused(copy, r"batch_size 1000000 is outside", batch_size=10**6)


def test_image_shapes_must_fit_the_encoder(copy):
  def as_image(meta, shape):
    meta["lowdim_keys"].remove("object")
    meta["image_keys"] = ["object"]
    meta["obs_dtypes"]["object"] = "uint8"
    meta["obs_shapes"]["object"] = shape
  cfg = read_config(copy)
  del cfg["observations"]
  write_config(copy, cfg)
  edit_meta(copy, lambda m: as_image(m, [10]))
  refused(copy, r"meta\.obs_shapes\.object: an image must be \(H, W, C\)")
  edit_meta(copy, lambda m: m["obs_shapes"].update(object=[32, 32, 3]))
  refused(copy, r"meta\.obs_shapes\.object: image 32x32 is smaller than the encoder's crop 76x76")


@pytest.mark.parametrize("field,value,match", [
    ("horizon", 10**9, r"meta\.horizon: 1000000000 is outside"),
    ("horizon", -1, r"meta\.horizon: -1 is outside"),
    ("horizon", 4, r"meta\.horizon: 4 < n_obs_steps"),
    ("n_obs_steps", 1.5, r"meta\.n_obs_steps: must be an integer"),
    ("n_action_steps", 0, r"meta\.n_action_steps: 0 is outside"),
    ("stage", "pretrain", r"meta\.stage: 'pretrain' is not a policy stage"),
])
def test_bad_horizons_and_stage(copy, field, value, match):
  cfg = read_config(copy)
  cfg["meta"][field] = value
  cfg.pop(field, None)
  write_config(copy, cfg)
  refused(copy, match)


def test_summary_must_agree_with_meta(copy):
  cfg = read_config(copy)
  cfg["actions"]["shape"] = [8, 9]
  write_config(copy, cfg)
  refused(copy, r"config\.json: actions: shape must be \[8, 7\]")


def test_unknown_observation_dtype(copy):
  cfg = read_config(copy)
  cfg["meta"]["obs_dtypes"]["object"] = cfg["observations"]["object"]["dtype"] = "complex256"
  write_config(copy, cfg)
  refused(copy, r"meta\.obs_dtypes\.object: unknown dtype 'complex256'")


@pytest.mark.parametrize("edit,match", [
    (lambda c: c["backbone"].update(name="gpt5"), r"backbone\.name: unknown backbone 'gpt5'"),
    (lambda c: c["backbone"]["kwargs"].update(n_emb=10**9), r"kwargs\.n_emb: .*outside"),
    (lambda c: c["backbone"]["kwargs"].update(n_layer=10**5), r"kwargs\.n_layer: .*outside"),
    (lambda c: c["backbone"]["kwargs"].update(n_emb="32"), r"kwargs\.n_emb: .*not a valid"),
    (lambda c: c["backbone"]["kwargs"].update(evil=1), r"kwargs\.evil: not an argument"),
    (lambda c: c["head"]["diffusion"].update(num_train_steps=10**9),
     r"head\.diffusion\.num_train_steps: .*outside"),
    (lambda c: c["head"]["diffusion"].update(num_inference_steps=10**9),
     r"head\.diffusion\.num_inference_steps: .*outside"),
    (lambda c: c["head"]["diffusion"].update(sampler="magic"),
     r"head\.diffusion\.sampler: must be"),
    (lambda c: c["head"]["flow"].update(num_steps=10**9), r"head\.flow\.num_steps: .*outside"),
    (lambda c: c["head"]["flow"].update(steps=3), r"head\.flow\.steps: unknown head key"),
    (lambda c: c["head"].update(flow=[1]), r"head\.flow: must be a mapping"),
    (lambda c: c["head"].update(type=["flow"]), r"head\.type: must be a string"),
    (lambda c: c["head"].update(type="gan"), r"head\.type: must be one of"),
    (lambda c: c["head"].update(flow_num_steps=3), r"head\.flow_num_steps: unknown head key"),
    # the flat head of exports written before the typed sections: checked the same way
    (lambda c: c.update(head={"type": "flow", "flow_num_steps": 10**9}),
     r"head\.flow\.num_steps: .*outside"),
    (lambda c: c.update(head={"type": "diffusion", "num_inferense_steps": 3}),
     r"head\.num_inferense_steps: unknown head key"),
    (lambda c: c["encoder"].update(crop_size=[1, 2, 3]), r"encoder\.crop_size: must be"),
    (lambda c: c.update(compute_dtype="float8"), r"compute_dtype: must be one of"),
])
def test_bad_architecture(copy, edit, match):
  edit_meta(copy, lambda m: edit(m["config"]))
  refused(copy, match)


def test_head_overrides_are_bounded(copy):
  refused(copy, r"head\.diffusion\.num_inference_steps: .*outside",
          head_overrides={"diffusion": {"num_inference_steps": 10**8}})
  refused(copy, r"head\.flow\.num_steps: .*outside",
          head_overrides={"flow": {"num_steps": 10**8}})


def test_flat_head_of_older_exports_loads_as_its_typed_form(copy, monkeypatch):
  """config.json written before the typed head sections carries the flat head
  (`flow_num_steps`, shared `clip_range`/`num_noise_samples`): it loads and builds the same
  head, serve's overrides (typed) apply to it, and the summary reads it."""
  from decoupled_jax import heads
  from decoupled_jax.pipelines.records import _legacy_head
  typed = read_config(copy)["meta"]["config"]["head"]
  assert set(typed) == {"type", "diffusion", "flow"}
  flat = _legacy_head(typed)
  assert "flow_num_steps" in flat and "diffusion" not in flat
  assert heads.make_head(flat) == heads.make_head(typed)
  edit_meta(copy, lambda m: m["config"].update(head=flat))
  built = []
  real = inference.make_head
  monkeypatch.setattr(inference, "make_head", lambda c: built.append(real(c)) or built[-1])
  export.load_exported(copy)
  assert built[-1] == heads.make_head(typed)
  export.load_exported(copy, head_overrides={"diffusion": {"sampler": "ddpm",
                                                           "num_inference_steps": 7},
                                             "flow": {"num_steps": 7}})
  assert (built[-1].sampler, built[-1].inference_steps) == ("ddpm", 7)
  assert export._sampler_summary(flat) == export._sampler_summary(typed)


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", "\xff\xfe", "[" * 100000])
def test_malformed_config_json(copy, text):
  with open(os.path.join(copy, "config.json"), "w", encoding="latin-1") as f:
    f.write(text)
  refused(copy, r"config\.json")


def test_malformed_normaliser(copy):
  with open(os.path.join(copy, export.NORM_FILE), "w") as f:
    json.dump({"format": "decoupled_jax.limits_normalizer.v1",
               "fields": {"actions": {"min": [0, 0], "max": [1]}}}, f)
  refused(copy, r"norm_stats\.json|not a valid normaliser")


# ----------------------------------------------------------------------------- binaries
def _forge_for_binary(genuine, root, case):
  out = str(root / case)
  shutil.copytree(genuine, out)
  if case == "overlap":
    forge_header(out, lambda h, n: h[n[1]].update(
        data_offsets=[h[n[1]]["data_offsets"][0] - 4, h[n[1]]["data_offsets"][1] - 4]))
  elif case == "dtype":
    forge_header(out, lambda h, n: h[n[0]].update(dtype="X9"))
  elif case == "header":
    header, body = split(out)
    write_params(out, raw_header=b"{" * 16, body=body)
  elif case == "escape":
    cfg = read_config(out)
    cfg["params"]["file"] = "../../etc/passwd"
    write_config(out, cfg)
  elif case == "huge":
    set_obs_shape(out, "object", [200000000])
  elif case == "backbone":
    edit_meta(out, lambda m: m["config"]["backbone"].update(name="nope"))
  elif case == "json":
    with open(os.path.join(out, "config.json"), "w") as f:
      f.write("{\"format\": ")
  return out


def test_binaries_print_one_error_line(genuine, tmp_path):
  """experiments/serve.py --export=<forged>: exit 2, one `error:` line, no traceback, fast."""
  cases = {"overlap": "invalid offset", "dtype": "X9", "header": "not a valid safetensors",
           "escape": "outside the export folder", "huge": "meta.obs_shapes.object",
           "backbone": "unknown backbone 'nope'", "json": "malformed JSON"}
  procs = {}
  env = dict(os.environ, MUJOCO_GL=os.environ.get("MUJOCO_GL", "egl"))
  for case in cases:
    folder = _forge_for_binary(genuine, tmp_path, case)
    procs[case] = subprocess.Popen(
        [sys.executable, os.path.join(REPO, "experiments", "serve.py"), f"--export={folder}",
         "--port=0", "--host=127.0.0.1", "--nocompilation_cache"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  failures = []
  for case, proc in procs.items():
    try:
      _, err = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
      proc.kill()
      proc.communicate()
      failures.append(f"{case}: still running (served a forged export?)")
      continue
    lines = [l for l in err.splitlines() if l.startswith("error:")]
    if proc.returncode != 2 or len(lines) != 1 or "Traceback" in err or \
        cases[case] not in lines[0]:
      failures.append(f"{case}: rc={proc.returncode} stderr={err[-1500:]}")
  assert not failures, "\n".join(failures)


# ----------------------------------------------------------------------------- no false refusals
@pytest.mark.parametrize("arch", ["dp_c", "dp_t", "unified_cross_attn"])
def test_shipped_architectures_with_images_are_accepted(genuine, arch):
  """The checks refuse forgeries, not real policies: other backbones and camera inputs pass
  validation, and their expected param tree is computed abstractly."""
  from decoupled_jax import config_lib
  meta = read_config(genuine)["meta"]
  meta["config"]["backbone"] = {"name": arch, "kwargs": config_lib.debug_backbone_kwargs(
      arch.split("_cross")[0])}
  meta["config"]["encoder"] = {"crop_size": [76, 76], "stage_widths": [8, 8, 8, 8]}
  meta["image_keys"] = ["agentview_image"]
  meta["obs_shapes"]["agentview_image"] = [84, 84, 3]
  meta["obs_dtypes"]["agentview_image"] = "uint8"
  with open(os.path.join(genuine, export.NORM_FILE)) as f:
    meta["normalizer"] = json.load(f)
  export.validate_policy_meta(meta, "meta", batch_size=8)
  expected, _ = export.expected_params(meta, "meta")
  assert any(k.startswith("encoder/rgb_agentview_image/") for k in expected)
  assert any(k.startswith("backbone/") for k in expected)
