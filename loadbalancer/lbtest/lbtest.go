// Package lbtest is the conformance suite every load-balancer driver
// passes, against the driver's real server or emulator: the lab for
// DigitalOcean, a real haproxy, moto for ELBv2.
package lbtest

import (
	"context"
	"testing"
	"time"

	"github.com/vmswap/vmswap/loadbalancer"
)

// Run checks p against pool, which holds old and not new. Both servers
// serve the pool's health check.
func Run(t *testing.T, p loadbalancer.Provider, pool string, old, new loadbalancer.Member) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	got, err := p.Pool(ctx, pool)
	if err != nil {
		t.Fatalf("Pool: %v", err)
	}
	if !got.Has(old.ServerID, old.Address) || got.Has(new.ServerID, new.Address) {
		t.Fatalf("Pool before: %v", got.Keys())
	}
	if err := p.AddMember(ctx, pool, new); err != nil {
		t.Fatalf("AddMember: %v", err)
	}
	if err := p.AddMember(ctx, pool, new); err != nil {
		t.Fatalf("AddMember again: %v", err)
	}
	if hr, ok := p.(loadbalancer.HealthReporter); ok {
		for {
			ok, err := hr.MemberHealthy(ctx, pool, new)
			if err != nil {
				t.Fatalf("MemberHealthy: %v", err)
			}
			if ok {
				break
			}
			if ctx.Err() != nil {
				t.Fatal("new member never healthy")
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	if got, _ := p.Pool(ctx, pool); !got.Has(new.ServerID, new.Address) || !got.Has(old.ServerID, old.Address) {
		t.Fatalf("Pool after add: %v", got.Keys())
	}
	if err := p.RemoveMember(ctx, pool, old); err != nil {
		t.Fatalf("RemoveMember: %v", err)
	}
	if err := p.RemoveMember(ctx, pool, old); err != nil {
		t.Fatalf("RemoveMember again: %v", err)
	}
	got, err = p.Pool(ctx, pool)
	if err != nil || got.Has(old.ServerID, old.Address) || !got.Has(new.ServerID, new.Address) {
		t.Fatalf("Pool after remove: %v, %v", got.Keys(), err)
	}
}
