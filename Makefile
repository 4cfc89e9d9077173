# `make test` and `make demo` set up their own virtual environment on a fresh machine.
VENV ?= .venv
PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1

.PHONY: install transformers-tests test lint demo fashion-mnist clean

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

test: $(STAMP) transformers-tests
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
