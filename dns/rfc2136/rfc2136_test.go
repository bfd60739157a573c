package rfc2136_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/vmswap/vmswap/dns"
	"github.com/vmswap/vmswap/dns/dnstest"
	"github.com/vmswap/vmswap/dns/rfc2136"
	"github.com/vmswap/vmswap/dns/rfc2136/bindtest"
)

func newProvider(t *testing.T, b *bindtest.BIND, secret string) *rfc2136.Provider {
	p, err := rfc2136.New(rfc2136.Config{Server: b.Addr, TSIGKey: b.Key, TSIGSecret: secret, PollInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestConformance runs the DNS suite against a real BIND 9.
func TestConformance(t *testing.T) {
	b := bindtest.Start(t, "example.test", map[string]string{"www": "127.0.0.10"}, 60)
	dnstest.Run(t, newProvider(t, b, b.Secret), "www.example.test", []string{"127.0.0.10"}, 60)
}

// TestPrerequisiteAndTSIG: an update whose prerequisite no longer holds is
// refused and changes nothing; a wrong secret is refused; the SOA serial
// moves with each update.
func TestPrerequisiteAndTSIG(t *testing.T) {
	b := bindtest.Start(t, "example.test", map[string]string{"www": "127.0.0.10"}, 60)
	ctx := context.Background()
	serial := func() uint32 {
		m := new(mdns.Msg)
		m.SetQuestion("example.test.", mdns.TypeSOA)
		r, err := mdns.Exchange(m, b.Addr)
		if err != nil || len(r.Answer) != 1 {
			t.Fatalf("SOA: %v %v", r, err)
		}
		return r.Answer[0].(*mdns.SOA).Serial
	}
	s0 := serial()
	p := newProvider(t, b, b.Secret)
	if _, err := p.SetRecord(ctx, dns.Record{Name: "www.example.test", Type: "A", Values: []string{"127.0.0.11"}}); err != nil {
		t.Fatal(err)
	}
	if s1 := serial(); s1 <= s0 {
		t.Fatalf("serial %d -> %d", s0, s1)
	}
	// Someone else changes the record between our read and our update: the
	// prerequisite carried in the same message makes the server refuse it.
	m := new(mdns.Msg)
	m.SetUpdate("example.test.")
	old, _ := mdns.NewRR("www.example.test. 60 IN A 127.0.0.10")
	m.Used([]mdns.RR{old})
	rr, _ := mdns.NewRR("www.example.test. 60 IN A 127.0.0.12")
	m.Insert([]mdns.RR{rr})
	m.SetTsig(mdns.Fqdn(b.Key), mdns.HmacSHA256, 300, time.Now().Unix())
	c := &mdns.Client{Net: "tcp", TsigSecret: map[string]string{mdns.Fqdn(b.Key): b.Secret}}
	r, _, err := c.Exchange(m, b.Addr)
	if err != nil || r.Rcode != mdns.RcodeNXRrset {
		t.Fatalf("stale prerequisite: rcode %v, %v", r, err)
	}
	got, _ := p.GetRecord(ctx, "www.example.test", "A")
	if len(got.Values) != 1 || got.Values[0] != "127.0.0.11" {
		t.Fatalf("a refused update changed the record: %v", got.Values)
	}
	// A wrong secret.
	wrong := newProvider(t, b, "d3JvbmctYnV0LXZhbGlkLWJhc2U2NC1zZWNyZXQtMTIzNDU2Nzg=")
	_, err = wrong.SetRecord(ctx, dns.Record{Name: "www.example.test", Type: "A", Values: []string{"127.0.0.13"}})
	if err == nil || !strings.Contains(err.Error(), "RFC2136_TSIG_SECRET") || strings.Contains(err.Error(), b.Secret) {
		t.Fatalf("wrong secret: %v", err)
	}
	if errors.Is(err, rfc2136.ErrChanged) {
		t.Fatalf("wrong secret reported as a changed record: %v", err)
	}
}
