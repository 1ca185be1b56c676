package server

import (
	"context"
	"net/netip"
)

// SetLookup makes the server resolve webhook hosts with lookup instead of
// the system's resolver.
func SetLookup(cfg *Config, lookup func(ctx context.Context, host string) ([]netip.Addr, error)) {
	cfg.lookup = lookup
}
