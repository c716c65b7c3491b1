# `make test` and `make demo` work on a fresh machine: without an active
# virtualenv they create .venv and install the project into it.
ifdef VIRTUAL_ENV
PYTHON := $(VIRTUAL_ENV)/bin/python
SETUP_TARGET :=
else
PYTHON := .venv/bin/python
SETUP_TARGET := .venv/.installed
endif

# The Keras backend picks the training engine: `KERAS_BACKEND=jax make demo`
# trains with JAX. The test process itself stays on TensorFlow; the tests run
# the JAX engine in subprocesses.
export KERAS_BACKEND

.PHONY: install test test-fast demo lint clean

.venv/.installed: setup.py
	test -x .venv/bin/python || python3 -m venv .venv
	.venv/bin/pip install --upgrade pip
	.venv/bin/pip install -e ".[test]"
	# OpenVINO (an export extra) reports usage to Intel unless opted out.
	-.venv/bin/opt_in_out --opt_out >/dev/null
	touch $@

install: $(SETUP_TARGET)
ifdef VIRTUAL_ENV
	$(PYTHON) -m pip install -e ".[test]"
endif

# Three workers on two cores: a worker waits for a tenth of its time (for the
# scripts it runs, and for tf.data threads to stop), and the third fills it.
TEST_WORKERS ?= 3

test: install
	KERAS_BACKEND=tensorflow $(PYTHON) -m pytest -n $(TEST_WORKERS) tests

# Everything but the end-to-end runs marked slow.
test-fast: install
	KERAS_BACKEND=tensorflow $(PYTHON) -m pytest -n $(TEST_WORKERS) -m "not slow" tests

demo: install
	$(PYTHON) -m tf_pacseg.cli.demo --work_dir demo_work --output_dir demo_output

lint: install
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .

clean:
	rm -rf demo_work demo_output .pytest_cache
