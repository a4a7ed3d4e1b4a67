# Two entry points; each creates or reuses the local virtual environment .venv by itself.
#   make demo   train a small BNN on the bundled MNIST, check it, verify the RTL, run it
#               on the simulated board through the host link, build it for the Arty
#   make test   run the whole test suite
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
BNNHW := $(VENV)/bin/bnnhw
DEMO := build/demo

.PHONY: demo test venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BNNHW) train --model sfc --data mnist --epochs 10 --out $(DEMO)/sfc.pt
	$(BNNHW) check --model $(DEMO)/sfc.pt --images 1000
	$(BNNHW) verify --model $(DEMO)/sfc.pt --images 1000 --stall 0.2
	$(BNNHW) infer --sim --model $(DEMO)/sfc.pt
	$(BNNHW) build --board arty --model $(DEMO)/sfc.pt --out $(DEMO)/sfc-arty

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/python -m pytest -n 2 -q

clean:
	rm -rf $(VENV) build .pytest_cache
