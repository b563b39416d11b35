# `make demo` and `make test` each set up .venv on a fresh machine, then do their job.
PYTHON ?= python3.11
VENV := .venv
INSTALL := $(VENV)/bin/pip install --disable-pip-version-check --progress-bar off -q
TORCH := torch==2.14.1 torchvision==0.29.1

.PHONY: demo test bench schema docs clean

demo: $(VENV)/.installed
	$(VENV)/bin/instarun recipes/demo.yaml

test: $(VENV)/.installed-dev
	bash scripts/system-deps.sh
	$(VENV)/bin/python -m pytest -q

bench: $(VENV)/.installed-bench
	$(VENV)/bin/python -m bench

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

# torch first: pip takes these builds from this machine's disk (timm needs torchvision).
$(VENV)/.torch: | $(VENV)/bin/python
	$(INSTALL) $(TORCH)
	touch $@

$(VENV)/.installed: pyproject.toml $(VENV)/.torch
	$(INSTALL) -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml $(VENV)/.torch
	$(INSTALL) -e '.[dev]'
	touch $@ $(VENV)/.installed

$(VENV)/.installed-bench: pyproject.toml $(VENV)/.installed-dev
	$(INSTALL) -e '.[dev,bench]'
	touch $@

# regenerate the JSON Schemas after changing instageo/recipe/models.py or instageo/outputs.py
schema: $(VENV)/.installed
	$(VENV)/bin/instarun schema recipe > schemas/recipe.schema.json
	$(VENV)/bin/instarun schema report > schemas/report.schema.json
	$(VENV)/bin/instarun schema bundle > schemas/bundle.schema.json

# regenerate docs/recipes.md (the reference of every recipe field) from the same model
docs: $(VENV)/.installed
	$(VENV)/bin/python -m instageo.recipe.docs > docs/recipes.md

clean:
	rm -rf $(VENV) runs
