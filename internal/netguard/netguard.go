// Package netguard decides which addresses a tenant's webhook may reach:
// only public unicast ones. It is the one place that classifies addresses,
// used by the server's check of a URL at submit (a fast, early refusal)
// and by the worker's dialer (net.Dialer.Control), which checks the address
// each connection is actually made to: that is what rules out DNS answers
// that change between submit and delivery (rebinding), and every spelling
// of an address that a URL parser or a resolver might produce.
package netguard

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"syscall"
	"time"
)

// ErrNotPublic is what every refusal of an address is (errors.Is).
var ErrNotPublic = errors.New("not a public address")

// refusal is a refused address, saying why.
type refusal struct{ msg string }

func (e *refusal) Error() string        { return e.msg }
func (e *refusal) Is(target error) bool { return target == ErrNotPublic }

func refuse(format string, args ...any) error { return &refusal{fmt.Sprintf(format, args...)} }

// Lookup resolves a host name to its addresses. nil means the system's
// resolver (net.DefaultResolver); tests inject their own.
type Lookup func(ctx context.Context, host string) ([]netip.Addr, error)

// Check is nil for a public unicast address, and otherwise an error
// wrapping ErrNotPublic that says what the address is.
func Check(ip netip.Addr) error {
	if why := Reason(ip); why != "" {
		return refuse("%s is %s", ip, why)
	}
	return nil
}

// Reason is "" for a public unicast address, else what the address is
// ("a loopback address", "a private address", …). An IPv6 address that
// embeds an IPv4 one (v4-mapped, v4-compatible, SIIT, NAT64, 6to4, Teredo)
// is judged by the IPv4 address it embeds, since that is where its packets
// end up.
func Reason(ip netip.Addr) string {
	if !ip.IsValid() {
		return "not an IP address"
	}
	ip = ip.WithZone("") // a zone only ever qualifies a link-local address, judged below
	switch {
	case ip == netip.IPv6Loopback():
		return "a loopback address"
	case ip == netip.IPv6Unspecified():
		return "the unspecified address"
	}
	if ip.Is4In6() {
		return reason4(ip.Unmap(), "")
	}
	if ip.Is4() {
		return reason4(ip, "")
	}
	b := ip.As16()
	for _, r := range embedding6 {
		if r.prefix.Contains(ip) {
			for _, v4 := range r.v4(b) {
				if why := reason4(v4, r.name); why != "" {
					return why
				}
			}
			return ""
		}
	}
	for _, r := range reserved6 {
		if r.prefix.Contains(ip) {
			return r.name
		}
	}
	if !global6.Contains(ip) {
		return "an IPv6 address outside the global unicast range 2000::/3"
	}
	return ""
}

func reason4(ip netip.Addr, via string) string {
	for _, r := range reserved4 {
		if r.prefix.Contains(ip) {
			if via != "" {
				return fmt.Sprintf("%s embedding %s, %s", via, ip, r.name)
			}
			return r.name
		}
	}
	return ""
}

type rangeName struct {
	prefix netip.Prefix
	name   string
}

func r(prefix, name string) rangeName {
	return rangeName{netip.MustParsePrefix(prefix), name}
}

// reserved4 are the IPv4 ranges that are not public unicast (IANA's
// special-purpose registry, multicast and the reserved class E).
var reserved4 = []rangeName{
	r("0.0.0.0/8", "an unspecified (\"this network\") address"),
	r("10.0.0.0/8", "a private address"),
	r("100.64.0.0/10", "a shared (CGNAT) address"),
	r("127.0.0.0/8", "a loopback address"),
	r("169.254.0.0/16", "a link-local address"),
	r("172.16.0.0/12", "a private address"),
	r("192.0.0.0/24", "an IETF protocol assignment address"),
	r("192.0.2.0/24", "a documentation address"),
	r("192.88.99.0/24", "a 6to4 relay anycast address"),
	r("192.168.0.0/16", "a private address"),
	r("198.18.0.0/15", "a benchmarking address"),
	r("198.51.100.0/24", "a documentation address"),
	r("203.0.113.0/24", "a documentation address"),
	r("224.0.0.0/4", "a multicast address"),
	r("255.255.255.255/32", "the broadcast address"),
	r("240.0.0.0/4", "a reserved (class E) address"),
}

// embedded6 is an IPv6 range whose addresses carry IPv4 ones.
type embedded6 struct {
	prefix netip.Prefix
	name   string
	v4     func(b [16]byte) []netip.Addr
}

func last4(b [16]byte) []netip.Addr { return []netip.Addr{netip.AddrFrom4([4]byte(b[12:16]))} }

