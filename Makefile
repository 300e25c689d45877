# Two commands on a fresh machine: `make demo` and `make test`. Both set up .venv themselves.
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.vitmae-installed
# The torch build to install; this project's machines carry these wheels locally. Override on others,
# e.g. `make test TORCH_SPEC="torch torchvision"`.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
FMNIST := /usr/share/datasets/fashion-mnist

.PHONY: setup demo test test-fast pictures clean gpu-carry

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@if [ ! -d $(FMNIST) ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing dataset-fashion-mnist"; \
		apt-get install -y -q dataset-fashion-mnist >/dev/null || \
		{ apt-get update -q >/dev/null && apt-get install -y -q dataset-fashion-mnist >/dev/null; }; \
	fi
	@if ! command -v chromium >/dev/null && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing chromium (the demo's browser test)"; \
		apt-get install -y -q chromium chromium-driver >/dev/null || \
		{ apt-get update -q >/dev/null && apt-get install -y -q chromium chromium-driver >/dev/null; }; \
	fi
	@if ! command -v ip >/dev/null && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing iproute2 (the two-node training test)"; \
		apt-get install -y -q iproute2 >/dev/null || \
		{ apt-get update -q >/dev/null && apt-get install -y -q iproute2 >/dev/null; }; \
	fi
	@[ -x $(PY) ] || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check $(TORCH_SPEC)
	$(PY) -m pip install -q --disable-pip-version-check -e ".[dev]"
	@touch $(STAMP)

# Pre-train on Fashion-MNIST without labels (CPU: about 5 minutes), then measure what the encoder learned:
# kNN on its frozen features, and fine-tuning with 10% of the labels; then the HTML report.
demo: $(STAMP)
	$(VENV)/bin/vitmae pretrain --output runs/demo --overwrite
	$(VENV)/bin/vitmae knn --checkpoint runs/demo --output runs/demo/knn
	$(VENV)/bin/vitmae finetune --checkpoint runs/demo --labels-fraction 0.1 --epochs 5 --warmup-epochs 0.5 \
		--blr 5e-3 --batch-size 64 --crop-min-scale 1.0 --output runs/demo/finetune --overwrite
	$(VENV)/bin/vitmae report runs/demo

pictures: $(STAMP)
	$(PY) scripts/readme_pictures.py runs/demo --out docs/images

# Both cores (pytest-xdist), the 25 slowest tests listed, a per-test timeout (pyproject.toml).
test: $(STAMP)
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q -n 2 --durations=25

test-fast: $(STAMP)
	$(PY) -m pytest -q -n 2 --durations=10 -m "not slow and not subprocess"

# What scripts/gpu_session.sh needs next to the checkout on a lent GPU machine (git-ignored, carried):
# .whl/ (torchao) and .gpu/fashion-mnist/; prints their size with the checkout's (limit 64 MiB).
gpu-carry:
	bash scripts/gpu_carry.sh

clean:
	rm -rf $(VENV) runs .pytest_cache
