package digitalocean_test

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmswap/vmswap/lab"
	"github.com/vmswap/vmswap/lab/labtest"
	"github.com/vmswap/vmswap/loadbalancer"
	"github.com/vmswap/vmswap/loadbalancer/digitalocean"
	"github.com/vmswap/vmswap/loadbalancer/lbtest"
)

func TestConformance(t *testing.T) {
	l := labtest.Start(t, lab.Config{})
	ctx := context.Background()
	id1, _, err := l.Seeder().Droplet(ctx, "web-1", "s-1vcpu-1gb", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	id2, _, err := l.Seeder().Droplet(ctx, "web-2", "s-1vcpu-1gb", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	lbID, _, err := l.Seeder().LoadBalancer(ctx, "lb", []int{id1})
	if err != nil {
		t.Fatal(err)
	}
	p := digitalocean.New(digitalocean.Config{Client: labtest.Godo(t, l)})
	lbtest.Run(t, p, lbID, loadbalancer.Member{ServerID: strconv.Itoa(id1)}, loadbalancer.Member{ServerID: strconv.Itoa(id2)})
}

// TestWaveChangesInOneCall: with a batch window, the members that swaps
// running at once add (and then remove) go to DigitalOcean in one call
// each way; the swaps share their reads of the pool, and once it was read
// a change costs no read.
func TestWaveChangesInOneCall(t *testing.T) {
	l := labtest.Start(t, lab.Config{})
	ctx := context.Background()
	var ids []int
	for _, n := range []string{"web-1", "web-2", "web-3", "web-4"} {
		id, _, err := l.Seeder().Droplet(ctx, n, "s-1vcpu-1gb", nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	lbID, _, err := l.Seeder().LoadBalancer(ctx, "lb", ids[:1])
	if err != nil {
		t.Fatal(err)
	}
	p := digitalocean.New(digitalocean.Config{Client: labtest.Godo(t, l), BatchWindow: 300 * time.Millisecond})
	change := func(add bool) {
		var wg sync.WaitGroup
		for _, id := range ids[1:] {
			wg.Add(1)
			go func() {
				defer wg.Done()
				m := loadbalancer.Member{ServerID: strconv.Itoa(id)}
				var err error
				if add {
					err = p.AddMember(ctx, lbID, m)
				} else {
					err = p.RemoveMember(ctx, lbID, m)
				}
				if err != nil {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
	}
	change(true)
	change(true) // already members: one more idempotent call, no read
	pool, err := p.Pool(ctx, lbID)
	if err != nil || len(pool.Members) != 4 {
		t.Fatalf("pool %+v %v", pool, err)
	}
	if pool.ServerPort != l.HTTPPort() {
		t.Fatalf("the pool sends to port %d, want the lab's %d", pool.ServerPort, l.HTTPPort())
	}
	change(false)
	if pool, _ = p.Pool(ctx, lbID); len(pool.Members) != 1 {
		t.Fatalf("pool after removal %+v", pool)
	}
	ops := l.OperationCounts()
	if ops["loadBalancers_add_droplets"] != 2 || ops["loadBalancers_remove_droplets"] != 1 {
		t.Fatalf("add calls %d, remove calls %d: want one for each round of the wave", ops["loadBalancers_add_droplets"], ops["loadBalancers_remove_droplets"])
	}
	// Three swaps reading the pool at once share at most two reads, and
	// the two Pool calls read it again: nothing else reads it.
	if n := ops["loadBalancers_get"]; n > 4 {
		t.Fatalf("%d reads of the load balancer, want at most 4", n)
	}

	// A droplet deleted by someone fails the batch it is in: the others
	// still join, and only its own swap hears of it.
	errs := make(chan error, 2)
	for _, id := range []int{ids[1], 999999} {
		go func() { errs <- p.AddMember(ctx, lbID, loadbalancer.Member{ServerID: strconv.Itoa(id)}) }()
	}
	failed := 0
	for range 2 {
		if err := <-errs; err != nil {
			if !strings.Contains(err.Error(), "999999") {
				t.Fatalf("the droplet that exists was refused: %v", err)
			}
			failed++
		}
	}
	if pool, _ = p.Pool(ctx, lbID); failed != 1 || len(pool.Members) != 2 {
		t.Fatalf("%d adds failed, pool %+v: want the missing droplet's alone to fail, web-2 in", failed, pool.Members)
	}
}

// TestRecentPoolSharesARead: a read of the pool begun less than maxAge ago
// answers RecentPool with no call; Pool always reads; an old read is not
// taken.
func TestRecentPoolSharesARead(t *testing.T) {
	l := labtest.Start(t, lab.Config{})
	ctx := context.Background()
	id, _, err := l.Seeder().Droplet(ctx, "web-1", "s-1vcpu-1gb", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	lbID, _, err := l.Seeder().LoadBalancer(ctx, "lb", []int{id})
	if err != nil {
		t.Fatal(err)
	}
	p := digitalocean.New(digitalocean.Config{Client: labtest.Godo(t, l)})
	reads := func() int { return l.OperationCounts()["loadBalancers_get"] }
	if _, err := p.Pool(ctx, lbID); err != nil {
		t.Fatal(err)
	}
	base := reads()
	for range 3 {
		pool, err := p.RecentPool(ctx, lbID, time.Minute)
		if err != nil || !pool.Has(strconv.Itoa(id), "") {
			t.Fatalf("recent pool %+v %v", pool, err)
		}
	}
	if n := reads() - base; n != 0 {
		t.Fatalf("three recent reads within a minute of a read made %d calls", n)
	}
	if _, err := p.Pool(ctx, lbID); err != nil || reads()-base != 1 {
		t.Fatalf("Pool did not read (%d calls): %v", reads()-base, err)
	}
	time.Sleep(20 * time.Millisecond)
	if _, err := p.RecentPool(ctx, lbID, 10*time.Millisecond); err != nil || reads()-base != 2 {
		t.Fatalf("a read older than maxAge was taken (%d calls): %v", reads()-base, err)
	}
}
