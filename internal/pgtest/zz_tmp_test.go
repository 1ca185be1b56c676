package pgtest

import (
	"context"
	"testing"
	"time"
)

func TestZZStartTiming(t *testing.T) {
	for range 3 {
		start := time.Now()
		s, err := startInitdb(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		up := time.Since(start)
		start = time.Now()
		if err := s.Stop(context.Background()); err != nil {
			t.Fatal(err)
		}
		t.Logf("start %v stop %v url %s", up, time.Since(start), s.AdminURL)
	}
}
