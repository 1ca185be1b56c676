package server

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"github.com/kern-go/kern/run"
)

// checkPublicURL refuses a tenant's webhook URL whose host is, or resolves
// to, an address of the operator's own network: loopback, private (RFC 1918,
// fc00::/7), link-local (cloud metadata at 169.254.169.254), unspecified,
// multicast, or "localhost". Empty is no webhook. A name that does not
// resolve now is refused too: it cannot be checked.
//
// The check is made at submit. A name whose DNS answer changes later
// (rebinding) is not re-checked when the worker posts; an operator who
// must rule that out runs the workers behind an egress proxy.
func checkPublicURL(ctx context.Context, raw string) error {
	if raw == "" {
		return nil
	}
	u, err := url.Parse(raw)
	if err != nil || u.Hostname() == "" {
		return nil // db's own check says what is wrong with it
	}
	host := strings.TrimSuffix(strings.ToLower(u.Hostname()), ".")
	refuse := func(why string) error {
		return fmt.Errorf("kern: %w: webhook %q %s; this server allows only public addresses", run.ErrInvalidArgument, raw, why)
	}
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return refuse("names localhost")
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		if !public(ip) {
			return refuse("names a loopback, private or link-local address")
		}
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	addrs, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil || len(addrs) == 0 {
		return refuse("does not resolve")
	}
	for _, ip := range addrs {
		if !public(ip) {
			return refuse("resolves to a loopback, private or link-local address")
		}
	}
	return nil
}

func public(ip netip.Addr) bool {
	ip = ip.Unmap()
	return ip.IsValid() && !ip.IsLoopback() && !ip.IsPrivate() && !ip.IsLinkLocalUnicast() &&
		!ip.IsLinkLocalMulticast() && !ip.IsUnspecified() && !ip.IsMulticast() && !ip.IsInterfaceLocalMulticast() &&
		!cgnat.Contains(ip)
}

// cgnat is RFC 6598's shared address space, private in practice.
var cgnat = netip.MustParsePrefix("100.64.0.0/10")
