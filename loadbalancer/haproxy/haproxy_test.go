package haproxy_test

import (
	"context"
	"fmt"
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
