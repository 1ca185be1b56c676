# kern — the two commands that matter: `make demo` and `make test`.
GO      ?= go
TIMEOUT ?= 12m

.PHONY: test demo vet bench fmt

## test: vet, then every test with the race detector, against real Postgres.
test: vet
	$(GO) test -race -count=1 -timeout $(TIMEOUT) ./...

## demo: the seed scenarios end to end, offline (fake model, throwaway Postgres
## unless DATABASE_URL is set).
demo:
	$(GO) run ./cookbook/background_execution
	$(GO) run ./cookbook/streaming
	$(GO) run ./cookbook/tools
	$(GO) run ./cookbook/sessions
	$(GO) run ./cookbook/approval
	$(GO) run ./cookbook/schedules
	$(GO) run ./cookbook/webhooks
	$(GO) run ./cookbook/transactional
	$(GO) run ./cookbook/http
	$(GO) run ./cookbook/dashboard

vet:
	$(GO) vet ./...
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi

## bench: kern's figures side by side with the River floor, on a throwaway
## Postgres (fsync off, data in RAM; see BENCHMARKS.md), then submit, e2e,
## pickup and steady again on a stock-settings cluster (fsync on, data on
## disk): two tables, in about 13 minutes. BENCH_FLAGS="-runs 500 -samples 50" for a
## quick one; "-stock ''" skips the stock cluster; "-recovery-rounds 2" adds
## recovery after SIGKILL (~75s).
BENCH_FLAGS ?= -runs 5000 -samples 300
bench:
	$(GO) run ./cmd/kern-bench $(BENCH_FLAGS)

fmt:
	gofmt -w $$(git ls-files '*.go')
