package agent_test

import (
	"os"
	"testing"

	"github.com/kern-go/kern/internal/pgtest"
)

func TestMain(m *testing.M) {
	// The test binary doubles as a worker process for the multi-process
	// tests (see process_test.go).
	if os.Getenv(workerProcessEnv) != "" {
		os.Exit(runWorkerProcess())
	}
	pgtest.Main(m)
}
