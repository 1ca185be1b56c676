# kern — the two commands that matter: `make demo` and `make test`.
GO      ?= go
TIMEOUT ?= 12m

.PHONY: test test-long demo vet bench bench-pooler fmt

## test: vet, then every test with the race detector, against real Postgres,
## in -short mode: every guarantee is tested, the long chaos, soak, process
## fleet and benchmark runs at a smaller size or left to test-long. About
## 4 minutes on 2 cores.
test: vet
	$(GO) test -race -count=1 -short -timeout $(TIMEOUT) ./...

## test-long: the long tier, the tests that -short skips or shrinks, at
## full size: chaos with 1,200 runs, Postgres restarts, worker processes
## killed, rate-limit and per-key fleets of processes, the benchmark's smoke
## test. CI runs it after test when time allows (.ci/run). Every test that
## looks at testing.Short() must be in LONG_TESTS (vet checks).
LONG_TESTS := TestSmoke TestChaosInvariants TestChaosApprovals TestKilledWorkerSessionRunsRunAgainInASecond \
	TestPostgresRestartRescuesNoRunOfALiveWorker TestPostgresRestartWithRunsInFlight TestPerKeyLimitAcrossWorkerProcesses \
	TestApprovalSurvivesRestart TestCancelRaceInvariant TestRateLimitFleetOfThreeWorkerProcesses \
	TestRescueReadsBoundedRowsWithABacklog TestRateLimitLeasesKeepTheWindow TestThousandFollowersOfOneRun \
	TestPgBouncerServerChurn TestPoolerSmoke
empty :=
LONG_RE := $(subst $(empty) $(empty),|,$(strip $(LONG_TESTS)))
test-long:
	$(GO) test -race -count=1 -timeout $(TIMEOUT) -run '^($(LONG_RE))$$' ./...

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
	@untiered=$$(awk '/^func (Test|Example)/ { name = $$2; sub(/\(.*/, "", name) } /testing\.Short\(\)/ { print name }' \
		$$(git ls-files '*_test.go' 2>/dev/null || find . -name '*_test.go') | sort -u | grep -vxE '$(LONG_RE)'); \
	if [ -n "$$untiered" ]; then echo "tests that look at testing.Short() but are not in the Makefile's LONG_TESTS:"; echo "$$untiered"; exit 1; fi

## bench: kern's figures side by side with the River floor, on a throwaway
## Postgres (fsync off, data in RAM; see BENCHMARKS.md), then submit, e2e,
## pickup and steady again on a stock-settings cluster (fsync on, data on
## disk): two tables, in about 13 minutes. BENCH_FLAGS="-runs 500 -samples 50" for a
## quick one; "-stock ''" skips the stock cluster; "-recovery-rounds 2" adds
## recovery after SIGKILL (~75s).
BENCH_FLAGS ?= -runs 5000 -samples 300
bench:
	$(GO) run ./cmd/kern-bench $(BENCH_FLAGS)

## bench-pooler: kern through PgBouncer (session mode, transaction mode,
## transaction mode with a direct URL) side by side with Postgres itself,
## interleaved, on a throwaway cluster: runs/s, idle pickup, WaitRun
## wake-up, recovery after SIGKILL (BENCHMARKS.md, "Deploy: through
## PgBouncer"). About 2 minutes; without Debian's pgbouncer only the direct
## mode is measured. POOLER_FLAGS="-pooler-runs 500 -pooler-kills 0" for a
## quick one.
POOLER_FLAGS ?=
bench-pooler:
	$(GO) run ./cmd/kern-bench -only pooler -stock "" $(POOLER_FLAGS)

fmt:
	gofmt -w $$(git ls-files '*.go')
