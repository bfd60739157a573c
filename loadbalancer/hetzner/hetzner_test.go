package hetzner_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/vmswap/vmswap/lab"
	"github.com/vmswap/vmswap/lab/labtest"
	"github.com/vmswap/vmswap/loadbalancer"
	"github.com/vmswap/vmswap/loadbalancer/hetzner"
	"github.com/vmswap/vmswap/loadbalancer/lbtest"
	hz "github.com/vmswap/vmswap/provider/hetzner"
)

func start(t *testing.T) (*lab.Lab, *hetzner.Provider, *hz.Driver) {
	l := labtest.Start(t, lab.Config{})
	ep := l.Endpoints()
	d, err := hz.New(hz.Config{Token: ep.Token, BaseURL: ep.HetznerAPI, PollInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	return l, hetzner.New(hetzner.Config{Client: d.Client(), Tagger: d}), d
}

// TestConformance runs the load-balancer conformance suite against the
// driver on the lab's Hetzner API.
func TestConformance(t *testing.T) {
	l, p, _ := start(t)
	ctx := context.Background()
	id1, _, err := l.Seeder().HetznerServer(ctx, "web-1", "cx22", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	id2, _, err := l.Seeder().HetznerServer(ctx, "web-2", "cx22", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	lbID, _, err := l.Seeder().HetznerLoadBalancer(ctx, "lb", []int64{id1}, "/health")
	if err != nil {
		t.Fatal(err)
	}
	lbtest.Run(t, p, strconv.FormatInt(lbID, 10), loadbalancer.Member{ServerID: strconv.FormatInt(id1, 10)}, loadbalancer.Member{ServerID: strconv.FormatInt(id2, 10)})
}

// TestHealthPerService: a new target is reported healthy only once the
// lab's load balancer has checked it, and one whose health check fails
// never is.
func TestHealthPerService(t *testing.T) {
	l, p, _ := start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	sd := l.Seeder()
	id1, _, err := sd.HetznerServer(ctx, "web-1", "cx22", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	id2, _, err := sd.HetznerServer(ctx, "web-2", "cx22", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	id3, _, err := sd.HetznerServer(ctx, "web-3", "cx22", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	lbID, _, err := sd.HetznerLoadBalancer(ctx, "lb", []int64{id1}, "/health")
	if err != nil {
		t.Fatal(err)
	}
	pool := strconv.FormatInt(lbID, 10)
	if err := l.BreakDroplet(int(id3), lab.FaultServe500); err != nil {
		t.Fatal(err)
	}
	good, bad := loadbalancer.Member{ServerID: strconv.FormatInt(id2, 10)}, loadbalancer.Member{ServerID: strconv.FormatInt(id3, 10)}
	for _, m := range []loadbalancer.Member{good, bad} {
		if err := p.AddMember(ctx, pool, m); err != nil {
			t.Fatal(err)
		}
	}
	healthy := func(m loadbalancer.Member) bool {
		ok, err := p.MemberHealthy(ctx, pool, m)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	for !healthy(good) {
		if ctx.Err() != nil {
			t.Fatal("the healthy new target was never reported healthy")
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The good one has been checked several times since it joined: the
	// broken one, checked as often, must still be unhealthy.
	time.Sleep(2 * time.Second)
	if healthy(bad) {
		t.Fatal("a target answering 500 to its health check was reported healthy")
	}
	pl, err := p.Pool(ctx, pool)
	if err != nil {
		t.Fatal(err)
	}
	if len(pl.Members) != 3 || pl.HealthyAfter <= 0 {
		t.Fatalf("pool %+v", pl)
	}
}
