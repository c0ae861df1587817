# Quick start: `make train` trains the embedded default; `make test` runs the tests.
# Both create .venv/ with the pinned dependencies (requirements.lock) on first use.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: train test bench install clean

install: $(STAMP)

$(STAMP): requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r requirements.lock
	touch $(STAMP)

train: $(STAMP)
	$(VENV)/bin/python launch.py train --config configs/tiny.py

test: $(STAMP)
	$(VENV)/bin/python -m pytest

bench: $(STAMP)
	$(VENV)/bin/python launch.py bench --config configs/tiny.py

clean:
	rm -rf $(VENV) runs data_cache .pytest_cache
