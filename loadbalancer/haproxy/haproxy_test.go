package haproxy_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/vmswap/vmswap/lab"
	"github.com/vmswap/vmswap/lab/labtest"
	"github.com/vmswap/vmswap/loadbalancer"
	"github.com/vmswap/vmswap/loadbalancer/haproxy"
	"github.com/vmswap/vmswap/loadbalancer/haproxy/haproxytest"
	"github.com/vmswap/vmswap/loadbalancer/lbtest"
	"github.com/vmswap/vmswap/verify/probe"
)

// TestConformance runs the suite against a real haproxy in front of two lab
// droplets, with traffic through it the whole time: no request fails.
func TestConformance(t *testing.T) {
	l := labtest.Start(t, lab.Config{})
	ctx := context.Background()
	_, ip1, err := l.Seeder().Droplet(ctx, "web-1", "s-1vcpu-1gb", nil, map[string]string{"index.html": "one\n"})
	if err != nil {
		t.Fatal(err)
	}
	_, ip2, err := l.Seeder().Droplet(ctx, "web-2", "s-1vcpu-1gb", nil, map[string]string{"index.html": "two\n"})
	if err != nil {
		t.Fatal(err)
	}
	h := haproxytest.Start(t, fmt.Sprintf("%s:%d", ip1, l.HTTPPort()))
	p, err := haproxy.New(haproxy.Config{Socket: h.Socket, PollInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // web1's first health checks
	pr, err := probe.Start(probe.Config{URL: "http://" + h.Entry + "/", Rate: 200})
	if err != nil {
		t.Fatal(err)
	}
	lbtest.Run(t, p, "be", loadbalancer.Member{Address: ip1}, loadbalancer.Member{Address: ip2})
	time.Sleep(time.Second) // traffic on the new member alone
	sum := pr.Stop()
	t.Logf("through haproxy during add, drain, remove: %d requests, %d failed", sum.Requests, sum.Failed)
	if sum.Failed != 0 || sum.Requests < 50 {
		t.Fatalf("%d of %d failed: %v", sum.Failed, sum.Requests, sum.Errors)
	}
}

// TestEveryLineOfTheServerIsRemoved: a backend declares web-1 twice (two
// server lines on its address). Removing web-1 drains and removes both,
// and traffic through haproxy never fails.
func TestEveryLineOfTheServerIsRemoved(t *testing.T) {
	l := labtest.Start(t, lab.Config{})
	ctx := context.Background()
	id1, ip1, err := l.Seeder().Droplet(ctx, "web-1", "s-1vcpu-1gb", nil, map[string]string{"index.html": "one\n"})
	if err != nil {
		t.Fatal(err)
	}
	_, ip2, err := l.Seeder().Droplet(ctx, "web-2", "s-1vcpu-1gb", nil, map[string]string{"index.html": "two\n"})
	if err != nil {
		t.Fatal(err)
	}
	one := fmt.Sprintf("%s:%d", ip1, l.HTTPPort())
	h := haproxytest.Start(t, one, one, fmt.Sprintf("%s:%d", ip2, l.HTTPPort()))
	p, err := haproxy.New(haproxy.Config{Socket: h.Socket, PollInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	pool, err := p.Pool(ctx, "be")
	if err != nil || len(pool.Members) != 2 || pool.Members[0].Address != ip1 || !slices.Equal(pool.Members[0].Lines, []string{"web1", "web2"}) {
		t.Fatalf("pool with two lines for web-1: %+v %v", pool, err)
	}
	pr, err := probe.Start(probe.Config{URL: "http://" + h.Entry + "/", Rate: 200})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.RemoveMember(ctx, "be", loadbalancer.Member{Address: ip1}); err != nil {
		t.Fatal(err)
	}
	pool, err = p.Pool(ctx, "be")
	if err != nil || pool.Has("", ip1) || len(pool.Members) != 1 {
		t.Fatalf("pool after removing web-1: %+v %v", pool, err)
	}
	// web-1 goes away: a line left pointing at it would fail requests.
	c := labtest.Godo(t, l)
	if _, _, err := c.DropletActions.PowerOff(ctx, id1); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	sum := pr.Stop()
	if sum.Failed != 0 {
		t.Fatalf("%d of %d failed: %v", sum.Failed, sum.Requests, sum.Errors)
	}
}

// TestHealthyMeansChecked: a new server whose health check fails is UP the
// moment it is enabled, but never healthy for vmswap; one that passes is
// healthy once HAProxy's own check completed.
func TestHealthyMeansChecked(t *testing.T) {
	l := labtest.Start(t, lab.Config{})
	ctx := context.Background()
	_, ip1, err := l.Seeder().Droplet(ctx, "web-1", "s-1vcpu-1gb", nil, map[string]string{"index.html": "one\n"})
	if err != nil {
		t.Fatal(err)
	}
	bad, ipBad, err := l.Seeder().Droplet(ctx, "bad", "s-1vcpu-1gb", nil, map[string]string{"index.html": "x\n"})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.BreakDroplet(bad, lab.FaultServe500); err != nil {
		t.Fatal(err)
	}
	_, ipGood, err := l.Seeder().Droplet(ctx, "good", "s-1vcpu-1gb", nil, map[string]string{"index.html": "y\n"})
	if err != nil {
		t.Fatal(err)
	}
	h := haproxytest.Start(t, fmt.Sprintf("%s:%d", ip1, l.HTTPPort()))
	p, err := haproxy.New(haproxy.Config{Socket: h.Socket, PollInterval: 50 * time.Millisecond, CheckInterval: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		ip   string
		want bool
	}{{ipBad, false}, {ipGood, true}} {
		if err := p.AddMember(ctx, "be", loadbalancer.Member{Address: tc.ip}); err != nil {
			t.Fatal(err)
		}
		got, err := p.MemberHealthy(ctx, "be", loadbalancer.Member{Address: tc.ip})
		if err != nil || got {
			t.Fatalf("%s healthy right after enable server: %v %v", tc.ip, got, err)
		}
		healthy := false
		for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline) && !healthy; time.Sleep(50 * time.Millisecond) {
			if healthy, err = p.MemberHealthy(ctx, "be", loadbalancer.Member{Address: tc.ip}); err != nil {
				t.Fatal(err)
			}
		}
		if healthy != tc.want {
			t.Fatalf("%s healthy %v after 2s of checks, want %v", tc.ip, healthy, tc.want)
		}
	}
}
