# Quick start: `make train` trains the embedded default; `make test` runs the tests.
# Both create .venv/ with the pinned dependencies on first use (the CPU lock, requirements.lock).
#
# make install ACCEL=tpu     TPU VM: jax[tpu] with its libtpu (requirements-tpu.lock)
# make install ACCEL=cuda12  NVIDIA GPUs, CUDA 12 wheels (requirements-cuda12.lock); or cuda13
# make install               CPU (requirements.lock); ACCEL defaults to what .venv/ holds, else cpu
# make lock                  regenerate every lock from requirements.in (tools/lock.py)
PYTHON ?= python3
VENV := .venv
ACCEL ?= $(or $(shell cat $(VENV)/.accel 2>/dev/null),cpu)
LOCK_cpu := requirements.lock
LOCK_tpu := requirements-tpu.lock
LOCK_cuda12 := requirements-cuda12.lock
LOCK_cuda13 := requirements-cuda13.lock
LOCK := $(LOCK_$(ACCEL))
STAMP := $(VENV)/.installed-$(ACCEL)
TEST_STAMP := $(VENV)/.installed-test

ifeq ($(LOCK),)
$(error ACCEL=$(ACCEL) is not one of cpu, tpu, cuda12, cuda13)
endif

.PHONY: train test bench install lock clean

install: $(STAMP)

# A venv holds one accelerator's stack: switching ACCEL starts it afresh.
$(STAMP): $(LOCK)
	@if [ -f $(VENV)/.accel ] && [ "$$(cat $(VENV)/.accel)" != $(ACCEL) ]; then \
	  echo "$(VENV) holds the $$(cat $(VENV)/.accel) stack; replacing it with $(ACCEL)"; rm -rf $(VENV); fi
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r $(LOCK)
	echo $(ACCEL) > $(VENV)/.accel
	touch $(STAMP)

$(TEST_STAMP): $(STAMP) requirements-test.lock
	$(VENV)/bin/pip install --quiet -r requirements-test.lock -c $(LOCK)
	touch $(TEST_STAMP)

train: $(STAMP)
	$(VENV)/bin/python launch.py train --config configs/tiny.py

test: $(TEST_STAMP)
	$(VENV)/bin/python -m pytest -n 2 --dist loadfile

bench: $(STAMP)
	$(VENV)/bin/python launch.py bench --config configs/tiny.py

lock:
	$(PYTHON) tools/lock.py cpu tpu cuda12 cuda13 test

clean:
	rm -rf $(VENV) runs data_cache .pytest_cache
