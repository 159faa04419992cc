# One-command setup: every target creates .venv on first use.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: serve serve-grpc serve-shim worker test lint typecheck gen gen-ts build-node serve-node docs bench clean

$(STAMP): pyproject.toml hatch_build.py $(shell find protos -name '*.proto')
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

## Run the proxy: REST on 127.0.0.1:7004, gRPC on 127.0.0.1:50051 (see README for settings).
serve: $(STAMP)
	$(BIN)/python -m connector_proxy

## Run the gRPC server alone.
serve-grpc: $(STAMP)
	$(BIN)/python -m connector_proxy --grpc-only

## Run the REST shim alone, in front of CONNECTOR_PROXY_GRPC_TARGETS.
serve-shim: $(STAMP)
	$(BIN)/python -m connector_proxy --shim-only

## Run job worker processes for the scale-out mode (README "Scale-out workers").
WORKERS ?= 2
worker: $(STAMP)
	$(BIN)/python -m connector_proxy --worker --workers $(WORKERS)

## Regenerate clients/python from protos/ (the install does this too).
gen: $(STAMP)
	$(BIN)/python hatch_build.py

## The TypeScript client (clients/ts): its npm packages, installed again when package-lock.json changes.
TS := clients/ts
TS_STAMP := $(TS)/node_modules/.installed

$(TS_STAMP): $(TS)/package.json $(TS)/package-lock.json
	cd $(TS) && npm ci --no-audit --no-fund
	touch $(TS_STAMP)

## Regenerate clients/ts/gen from protos/ (never edited by hand, never committed), then type-check
## it with the example and compile them to clients/ts/dist.
gen-ts: $(STAMP) $(TS_STAMP)
	$(BIN)/buf generate --template $(TS)/buf.gen.yaml
	rm -rf $(TS)/dist
	$(TS)/node_modules/.bin/tsc -p $(TS)

## The Node.js connector server (connectors-node): its npm packages, installed again when package-lock.json changes.
NODE_DIR := connectors-node
NODE_STAMP := $(NODE_DIR)/node_modules/.installed
# The protos it serves (conformance only for tests); buf adds their imports.
NODE_PROTOS := protos/spiff/connector/jsonata protos/spiff/connector/conformance
NODE_BUILT := $(NODE_DIR)/dist/.built

$(NODE_STAMP): $(NODE_DIR)/package.json $(NODE_DIR)/package-lock.json
	cd $(NODE_DIR) && npm ci --no-audit --no-fund
	touch $(NODE_STAMP)

## Generate connectors-node/gen (TypeScript, and the descriptor set its reflection serves, options
## included; never committed) and compile everything to connectors-node/dist.
$(NODE_BUILT): $(STAMP) $(NODE_STAMP) $(NODE_DIR)/buf.gen.yaml $(NODE_DIR)/tsconfig.json $(NODE_DIR)/server.ts \
		$(shell find protos -name '*.proto') $(shell find $(NODE_DIR)/src -name '*.ts')
	$(BIN)/buf generate --template $(NODE_DIR)/buf.gen.yaml $(NODE_PROTOS:%=--path %)
	$(BIN)/buf build $(NODE_PROTOS:%=--path %) --as-file-descriptor-set --exclude-source-info -o $(NODE_DIR)/gen/descriptors.binpb
	rm -rf $(NODE_DIR)/dist
	$(NODE_DIR)/node_modules/.bin/tsc -p $(NODE_DIR)
	touch $(NODE_BUILT)

build-node: $(NODE_BUILT)

## Run the Node.js connector server (jsonata) on 127.0.0.1:$${CONNECTOR_NODE_PORT:-50052}; front it with
## CONNECTOR_PROXY_GRPC_TARGETS=127.0.0.1:50052.
serve-node: $(NODE_BUILT)
	node $(NODE_DIR)/dist/server.js

## Container images, from the repository root: the proxy (Dockerfile) and the Node.js connector
## server (connectors-node/Dockerfile). podman when installed, else docker; podman builds in the
## docker format, whose HEALTHCHECK the OCI format would drop. IMAGE_BUILD_FLAGS adds build options.
CONTAINER_TOOL ?= $(if $(shell command -v podman 2>/dev/null),podman,docker)
IMAGE_FORMAT := $(if $(filter podman%,$(notdir $(CONTAINER_TOOL))),--format docker)
IMAGE_BUILD_FLAGS ?=

.PHONY: image image-node

image:
	$(CONTAINER_TOOL) build $(IMAGE_FORMAT) $(IMAGE_BUILD_FLAGS) -f Dockerfile -t spiff-connector-proxy:latest .

image-node:
	$(CONTAINER_TOOL) build $(IMAGE_FORMAT) $(IMAGE_BUILD_FLAGS) -f connectors-node/Dockerfile -t spiff-connector-node:latest .

## Regenerate the connector reference, docs/connectors.md, from the protos.
docs: $(STAMP)
	$(BIN)/python -m connector_proxy.reference

lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/buf format --diff --exit-code
	$(BIN)/buf lint

typecheck: $(STAMP)
	$(BIN)/mypy

## The test suite: lint, types, then every test (real servers, no network beyond loopback).
test: $(STAMP)
	$(BIN)/python hatch_build.py
	@if command -v npm >/dev/null && command -v node >/dev/null; then $(MAKE) gen-ts build-node; \
	else echo "node/npm not found: the TypeScript client and the Node connector server are not built and their tests skip (CI requires them)"; fi
	$(MAKE) lint typecheck
	$(BIN)/python -m pytest

## The benchmark (README "Performance"); ARGS passes options, e.g. make bench ARGS=--soak for the
## 10-minute soak (python -m bench --help lists them).
ARGS ?=
bench: $(STAMP)
	$(BIN)/python -m bench $(ARGS)

clean:
	rm -rf $(VENV) clients/python $(TS)/node_modules $(TS)/gen $(TS)/dist $(NODE_DIR)/node_modules $(NODE_DIR)/gen $(NODE_DIR)/dist
