# The two commands a new user runs: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP_RUN := $(VENV)/.stamp-run
STAMP_DEV := $(VENV)/.stamp-dev
DEMO_STORE ?= demo-store.zarr

.PHONY: demo test lint bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP_RUN): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(STAMP_DEV): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[dev,train]"
	touch $@ $(STAMP_RUN)

demo: $(STAMP_RUN)
	$(BIN)/synth build manifests/demo.yaml -o $(DEMO_STORE) --workers 2 --overwrite
	$(BIN)/synth preview $(DEMO_STORE) -n 18 --by-kind -o demo-preview.png --html demo-gallery

test: $(STAMP_DEV)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

lint: $(STAMP_DEV)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) $(DEMO_STORE) demo-preview.png demo-gallery
