# One command each, from a fresh clone:  `make demo` (the main job)  and  `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
WORKDIR ?= workdirs/quickstart

.PHONY: setup demo test test-slow benchmark clean

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

test: setup
	MUJOCO_GL=egl $(PY) -m pytest -q tests

test-slow: setup
	MUJOCO_GL=egl $(PY) -m pytest -q -m slow tests

benchmark: setup
	$(PY) experiments/benchmark.py --output=$(WORKDIR)/benchmark.json

clean:
	rm -rf $(VENV) workdirs
