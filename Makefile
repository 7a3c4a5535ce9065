PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test serve demo install clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# Re-install when the project's dependencies change.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "torch==2.14.1" "torchaudio==2.11.*"
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q -ra $(PYTEST_ARGS)

# The gateway on 127.0.0.1:8000 with the trained demo models of models/demo (docs/demo-model.md):
# images and video go to the vision model, audio to the audio model. SERVE_ARGS="--model DIR"
# serves another checkpoint. `make demo` runs the offline generation demo instead.
serve: $(STAMP)
	$(PY) -m service --host 127.0.0.1 --port 8000 $(SERVE_ARGS)

demo: $(STAMP)
	$(PY) -m llm_core.demo $(DEMO_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
