package netguard_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	"github.com/kern-go/kern/internal/netguard"
)

// refused are addresses a tenant's webhook may not reach, in every
// spelling: each with a word its reason must contain.
var refused = []struct{ addr, why string }{
	// IPv4
	{"127.0.0.1", "loopback"},
	{"127.255.255.254", "loopback"},
	{"10.1.2.3", "private"},
	{"172.16.0.1", "private"},
	{"172.31.255.255", "private"},
	{"192.168.1.1", "private"},
	{"169.254.169.254", "link-local"},
	{"100.64.0.1", "CGNAT"},
	{"100.127.255.254", "CGNAT"},
	{"198.18.0.1", "benchmarking"},
	{"198.19.255.255", "benchmarking"},
	{"0.0.0.0", "unspecified"},
	{"0.0.0.1", "unspecified"},
	{"0.255.255.255", "unspecified"},
	{"224.0.0.1", "multicast"},
	{"239.255.255.250", "multicast"},
	{"255.255.255.255", "broadcast"},
	{"240.0.0.1", "reserved"},
	{"192.0.0.8", "IETF"},
	{"192.0.2.1", "documentation"},
	{"198.51.100.7", "documentation"},
	{"203.0.113.9", "documentation"},
	{"192.88.99.1", "6to4 relay"},
	// IPv6 of its own
	{"::1", "loopback"},
	{"::", "unspecified"},
	{"fe80::1", "link-local"},
	{"fe80::1%eth0", "link-local"},
	{"fec0::1", "site-local"},
	{"feff::1", "site-local"},
	{"fc00::1", "unique-local"},
	{"fd12:3456::1", "unique-local"},
	{"ff02::1", "multicast"},
	{"ff05::2", "multicast"},
	{"2001:db8::1", "documentation"},
	{"3fff::1", "documentation"},
	{"100::1", "discard"},
	{"2001:2::1", "benchmarking"},
	{"2001:10::1", "ORCHID"},
	{"2001:20::1", "ORCHID"},
	{"4000::1", "global unicast"},
	{"::2:0:0:1", "global unicast"},
	// IPv4 inside IPv6: judged by the IPv4 address
	{"::ffff:127.0.0.1", "loopback"},
	{"::ffff:7f00:1", "loopback"},
	{"::ffff:169.254.169.254", "link-local"},
	{"::ffff:10.0.0.1", "private"},
	{"::127.0.0.1", "loopback"},
	{"::a9fe:a9fe", "link-local"},
	{"::10.0.0.1", "private"},
	{"::0.0.0.2", "unspecified"},
	{"::ffff:0:7f00:1", "loopback"},
	{"::ffff:0:a9fe:a9fe", "link-local"},
	{"64:ff9b::a9fe:a9fe", "link-local"},
	{"64:ff9b::127.0.0.1", "loopback"},
	{"64:ff9b::c612:1", "benchmarking"},
	{"64:ff9b:1::a9fe:a9fe", "NAT64"},
	{"64:ff9b:1::808:808", "local-use NAT64"},
	{"2002:a9fe:a9fe::", "link-local"},
	{"2002:7f00:1::1", "loopback"},
	{"2002:c0a8:101::1", "private"},
	{"2002:6440:1::", "CGNAT"},
	// Teredo: server 65.54.227.120, client 127.0.0.1 (bits inverted)
	{"2001:0:4136:e378:8000:63bf:80ff:fffe", "loopback"},
	// Teredo with a private server
	{"2001:0:a00:1:8000:63bf:f7f7:f7f7", "private"},
}

// public are addresses a webhook may reach.
var public = []string{
	"8.8.8.8", "1.1.1.1", "93.184.215.14", "100.63.255.255", "100.128.0.1", "172.32.0.1", "198.17.255.255",
	"198.20.0.1", "192.0.1.1", "223.255.255.255", "11.0.0.1",
	"2606:4700:4700::1111", "2001:4860:4860::8888", "2a00:1450:4001::1",
	"::ffff:8.8.8.8", "::8.8.8.8", "64:ff9b::808:808", "2002:808:808::1",
	"2001:0:4136:e378:8000:63bf:f7f7:f7f7", // Teredo: server 65.54.227.120, client 8.8.8.8
}

