# dronevision: `make demo` and `make test` each set up .venv on their own.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# torch is installed first and pinned: on these machines both come from a local cache (a CUDA build that also
# runs on the CPU). Override on other machines, e.g. make TORCH="torch torchvision".
TORCH  ?= torch==2.14.1 torchvision==0.29.1
STAMP  := $(VENV)/.installed

.PHONY: install demo test test-fast test-gpu lint clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

DEMO   ?= runs/demo
## demo: bundled aerial-cars -> leakage-free dataset -> train yolov8n -> evaluate -> ONNX; prints where everything is
demo: $(STAMP)
	$(PY) -m dronevision.dataset source.format=yolo source.path=data/samples/aerial-cars split=roboflow_flights \
		out_dir=$(DEMO)/dataset overwrite=true
	$(PY) -m dronevision.train experiment=vehicles_v1 dataset.path=$(DEMO)/dataset out_dir=$(DEMO)/train

## test: the whole suite, fast and slow tests (GPU tests skip themselves without a GPU)
test: $(STAMP)
	$(PY) -m pytest

test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow"

test-gpu: $(STAMP)
	$(PY) -m pytest -m gpu

lint: $(STAMP)
	$(PY) -m ruff check src tests scripts
	$(PY) -m ruff format --check src tests scripts

clean:
	rm -rf runs mlruns .pytest_cache
