# dronevision: `make demo` and `make test` each set up .venv on their own.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# torch is installed first and pinned: on these machines both come from a local cache (a CUDA build that also
# runs on the CPU). Override on other machines, e.g. make TORCH="torch torchvision".
TORCH  ?= torch==2.14.1 torchvision==0.29.1
STAMP  := $(VENV)/.installed
# One OpenCV (tests/test_environment.py): every OpenCV wheel installs cv2/ and the one installed last wins. We depend
# on ultralytics-opencv-headless and opencv-python-headless, but sahi and trackeval (dev) require opencv-python,
# so after the install that GUI build is removed and the headless wheel (same version) reinstalled over the cv2/ files
# the removal took. `pip check` then reports their opencv-python as missing; both work with the headless cv2.
# A venv from before the switch has the `ultralytics` distribution, which shares ultralytics/ with the headless one:
# both are removed first so that the install below lays the package down once.
HEADLESS = $$($(PY) -m pip show opencv-python-headless | sed -n 's/^Version: //p')

.PHONY: install demo test test-fast test-gpu lint clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet $(TORCH)
	! $(PY) -m pip show --quiet ultralytics 2>/dev/null || \
		$(PY) -m pip uninstall --quiet -y ultralytics ultralytics-opencv-headless
	$(PY) -m pip install --quiet -e '.[dev]'
	! $(PY) -m pip show --quiet opencv-python 2>/dev/null || { $(PY) -m pip uninstall --quiet -y opencv-python && \
		$(PY) -m pip install --quiet --force-reinstall --no-deps "opencv-python-headless==$(HEADLESS)"; }
	touch $(STAMP)

install: $(STAMP)

DEMO   ?= runs/demo
## demo: flyover videos -> sample -> labels -> dataset -> 1 epoch; then the bundled aerial-cars -> dataset ->
##       augment preview -> train yolov8n -> evaluate (COCO + VisDrone protocols) -> export FP32/FP16/INT8 (ONNX
##       Runtime and OpenVINO) -> benchmark both against the footage target -> track the flyovers with the trained
##       model (unique sightings; MOTA/IDF1/HOTA against the flyovers' ground truth). export.force=true: the demo
##       keeps every variant and reports each one's mAP50 drop (a 12-epoch model can lose more than max_map_drop in
##       INT8, which would otherwise stop the demo with exit 2). DEMO_EPOCHS: the model's training is cut from
##       vehicles_v1's 20 epochs to 12 so that the whole demo stays under 15 minutes on a 2-core CPU (the training
##       is most of it: 20 epochs took 15 of the 19.5 minutes on 2026-12-06); `make demo DEMO_EPOCHS=20` for more.
DEMO_EPOCHS ?= 12
demo: $(STAMP)
	rm -rf $(DEMO)/flights $(DEMO)/sample
	$(PY) -m dronevision.synth out_dir=$(DEMO)/flights name=flightA seed=1 n_frames=300 fps=10
	$(PY) -m dronevision.synth out_dir=$(DEMO)/flights name=flightB seed=2 n_frames=300 fps=10
	$(PY) -m dronevision.sample input=$(DEMO)/flights out_dir=$(DEMO)/sample \
		labels.format=visdrone-vid labels.path=$(DEMO)/flights/annotations
	$(PY) -m dronevision.dataset source.format=visdrone-vid source.path=$(DEMO)/sample/labelled taxonomy=vehicles \
		split.val_fraction=0.5 out_dir=$(DEMO)/flights-dataset overwrite=true
	$(PY) -m dronevision.train dataset.path=$(DEMO)/flights-dataset train.epochs=1 train.imgsz=320 \
		out_dir=$(DEMO)/flights-train mlflow.experiment=demo-flyover
	$(PY) -m dronevision.dataset source.format=yolo source.path=data/samples/aerial-cars split=roboflow_flights \
		out_dir=$(DEMO)/dataset overwrite=true
	rm -rf $(DEMO)/augment-preview $(DEMO)/evaluate $(DEMO)/export $(DEMO)/benchmark $(DEMO)/benchmark-int8
	$(PY) -m dronevision.augment preview dataset.path=$(DEMO)/dataset augment=aerial out_dir=$(DEMO)/augment-preview
	$(PY) -m dronevision.train experiment=vehicles_v1 train.epochs=$(DEMO_EPOCHS) dataset.path=$(DEMO)/dataset \
		out_dir=$(DEMO)/train
	$(PY) -m dronevision.evaluate weights=$(DEMO)/train/train/weights/best.pt dataset.path=$(DEMO)/dataset \
		out_dir=$(DEMO)/evaluate
	$(PY) -m dronevision.export weights=$(DEMO)/train/train/weights/best.pt out_dir=$(DEMO)/export \
		export.dynamic=true export.half=true export.int8=true export.openvino_int8=true \
		export.calibration=$(DEMO)/dataset export.force=true
	$(PY) -m dronevision.benchmark model=$(DEMO)/export/model_fp32.onnx out_dir=$(DEMO)/benchmark \
		images=$(DEMO)/dataset
	$(PY) -m dronevision.benchmark model=$(DEMO)/export/model_int8_openvino_model out_dir=$(DEMO)/benchmark-int8 \
		images=$(DEMO)/dataset 'runtime=[openvino]' 'batch=[1,4]' openvino.streams=2 openvino.u8_input=true
	rm -rf $(DEMO)/track
	$(PY) -m dronevision.track model=$(DEMO)/export/model_fp32.onnx input=$(DEMO)/flights out_dir=$(DEMO)/track \
		labels.format=visdrone-vid labels.path=$(DEMO)/flights/annotations

## test: the whole suite, fast and slow tests (GPU tests skip themselves without a GPU): five pytest processes in two
##       chains side by side, balanced by measured time, each process's output printed when it ends, then each
##       one's time (scripts/run_tests.sh says why, and keeps the two Ray files apart).
test: $(STAMP)
	PY=$(PY) bash scripts/run_tests.sh

test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow"

test-gpu: $(STAMP)
	$(PY) -m pytest -m gpu

lint: $(STAMP)
	$(PY) -m ruff check src tests scripts
	$(PY) -m ruff format --check src tests scripts

clean:
	rm -rf runs mlruns .pytest_cache
