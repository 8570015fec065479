"""Hostile RLDS datasets: a features.json that names a class outside TFDS (TFDS would import
its module: code the dataset carries) and truncated array_record shards. Each is refused with
one `DatasetError` line naming the file (`decoupled_jax/data/rlds.py`)."""

import copy
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import uuid

import numpy as np
import pytest

from decoupled_jax.data import rlds, sources
from decoupled_jax.data.episodes import EpisodeData
from decoupled_jax.data.robomimic_hdf5 import DatasetError

KEYS = ["robot0_eef_pos"]


@pytest.fixture(scope="module")
def export(tmp_path_factory):
  """A small real RLDS export written by our own writer (two episodes, low-dim only)."""
  rng = np.random.default_rng(0)
  n = 10
  ep = EpisodeData({"actions": rng.normal(size=(n, 7)), "robot0_eef_pos": rng.normal(size=(n, 3))},
                   np.array([4, 10]), source="hostile-test", attrs={"env_args": {"env_name": "Lift"}})
  out = str(tmp_path_factory.mktemp("rlds") / "rlds")
  rlds.export_rlds(ep, out)
  assert sources.load_episodes(out, KEYS, format="rlds").num_episodes == 2
  return out


def _copy(export, dst):
  shutil.copytree(export, dst)
  return rlds.find_version_dir(dst)


# ----------------------------------------------------------------------------- feature classes
def _plant(vdir, marker):
  """A package in the dataset folder whose import writes `marker`; returns its class name."""
  pkg = f"hostile_{uuid.uuid4().hex[:12]}"
  os.makedirs(os.path.join(vdir, pkg))
  open(os.path.join(vdir, pkg, "__init__.py"), "w").close()
  with open(os.path.join(vdir, pkg, "payload.py"), "w") as f:
    f.write(f"open({str(marker)!r}, 'w').write('code ran')\n")
  return pkg, f"{pkg}.payload.Evil"


def _edit_json(path, fn):
  with open(path) as f:
    d = json.load(f)
  d = fn(d)
  with open(path, "w") as f:
    json.dump(d, f)


def _steps(d):
  return d["featuresDict"]["features"]["steps"]["sequence"]["feature"]["featuresDict"]["features"]


def _nested_proto(d, cls):           # steps/observation/robot0_eef_pos, deep inside Dataset
  _steps(d)["observation"]["featuresDict"]["features"]["robot0_eef_pos"]["pythonClassName"] = cls
  return d


def _snake_case_field(d, cls):       # protobuf's JSON parser takes the proto field name too
  md = d["featuresDict"]["features"]["episode_metadata"]["featuresDict"]["features"]
  md["demo_name"] = {"python_class_name": cls, "text": {}}
  return d


def _legacy_type(d, cls):            # the legacy {"type", "content"} form, at the top
  del d
  return {"type": cls, "content": {}}


def _inside_json_string(d, cls):     # a FeaturesDict whose content is JSON in a string
  _steps(d)["action"] = {
      "pythonClassName": "tensorflow_datasets.core.features.features_dict.FeaturesDict",
      "jsonFeature": {"json": json.dumps({"x": {"type": cls, "content": {}}})}}
  return d


FEATURES_JSON_ATTACKS = {"nested_proto": _nested_proto, "snake_case_field": _snake_case_field,
                         "legacy_type": _legacy_type, "inside_json_string": _inside_json_string}


def _craft(export, root, name):
  """A hostile copy of `export`; returns (version dir, file edited, package, class, marker)."""
  vdir = _copy(export, str(root / name))
  marker = root / f"{name}.MARKER"
  pkg, cls = _plant(vdir, marker)
  if name == "dataset_info_features":  # TFDS prefers dataset_info.json's `features` when set
    edited = os.path.join(vdir, "dataset_info.json")
    feats = json.load(open(os.path.join(vdir, "features.json")))
    _edit_json(edited, lambda d: {**d, "features": _nested_proto(copy.deepcopy(feats), cls)})
  else:
    edited = os.path.join(vdir, "features.json")
    _edit_json(edited, lambda d: FEATURES_JSON_ATTACKS[name](d, cls))
  return vdir, edited, pkg, cls, marker


def test_crafted_feature_class_is_refused_before_tfds_imports_it(export, tmp_path, monkeypatch):
  names = list(FEATURES_JSON_ATTACKS) + ["dataset_info_features"]
  crafted = {n: _craft(export, tmp_path, n) for n in names}
  # our reader: one clear line naming the file and the class, and the module never imported,
  # although the planted package is importable (its folder first on sys.path)
  for name, (vdir, edited, pkg, cls, marker) in crafted.items():
    with monkeypatch.context() as m:
      m.syspath_prepend(vdir)
      for path in (vdir, os.path.dirname(os.path.dirname(vdir))):   # version dir or out_dir
        with pytest.raises(DatasetError) as e:
          sources.load_episodes(path, KEYS, format="rlds")
        msg = str(e.value)
        assert msg.startswith(f"{edited}: feature '"), (name, msg)
        assert f"names class '{cls}', not one of TFDS's own feature classes" in msg, (name, msg)
        assert "\n" not in msg
      assert not marker.exists(), name
      assert not any(k == pkg or k.startswith(pkg + ".") for k in sys.modules), name
  # the attacks are real: TFDS itself, unguarded, imports the planted module
  script = textwrap.dedent("""
      import json, sys
      import tensorflow_datasets as tfds
      for vdir in json.loads(sys.argv[1]):
        sys.path.insert(0, vdir)
        try:
          tfds.builder_from_directory(vdir)
        except Exception:
          pass
  """)
  r = subprocess.run([sys.executable, "-c", script,
                      json.dumps([c[0] for c in crafted.values()])],
                     capture_output=True, text=True, timeout=300)
  assert r.returncode == 0, r.stderr[-2000:]
  for name, (_, _, _, _, marker) in crafted.items():
    assert marker.exists(), f"{name}: TFDS did not run the planted code; the test proves nothing"


def test_allow_list_is_tfds_own_feature_classes(export):
  """The allow-list names exactly the feature classes TFDS registers itself, and our exports
  (and every other TFDS feature name) pass."""
  from tensorflow_datasets.core.features import feature
  tfds_own = {k for k in feature.FeatureConnector._registered_features
              if k.startswith("tensorflow_datasets.core.features.")}
  assert rlds.TFDS_FEATURE_CLASSES == tfds_own
  rlds.check_feature_classes(rlds.find_version_dir(export))


# ----------------------------------------------------------------------------- array_record
@pytest.mark.parametrize("size", ["half", 65536, 1000, 0])
def test_truncated_array_record_names_the_file(export, tmp_path, size):
  vdir = _copy(export, str(tmp_path / "ds"))
  (shard,) = glob.glob(os.path.join(vdir, "*.array_record-*"))
  os.truncate(shard, os.path.getsize(shard) // 2 if size == "half" else size)
  with pytest.raises(DatasetError) as e:
    sources.load_episodes(vdir, KEYS, format="rlds")
  msg = str(e.value)
  assert msg.startswith(f"{shard}: array_record file is truncated or corrupt ("), msg
  assert "\n" not in msg and "NoneType" not in msg


def test_missing_array_record_names_the_file(export, tmp_path):
  vdir = _copy(export, str(tmp_path / "ds"))
  (shard,) = glob.glob(os.path.join(vdir, "*.array_record-*"))
  os.remove(shard)
  with pytest.raises(DatasetError, match=rf"^{re.escape(shard)}: array_record file of split "
                                         r"'train' is missing$"):
    sources.load_episodes(vdir, KEYS, format="rlds")