func TestCheckRefusesEverySpelling(t *testing.T) {
	for _, c := range refused {
		ip, err := netip.ParseAddr(c.addr)
		if err != nil {
			t.Fatalf("%s: %v", c.addr, err)
		}
		err = netguard.Check(ip)
		if !errors.Is(err, netguard.ErrNotPublic) || !strings.Contains(err.Error(), c.why) {
			t.Errorf("Check(%s) = %v, want a refusal saying %q", c.addr, err, c.why)
		}
		// The dialer's hook sees the address as host:port.
		if err := netguard.Control("tcp", netip.AddrPortFrom(ip, 443).String(), nil); !errors.Is(err, netguard.ErrNotPublic) {
			t.Errorf("Control(%s) = %v, want a refusal", c.addr, err)
		}
	}
}

func TestCheckAllowsPublic(t *testing.T) {
	for _, a := range public {
		ip := netip.MustParseAddr(a)
		if err := netguard.Check(ip); err != nil {
			t.Errorf("Check(%s) = %v, want nil", a, err)
		}
		if err := netguard.Control("tcp6", netip.AddrPortFrom(ip, 443).String(), nil); err != nil {
			t.Errorf("Control(%s) = %v, want nil", a, err)
		}
	}
	if err := netguard.Check(netip.Addr{}); err == nil {
		t.Error("the zero Addr is public")
	}
	if err := netguard.Control("tcp", "not-an-address", nil); !errors.Is(err, netguard.ErrNotPublic) {
		t.Errorf("Control of a name = %v", err)
	}
}

func TestCheckURL(t *testing.T) {
	ctx := context.Background()
	lookup := func(_ context.Context, host string) ([]netip.Addr, error) {
		switch host {
		case "public.example":
			return []netip.Addr{netip.MustParseAddr("93.184.215.14")}, nil
		case "mixed.example":
			return []netip.Addr{netip.MustParseAddr("93.184.215.14"), netip.MustParseAddr("::ffff:0:a9fe:a9fe")}, nil
		}
		return nil, errors.New("no such host")
	}
	for _, u := range []string{"http://public.example/h", "https://public.example:8443/h", "http://8.8.8.8/", "http://[2606:4700:4700::1111]/", "", "not a url"} {
		if err := netguard.CheckURL(ctx, lookup, u); err != nil {
			t.Errorf("CheckURL(%q) = %v", u, err)
		}
	}
	for _, u := range []string{
		"http://localhost/h", "http://LOCALHOST./h", "http://a.localhost/h", "http://mixed.example/h", "http://nowhere.example/h",
		"http://[64:ff9b::a9fe:a9fe]/", "http://[::a9fe:a9fe]/", "http://[2002:a9fe:a9fe::]/", "http://[::ffff:0:7f00:1]/",
		"http://0.0.0.1/", "http://[fec0::1]/", "http://198.18.0.1/", "http://[fe80::1%25eth0]/",
	} {
		if err := netguard.CheckURL(ctx, lookup, u); !errors.Is(err, netguard.ErrNotPublic) {
			t.Errorf("CheckURL(%q) = %v, want a refusal", u, err)
		}
	}
}

// TestDialContextChecksTheConnectedAddress: whatever a name resolved to
// before, the dialer refuses the loopback address it resolves to now, and
// connects when it resolves to a public one (here: the same listener,
// reached with the check of a different name's answer).
func TestDialContextChecksTheConnectedAddress(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) }))
	defer srv.Close()
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	lookup := func(context.Context, string) ([]netip.Addr, error) {
		return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil
	}
	dial := netguard.DialContext(lookup)
	_, err := dial(context.Background(), "tcp", net.JoinHostPort("rebound.example", port))
	if !errors.Is(err, netguard.ErrNotPublic) || !strings.Contains(err.Error(), "loopback") {
		t.Fatalf("dial of a name now on loopback: %v, want a refusal", err)
	}
	if _, err := netguard.DialContext(nil)(context.Background(), "tcp", srv.Listener.Addr().String()); !errors.Is(err, netguard.ErrNotPublic) {
		t.Fatalf("dial of a loopback address: %v, want a refusal", err)
	}
	// The same dial without the guard reaches the listener: the refusal
	// above is the guard's, not a dead port's.
	c, err := (&net.Dialer{}).DialContext(context.Background(), "tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
}
