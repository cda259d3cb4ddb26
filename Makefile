# nasx: the two commands a new user runs are `make demo` and `make test`.
# Both create .venv/ with everything nasx needs, build nasx into it and run.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The torch nasx is built against. torch >= 2.4 works; this pair is the tested one.
TORCH_PKGS ?= torch==2.14.1 torchvision==0.29.1
BUILD_PKGS := numpy pybind11 scikit-build-core 'cmake>=4' ninja
# nasx's runtime dependencies beyond torch and numpy (pyproject.toml `dependencies`).
RUNTIME_PKGS := scipy matplotlib pycocotools Pillow
# Test and benchmark peers, and the optional Ray backend, TensorBoard logs and ONNX export (pyproject's extras)
# so their tests run.
TEST_PKGS := pytest hypothesis moocore pymoo 'ray>=2.9' tensorboard 'onnx>=1.16' 'onnxscript>=0.5' 'onnxruntime>=1.25'
DEPS := $(VENV)/.nasx-deps
# OpenMP's waiting policy is left to the environment. Measured on this 2-core CPU, FCOS at 128 px, batch 16:
# quiet, spinning threads (the default) take 0.13 s per training step and passive ones 0.36 s; on a machine
# loaded by other jobs spinning threads steal the working ones' cores (a 10x slower step was measured), so
# there `make demo OMP_WAIT_POLICY=PASSIVE` (or exporting it) is the faster choice.

# A second environment with the CPU-only torch build, to prove nasx builds without CUDA.
CPU_VENV ?= .venv-cpu-torch
CPU_TORCH ?= torch==2.13.0

.PHONY: demo demo-sm-nas demo-adapt demo-nas-eod test install bench gpu-check test-cpu-torch clean

$(DEPS): Makefile pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install $(TORCH_PKGS) $(BUILD_PKGS) $(RUNTIME_PKGS) $(TEST_PKGS)
	@touch $@

install: $(DEPS)
	$(BIN)/pip install --no-build-isolation --no-deps .

# The NAS-FCOS search end to end on the embedded dataset (generated on first use) into runs/demo/.
# Run it again after an interruption: it resumes. DEMO_ARGS adds flags (e.g. DEMO_ARGS="--device cuda").
DEMO_DATA ?= data/synth
DEMO_OUT ?= runs/demo
DEMO_ARGS ?=
demo: install
	@test -f $(DEMO_DATA)/annotations/instances_val.json || $(BIN)/nasx data synth --out $(DEMO_DATA)
	$(BIN)/nasx search nas-fcos --data $(DEMO_DATA) --out $(DEMO_OUT) --budget-minutes 14 --workers 2 \
		--macs-limit 1.0 --backbone-steps 1000 --retrain-steps 150 --seed-steps 400 $(DEMO_ARGS)

# SM-NAS end to end on the embedded dataset at 1/4 width and 0.16 x the paper's input sizes (800 x 600 -> 128 x 96).
SM_NAS_OUT ?= runs/demo-sm-nas
demo-sm-nas: install
	@test -f $(DEMO_DATA)/annotations/instances_val.json || $(BIN)/nasx data synth --out $(DEMO_DATA)
	$(BIN)/nasx search sm-nas --data $(DEMO_DATA) --out $(SM_NAS_OUT) --budget-minutes 13 --workers 2 \
		--width 0.25 --input-scale 0.16 --rois-per-image 64 --proposals 300 --short-steps 60 --short-batch-size 16 \
		--short-val-images 100 --short-macs-rois 32 --short-latency-threads 1 --short-latency-clock thread \
		--stage1-min 7 --stage1-share 0.3 --retrain-steps 150 --retrain-top 2 \
		$(DEMO_ARGS)

# Network adaptation (FNA) end to end: a MobileNetV2 x0.5 seed (trained as SSDLite: a classifier seed needs more
# than minutes from scratch) adapted to SSDLite at 128 x 128 on the embedded dataset.
ADAPT_OUT ?= runs/demo-adapt
demo-adapt: install
	@test -f $(DEMO_DATA)/annotations/instances_val.json || $(BIN)/nasx data synth --out $(DEMO_DATA)
	$(BIN)/nasx search adapt --data $(DEMO_DATA) --out $(ADAPT_OUT) --budget-minutes 14 \
		--width 0.5 --input-size 128 --seed-task ssdlite --seed-steps 400 --search-steps 500 --adapt-steps 300 \
		$(DEMO_ARGS)

# NAS-EOD end to end: backbone x0.5 + FPNLite neck @32 / @64 at 128 x 128 on the embedded dataset.
EOD_OUT ?= runs/demo-nas-eod
demo-nas-eod: install
	@test -f $(DEMO_DATA)/annotations/instances_val.json || $(BIN)/nasx data synth --out $(DEMO_DATA)
	$(BIN)/nasx search nas-eod --data $(DEMO_DATA) --out $(EOD_OUT) --budget-minutes 14 --workers 2 \
		--width 0.5 --input-size 128 --head-convs 2 --short-steps 30 --short-batch-size 16 --short-val-images 50 \
		--short-latency-threads 1 --short-latency-clock thread --lut-repeats 10 --lut-check 30 --min-archs 20 \
		--top-k 2 --retrain-steps 200 --target-ratio 0.9 $(DEMO_ARGS)

test: install
	$(BIN)/pytest

bench: install
	$(BIN)/python benchmarks/bench_boxes.py
	$(BIN)/python benchmarks/bench_pareto.py
	$(BIN)/python benchmarks/bench_targets.py
	$(BIN)/python benchmarks/bench_conv_ops.py
	$(BIN)/python benchmarks/bench_data.py
	$(BIN)/python benchmarks/bench_train.py
	$(BIN)/python benchmarks/bench_two_stage.py
	$(BIN)/python benchmarks/bench_supernet.py
	$(BIN)/python benchmarks/bench_torchvision_switch.py

# The prepared GPU check (benchmarks/gpu_check.sh): on a machine with an NVIDIA GPU and a CUDA
# torch already installed (no .venv, no network needed), build nasx for that GPU, run every CUDA
# test and the GPU benchmarks, within GPU_CHECK_ARGS' budget (default 8 minutes); see --help.
GPU_CHECK_PYTHON ?= python3
GPU_CHECK_ARGS ?=
gpu-check:
	bash benchmarks/gpu_check.sh --python $(GPU_CHECK_PYTHON) $(GPU_CHECK_ARGS)

test-cpu-torch:
	@test -x $(CPU_VENV)/bin/python || $(PYTHON) -m venv $(CPU_VENV)
	$(CPU_VENV)/bin/pip install --quiet --upgrade pip
	$(CPU_VENV)/bin/pip install $(CPU_TORCH) $(BUILD_PKGS) $(RUNTIME_PKGS) $(TEST_PKGS)
	$(CPU_VENV)/bin/pip install --no-build-isolation --no-deps --config-settings=build-dir=build/cpu-torch .
	$(CPU_VENV)/bin/python -c "import nasx; assert not nasx.cuda_enabled(); print('nasx built against', nasx.torch_version_built_against(), 'without CUDA')"
	$(CPU_VENV)/bin/pytest -q

clean:
	rm -rf build $(VENV) $(CPU_VENV)
