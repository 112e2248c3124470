# Two commands do all the set-up on a fresh machine:
#   make demo   create .venv if needed, install, run the main job end to end
#   make test   create .venv if needed, install, run the whole test suite
#   make toy    rebuild the toy CLIP's weights into the package (cachekit/data/toy-clip.safetensors)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.clipcache-installed
export HF_HUB_OFFLINE ?= 1
export PYTHONUNBUFFERED := 1

.PHONY: install demo test test-fast bench toy clean

$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/clipcache demo --out demo-out $(DEMO_ARGS)

test: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider -m "not slow" $(PYTEST_ARGS)

toy: $(STAMP)
	$(VENV)/bin/clipcache pretrain-toy --out cachekit/data/toy-clip.safetensors $(TOY_ARGS)

bench: $(STAMP)
	$(PY) benchmarks/run_all.py

clean:
	rm -rf demo-out .pytest_cache