// embedding6 are the IPv6 forms that embed an IPv4 address (v4-mapped is
// unmapped before). Addresses in them are judged by the IPv4 address.
var embedding6 = []embedded6{
	// ::/96, IPv4-compatible ::a.b.c.d (deprecated); :: and ::1 embed
	// 0.0.0.0 and 0.0.0.1, refused as "this network".
	{netip.MustParsePrefix("::/96"), "an IPv4-compatible address", last4},
	// ::ffff:0:a.b.c.d, SIIT's IPv4-translated addresses (RFC 2765).
	{netip.MustParsePrefix("::ffff:0:0:0/96"), "an IPv4-translated address", last4},
	// NAT64's well-known prefix (RFC 6052).
	{netip.MustParsePrefix("64:ff9b::/96"), "a NAT64 address", last4},
	// NAT64's local-use prefix (RFC 8215): the operator's own translator,
	// whose prefix length (and so where the IPv4 address sits) is its own
	// choice. Judged as if /96, and refused whatever it embeds below.
	{netip.MustParsePrefix("64:ff9b:1::/48"), "a local-use NAT64 address", func(b [16]byte) []netip.Addr {
		return append(last4(b), netip.IPv4Unspecified())
	}},
	// 6to4 (RFC 3056): 2002:AABB:CCDD::/48 routes to a.b.c.d.
	{netip.MustParsePrefix("2002::/16"), "a 6to4 address", func(b [16]byte) []netip.Addr {
		return []netip.Addr{netip.AddrFrom4([4]byte(b[2:6]))}
	}},
	// Teredo (RFC 4380): the server's IPv4 address, then the client's,
	// its bits inverted, in the last 32 bits. Both must be public.
	{netip.MustParsePrefix("2001::/32"), "a Teredo address", func(b [16]byte) []netip.Addr {
		client := [4]byte{^b[12], ^b[13], ^b[14], ^b[15]}
		return []netip.Addr{netip.AddrFrom4([4]byte(b[4:8])), netip.AddrFrom4(client)}
	}},
}

// reserved6 are the IPv6 ranges that are not public unicast, checked after
// the embedding forms; anything outside 2000::/3 is refused too.
var reserved6 = []rangeName{
	r("fe80::/10", "a link-local address"),
	r("fec0::/10", "a site-local address"),
	r("fc00::/7", "a unique-local (private) address"),
	r("ff00::/8", "a multicast address"),
	r("100::/64", "a discard-only address"),
	r("2001:db8::/32", "a documentation address"),
	r("3fff::/20", "a documentation address"),
	r("2001:2::/48", "a benchmarking address"),
	r("2001:10::/28", "an ORCHID address"),
	r("2001:20::/28", "an ORCHIDv2 address"),
}

// global6 is IPv6's global unicast range.
var global6 = netip.MustParsePrefix("2000::/3")

// Control is a net.Dialer.Control that refuses to connect to an address
// that is not public: it sees the address the connection is made to, after
// every resolution, so no spelling or DNS answer escapes it.
func Control(_, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return refuse("cannot tell the address of %q", address)
	}
	return Check(ap.Addr())
}

// DialContext is an http.Transport.DialContext that connects only to
// public addresses (see Control). With lookup nil it resolves names as
// net.Dialer does; with a lookup it tries that lookup's addresses in turn.
func DialContext(lookup Lookup) func(ctx context.Context, network, address string) (net.Conn, error) {
	return DialWith(&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second, Control: Control}, lookup)
}

// DialWith is d.DialContext, resolving names with lookup when it is not
// nil: the addresses it answers are tried in turn.
func DialWith(d *net.Dialer, lookup Lookup) func(ctx context.Context, network, address string) (net.Conn, error) {
	if lookup == nil {
		return d.DialContext
	}
	return func(ctx context.Context, network, address string) (net.Conn, error) {
		host, port, err := net.SplitHostPort(address)
		if err != nil {
			return nil, err
		}
		ips := []netip.Addr(nil)
		if ip, err := netip.ParseAddr(host); err == nil {
			ips = append(ips, ip)
		} else if ips, err = lookup(ctx, host); err != nil {
			return nil, err
		}
		var errs []error
		for _, ip := range ips {
			c, err := d.DialContext(ctx, network, net.JoinHostPort(ip.String(), port))
			if err == nil {
				return c, nil
			}
			errs = append(errs, err)
		}
		if len(errs) == 0 {
			return nil, fmt.Errorf("%s resolves to no address", host)
		}
		return nil, errors.Join(errs...)
	}
}

// CheckURL checks the host of a webhook URL before anything is stored:
// "localhost" and its subdomains, an address that is not public, or a name
// that resolves (through lookup; nil: the system's resolver) to one is
// refused, and so is a name that does not resolve now, since it cannot be
// checked. A URL without a host is nil: the caller's own URL check says
// what is wrong with it. The answer is only an early refusal: a name's
// answer may change by the time of delivery, which Control checks.
func CheckURL(ctx context.Context, lookup Lookup, raw string) error {
	u, err := url.Parse(raw)
	if err != nil || u.Hostname() == "" {
		return nil
	}
	host := strings.TrimSuffix(strings.ToLower(u.Hostname()), ".")
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return refuse("it names localhost")
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		return Check(ip)
	}
	if lookup == nil {
		lookup = systemLookup
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	addrs, err := lookup(ctx, host)
	if err != nil || len(addrs) == 0 {
		return refuse("%s does not resolve", host)
	}
	for _, ip := range addrs {
		if why := Reason(ip); why != "" {
			return refuse("%s resolves to %s, %s", host, ip, why)
		}
	}
	return nil
}

func systemLookup(ctx context.Context, host string) ([]netip.Addr, error) {
	return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
}
