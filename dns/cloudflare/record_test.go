package cloudflare

import (
	"testing"

	cfdns "github.com/cloudflare/cloudflare-go/v6/dns"

	"github.com/vmswap/vmswap/dns"
)

// TestMixedProxiedSet: a name with one proxied and one unproxied record is
// not proxied for vmswap: clients get the unproxied answer and cache it for
// its TTL, which is the set's.
func TestMixedProxiedSet(t *testing.T) {
	tests := []struct {
		desc    string
		rs      []cfdns.RecordResponse
		proxied bool
		ttl     dns.Seconds
	}{
		{desc: "all proxied", rs: []cfdns.RecordResponse{{Content: "127.0.0.2", Proxied: true, TTL: 1}, {Content: "127.0.0.3", Proxied: true, TTL: 1}}, proxied: true, ttl: 300},
		{desc: "mixed", rs: []cfdns.RecordResponse{{Content: "127.0.0.2", Proxied: true, TTL: 1}, {Content: "127.0.0.3", Proxied: false, TTL: 120}}, proxied: false, ttl: 120},
		{desc: "mixed, unproxied first", rs: []cfdns.RecordResponse{{Content: "127.0.0.3", Proxied: false, TTL: 120}, {Content: "127.0.0.2", Proxied: true, TTL: 1}}, proxied: false, ttl: 120},
		{desc: "unproxied, the longest TTL", rs: []cfdns.RecordResponse{{Content: "127.0.0.3", TTL: 60}, {Content: "127.0.0.2", TTL: 600}}, proxied: false, ttl: 600},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			r := toRecord("www.example.test", "A", tt.rs)
			if r.Proxied != tt.proxied || r.TTL != tt.ttl || len(r.Values) != len(tt.rs) {
				t.Fatalf("got %+v, want proxied %v TTL %d", r, tt.proxied, tt.ttl)
			}
		})
	}
}
