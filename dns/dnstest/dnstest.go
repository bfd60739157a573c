// Package dnstest is the conformance suite every DNS driver passes: one test
// body, run against each driver's real server or emulator (the lab for
// DigitalOcean and Cloudflare, BIND for RFC 2136, moto for Route 53).
package dnstest

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/vmswap/vmswap/dns"
	"github.com/vmswap/vmswap/provider"
)

// Run checks p against a record set name (type A) that holds exactly
// initial, with TTL ttl, on the server the driver talks to.
func Run(t *testing.T, p dns.Provider, name string, initial []string, ttl int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	got, err := p.GetRecord(ctx, name, "A")
	if err != nil {
		t.Fatalf("GetRecord: %v", err)
	}
	if !slices.Equal(got.Values, slices.Sorted(slices.Values(initial))) || int(got.TTL) != ttl || got.Name != name || got.Type != "A" {
		t.Fatalf("GetRecord = %+v, want %v TTL %d", got, initial, ttl)
	}
	if _, err := p.GetRecord(ctx, "nonexistent-vmswap."+name, "A"); !errors.Is(err, provider.ErrNotFound) {
		t.Fatalf("GetRecord of a missing name: %v, want ErrNotFound", err)
	}

	// Replace with one value: the TTL is kept.
	one := dns.Record{Name: name, Type: "A", Values: []string{"127.0.0.77"}}
	set, err := p.SetRecord(ctx, one)
	if err != nil {
		t.Fatalf("SetRecord: %v", err)
	}
	if !slices.Equal(set.Values, one.Values) || int(set.TTL) != ttl {
		t.Fatalf("after SetRecord: %+v", set)
	}
	if err := p.WaitServed(ctx, one); err != nil {
		t.Fatalf("WaitServed: %v", err)
	}
	// Setting the same values again changes nothing and succeeds.
	if _, err := p.SetRecord(ctx, one); err != nil {
		t.Fatalf("SetRecord again: %v", err)
	}
	// Two values, then back to the initial ones.
	two := dns.Record{Name: name, Type: "A", Values: []string{"127.0.0.78", "127.0.0.79"}}
	if got, err := p.SetRecord(ctx, two); err != nil || !slices.Equal(got.Values, two.Values) {
		t.Fatalf("SetRecord two values: %+v, %v", got, err)
	}
	back := dns.Record{Name: name, Type: "A", Values: initial}
	if _, err := p.SetRecord(ctx, back); err != nil {
		t.Fatalf("SetRecord back: %v", err)
	}
	if err := p.WaitServed(ctx, back); err != nil {
		t.Fatalf("WaitServed back: %v", err)
	}
	// Compare-and-swap: a set that no longer holds what Expect says is not
	// changed, and the error says so; one that does is changed.
	stale := dns.Record{Name: name, Type: "A", Values: []string{"127.0.0.80"}, Expect: []string{"127.0.0.81"}}
	if _, err := p.SetRecord(ctx, stale); !errors.Is(err, dns.ErrChanged) {
		t.Fatalf("SetRecord with a stale Expect: %v, want ErrChanged", err)
	}
	if got, err := p.GetRecord(ctx, name, "A"); err != nil || !slices.Equal(got.Values, slices.Sorted(slices.Values(initial))) {
		t.Fatalf("after a refused compare-and-swap: %+v %v", got, err)
	}
	cas := dns.Record{Name: name, Type: "A", Values: []string{"127.0.0.80"}, Expect: initial}
	if got, err := p.SetRecord(ctx, cas); err != nil || !slices.Equal(got.Values, cas.Values) {
		t.Fatalf("SetRecord with the right Expect: %+v %v", got, err)
	}
	if _, err := p.SetRecord(ctx, dns.Record{Name: name, Type: "A", Values: initial, Expect: cas.Values}); err != nil {
		t.Fatalf("SetRecord back with Expect: %v", err)
	}
	if err := p.WaitServed(ctx, back); err != nil {
		t.Fatalf("WaitServed back: %v", err)
	}

	// Waiting honours ctx: a value never set is never served.
	short, cancel2 := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel2()
	if err := p.WaitServed(short, dns.Record{Name: name, Type: "A", Values: []string{"127.0.0.99"}}); err == nil {
		t.Fatal("WaitServed returned for a value that was never set")
	}
}
