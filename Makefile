# `make test` and `make demo` set up their own virtual environment on a fresh machine.
VENV ?= .venv
PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1

.PHONY: install transformers-tests node-packages test lint demo fashion-mnist clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

# Transformers' common test files for the installed version, from its source distribution on the package index,
# cached in .cache/transformers-tests/ (see tests/transformers_tests.py).
transformers-tests: $(STAMP)
	$(PYTHON) -m tests.transformers_tests

# The JavaScript clients the ONNX export is tested in (Transformers.js, onnxruntime-web), pinned by
# pvt_tools/node/package-lock.json, from the npm registry into .cache/node (pvt_tools/node_clients.py). Without npm
# their tests skip, and fail where PVT_REQUIRE_NODE=1 (.ci/run). ONNXRUNTIME_NODE_INSTALL_CUDA=skip: onnxruntime-node's
# install script would fetch CUDA binaries from outside the registry.
NODE_PACKAGES := .cache/node
node-packages: $(NODE_PACKAGES)/node_modules/.package-lock.json

$(NODE_PACKAGES)/node_modules/.package-lock.json: pvt_tools/node/package.json pvt_tools/node/package-lock.json
	@if command -v npm >/dev/null; then \
		mkdir -p $(NODE_PACKAGES) && cp pvt_tools/node/package.json pvt_tools/node/package-lock.json $(NODE_PACKAGES)/ && \
		cd $(NODE_PACKAGES) && ONNXRUNTIME_NODE_INSTALL_CUDA=skip npm ci --no-audit --no-fund --loglevel=error; \
	else \
		echo "npm not found: the Transformers.js / onnxruntime-web tests will skip (apt-get install nodejs npm)"; \
	fi

test: $(STAMP) transformers-tests node-packages
	$(PYTHON) -m pytest -q

lint: $(STAMP)
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .

demo: $(STAMP)
	$(PYTHON) scripts/demo.py --overwrite_output_dir

# Fashion-MNIST's 10-minute recipe (benchmarks/fashion_mnist.md); needs Debian's dataset-fashion-mnist.
FASHION_MNIST := data/fashion-mnist
$(FASHION_MNIST)/test.parquet: | $(STAMP)
	$(VENV)/bin/pvt-prepare-fashion-mnist --output_dir $(FASHION_MNIST)

fashion-mnist: $(STAMP) $(FASHION_MNIST)/test.parquet
	$(VENV)/bin/pvt-train --dataset_name $(FASHION_MNIST) --image_size 32 --hidden_sizes 48 96 192 256 \
		--depths 1 1 2 1 --num_attention_heads 1 2 4 4 --per_device_train_batch_size 128 --learning_rate 1e-3 \
		--dataloader_num_workers 1 --no_augmentation --num_train_epochs 8 \
		--output_dir outputs/fashion-mnist-10min --overwrite_output_dir

clean:
	rm -rf $(VENV) build *.egg-info .cache/transformers-tests
