package server

import (
	"context"
	"errors"
	"fmt"

	"github.com/kern-go/kern/internal/netguard"
	"github.com/kern-go/kern/run"
)

// checkPublicURL refuses a tenant's webhook URL whose host is, or resolves
// to, an address that is not public (see package netguard: loopback,
// private, link-local, CGNAT, benchmarking, documentation, unspecified,
// multicast, broadcast, and every IPv6 spelling that embeds such an IPv4
// address), or "localhost". Empty is no webhook. A name that does not
// resolve now is refused too: it cannot be checked.
//
// This is only the early refusal, so that a bad URL is a 400 and not a
// delivery that fails later. What guarantees it is the worker: it checks
// the address each delivery connects to (agent.WorkerConfig's
// AllowPrivateWebhooks), so a name whose DNS answer changes after submit
// (rebinding) reaches no private address either.
func (s *Server) checkPublicURL(ctx context.Context, raw string) error {
	if raw == "" {
		return nil
	}
	if err := netguard.CheckURL(ctx, s.cfg.lookup, raw); err != nil {
		if errors.Is(err, netguard.ErrNotPublic) {
			return fmt.Errorf("kern: %w: webhook %q: %v; this server allows only public addresses", run.ErrInvalidArgument, raw, err)
		}
		return fmt.Errorf("kern: webhook %q: %w", raw, err)
	}
	return nil
}
