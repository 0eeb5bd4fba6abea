# AgentKeys enclave broker. `make dev` runs it locally; `make test` runs every test.
GO       ?= go
BIN      ?= bin
FUZZTIME ?= 3s
# Packages whose fuzz targets `make fuzz` runs (each target for FUZZTIME).
FUZZPKGS ?= $(sort $(patsubst %/,%,$(dir $(shell grep -rl --include='*_test.go' '^func Fuzz' . 2>/dev/null))))

.PHONY: all build deps test unit vet fmt-check fuzz dev clean eif

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/ ./enclave/cmd/... ./host/cmd/... ./attest/cmd/... ./eif/cmd/...

test: deps fmt-check vet unit fuzz

# Tests build helpers (Pebble, litewitness) from the module cache: fill it first.
deps:
	$(GO) mod download

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

unit:
	$(GO) test -race -count=1 ./...

# Run every fuzz target for FUZZTIME: decoders of bytes from across a trust boundary.
fuzz:
	@FUZZTIME=$(FUZZTIME) scripts/fuzz.sh $(FUZZPKGS)

# A simulated enclave and the host on http://127.0.0.1:8091 until Ctrl-C.
dev: build
	@scripts/dev.sh

# The enclave image, reproducibly: make eif BLOBS=/usr/share/nitro_enclaves/blobs POLICY=policy.json
# Builds the enclave binary (agentkeys-eif binary), the EIF into $(BIN)/agentkeys.eif from the blobs
# checked against BLOBS_PINS, and prints its PCRs. See docs/eif.md, "Building the image".
EIF_ARCH   ?= x86_64
BLOBS_PINS ?= $(if $(filter aarch64 arm64,$(EIF_ARCH)),eif/blobs-aarch64.sha384,eif/blobs.sha384)
eif:
	@test -n "$(BLOBS)" -a -n "$(POLICY)" || { echo "usage: make eif BLOBS=/usr/share/nitro_enclaves/blobs POLICY=policy.json [BLOBS_PINS=$(BLOBS_PINS)] [EIF_ARCH=x86_64|aarch64] [ENCLAVE_ARGS='--kms-key-id=ARN --kms-region=R --egress=…']"; exit 2; }
	$(GO) run ./eif/cmd/agentkeys-eif binary --arch $(EIF_ARCH) --out $(BIN)/eif/agentkeys-enclave
	$(GO) run ./eif/cmd/agentkeys-eif build --arch $(EIF_ARCH) --blobs $(BLOBS) --blobs-pins $(BLOBS_PINS) \
		--policy $(POLICY) --enclave-binary $(BIN)/eif/agentkeys-enclave --out $(BIN)/agentkeys.eif \
		$(foreach a,$(ENCLAVE_ARGS),--enclave-arg=$(a))
	$(GO) run ./attest/cmd/agentkeys-attest pcrs $(BIN)/agentkeys.eif

clean:
	rm -rf $(BIN)
