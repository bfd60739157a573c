package digitalocean_test

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/vmswap/vmswap/lab"
	"github.com/vmswap/vmswap/lab/labtest"
	"github.com/vmswap/vmswap/provider"
	"github.com/vmswap/vmswap/provider/digitalocean"
)

// TestPowerOffOutlastingTimeout: a shutdown that takes longer than the
// timeout is still running when the forced power-off is asked for, which
// DigitalOcean refuses ("pending event"); the driver waits for it instead
// of failing, and the droplet ends off.
func TestPowerOffOutlastingTimeout(t *testing.T) {
	d := lab.FastDurations()
	d.Shutdown = 2 * time.Second
	l := labtest.Start(t, lab.Config{Durations: d})
	id, _, err := l.Seeder().Droplet(context.Background(), "web-1", "s-1vcpu-1gb", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ep := l.Endpoints()
	drv, err := digitalocean.New(digitalocean.Config{Token: ep.Token, BaseURL: ep.DigitalOceanAPI, PollInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := drv.PowerOff(context.Background(), strconv.Itoa(id), 300*time.Millisecond); err != nil {
		t.Fatalf("PowerOff: %v", err)
	}
	s, err := drv.GetServer(context.Background(), strconv.Itoa(id))
	if err != nil || s.Status != provider.StatusOff {
		t.Fatalf("after PowerOff: %+v %v", s, err)
	}
}

// TestPowerOffRacingTheShutdown: the shutdown ends right as its timeout
// does, so the forced power-off meets either the shutdown still pending or
// a droplet already off ("Droplet is already powered off", as the kill
// matrix met it under load). Both mean the droplet is off: no error.
func TestPowerOffRacingTheShutdown(t *testing.T) {
	d := lab.FastDurations()
	d.Shutdown = 300 * time.Millisecond
	l := labtest.Start(t, lab.Config{Durations: d})
	ep := l.Endpoints()
	drv, err := digitalocean.New(digitalocean.Config{Token: ep.Token, BaseURL: ep.DigitalOceanAPI, PollInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	for i, timeout := range []time.Duration{280, 290, 300, 310, 320} {
		id, _, err := l.Seeder().Droplet(context.Background(), fmt.Sprintf("web-%d", i), "s-1vcpu-1gb", nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := drv.PowerOff(context.Background(), strconv.Itoa(id), timeout*time.Millisecond); err != nil {
			t.Fatalf("PowerOff with a %dms timeout: %v", timeout, err)
		}
	}
}

// TestWaveCostsFewerCalls: what a wave's swaps do at once costs fewer
// calls than one each: droplets tagged together within the batch window
// go in one call, and the account's load balancer and reserved-IP lists
// read at preflight are shared. A power-off of a droplet already off, and
// a rename while another action runs, still end as asked.
func TestWaveCostsFewerCalls(t *testing.T) {
	l := labtest.Start(t, lab.Config{})
	ctx := context.Background()
	var ids []string
	for i := range 3 {
		id, _, err := l.Seeder().Droplet(ctx, fmt.Sprintf("web-%d", i), "s-1vcpu-1gb", nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, strconv.Itoa(id))
	}
	ep := l.Endpoints()
	drv, err := digitalocean.New(digitalocean.Config{Token: ep.Token, BaseURL: ep.DigitalOceanAPI, PollInterval: 50 * time.Millisecond, BatchWindow: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	before := l.OperationCounts()
	errs := make(chan error, len(ids))
	for _, id := range ids {
		go func() { errs <- drv.TagServer(ctx, id, "vmswap-claim:run1") }()
	}
	for range ids {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range ids {
		s, err := drv.GetServer(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(s.Tags, "vmswap-claim:run1") {
			t.Fatalf("%s not tagged: %v", id, s.Tags)
		}
		if _, err := drv.Entrypoints(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	ops := l.OperationCounts()
	if n := ops["tags_assign_resources"] - before["tags_assign_resources"]; n != 1 {
		t.Fatalf("three droplets tagged at once: %d calls, want 1", n)
	}
	if n := ops["loadBalancers_list"] - before["loadBalancers_list"]; n != 1 {
		t.Fatalf("three preflights listed the load balancers %d times, want 1", n)
	}
	// The wave's claims read back, each read after its caller asked.
	lists := make(chan []provider.Server, len(ids))
	for range ids {
		go func() {
			l, err := drv.ServersTagged(ctx, "vmswap-claim:run1")
			if err != nil {
				t.Error(err)
			}
			lists <- l
		}()
	}
	for range ids {
		if got := <-lists; len(got) != len(ids) {
			t.Fatalf("%d droplets listed with the claim, want %d: %v", len(got), len(ids), got)
		}
	}
	ops = l.OperationCounts()
	if n := ops["droplets_list"] - before["droplets_list"]; n < 1 || n > 2 {
		t.Fatalf("three read-backs at once listed the droplets %d times, want 1 or 2", n)
	}
	// The swaps release their claims at about the same time: one call.
	for _, id := range ids {
		go func() { errs <- drv.UntagServers(ctx, "vmswap-claim:run1", id) }()
	}
	for range ids {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if n := l.OperationCounts()["tags_unassign_resources"] - ops["tags_unassign_resources"]; n != 1 {
		t.Fatalf("untagging three droplets at once: %d calls, want 1", n)
	}
	if got, err := drv.ServersTagged(ctx, "vmswap-claim:run1"); err != nil || len(got) != 0 {
		t.Fatalf("after the release, the claim is on %v (%v)", got, err)
	}
	// A batch meeting a droplet that is gone: the others are still released.
	if err := drv.TagServer(ctx, ids[2], "vmswap-claim:run2"); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{ids[2], "999999"} {
		go func() { errs <- drv.UntagServers(ctx, "vmswap-claim:run2", id) }()
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatalf("release next to a droplet that is gone: %v", err)
		}
	}
	if s, _ := drv.GetServer(ctx, ids[2]); slices.Contains(s.Tags, "vmswap-claim:run2") {
		t.Fatalf("%s keeps the claim after a batch that met a missing droplet", ids[2])
	}

	// Asked straight away, refused, then done as asked.
	if err := drv.PowerOff(ctx, ids[0], time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := drv.PowerOff(ctx, ids[0], time.Minute); err != nil {
		t.Fatalf("power off a droplet already off: %v", err)
	}
	if err := drv.PowerOn(ctx, ids[1]); err != nil {
		t.Fatal(err)
	}
	snap := make(chan error, 1)
	go func() {
		s, _ := drv.GetServer(ctx, ids[1])
		_, err := drv.Snapshot(ctx, s, provider.SnapshotSpec{Name: "busy", First: true})
		snap <- err
	}()
	time.Sleep(100 * time.Millisecond) // the snapshot action is running
	if err := drv.RenameServer(ctx, ids[1], "web-renamed"); err != nil {
		t.Fatalf("rename during a snapshot: %v", err)
	}
	if err := <-snap; err != nil {
		t.Fatal(err)
	}
	if s, _ := drv.GetServer(ctx, ids[1]); s.Name != "web-renamed" {
		t.Fatalf("name %q after the rename", s.Name)
	}
}

// TestFindTaggedReadsEveryPage: cleanup finds a plan's snapshots among more
// than a page (200) of the account's images.
func TestFindTaggedReadsEveryPage(t *testing.T) {
	t.Parallel()
	l := labtest.Start(t, lab.Config{Durations: lab.Durations{Action: time.Millisecond, Snapshot: time.Millisecond, Boot: time.Millisecond, Shutdown: time.Millisecond, PowerOn: time.Millisecond, Resize: time.Millisecond, HealthInterval: 100 * time.Millisecond, DNSApply: time.Millisecond}})
	ctx := context.Background()
	ep := l.Endpoints()
	drv, err := digitalocean.New(digitalocean.Config{Token: ep.Token, BaseURL: ep.DigitalOceanAPI, PollInterval: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	// 200 images of other things, from 8 droplets at once (straight
	// snapshot actions: the driver would list the images after each),
	// then the plan's two: the plan's are past the first page.
	const droplets, each = 8, 25
	gd := labtest.Godo(t, l)
	var g errgroup.Group
	var last *provider.Server
	for n := range droplets {
		id, _, err := l.Seeder().Droplet(ctx, fmt.Sprintf("web-%d", n), "s-1vcpu-1gb", nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		if last, err = drv.GetServer(ctx, strconv.Itoa(id)); err != nil {
			t.Fatal(err)
		}
		g.Go(func() error {
			for i := range each {
				a, _, err := gd.DropletActions.Snapshot(ctx, id, fmt.Sprintf("backup-%d-%02d", n, i))
				for err == nil && a.Status == "in-progress" {
					time.Sleep(5 * time.Millisecond)
					a, _, err = gd.DropletActions.Get(ctx, id, a.ID)
				}
				if err != nil {
					return err
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	want := []string{"vmswap-web-7-1-plan1", "vmswap-web-7-2-plan1"}
	for _, name := range want {
		if _, err := drv.Snapshot(ctx, last, provider.SnapshotSpec{Name: name, First: true}); err != nil {
			t.Fatal(err)
		}
	}
	_, images, err := drv.FindTagged(ctx, "vmswap:plan1")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, im := range images {
		names = append(names, im.Name)
	}
	slices.Sort(names)
	if !slices.Equal(names, want) {
		t.Fatalf("FindTagged found images %v, want %v", names, want)
	}
}

// TestLaunchFoundByItsClaim: a launch made with the run's claim carries no
// tag of its own (deleting one per swap cost a call each); a retried or
// resumed launch finds the droplet by the claim and its name, among the
// run's other droplets, and makes no second one; forgetting it makes no
// call.
func TestLaunchFoundByItsClaim(t *testing.T) {
	t.Parallel()
	l := labtest.Start(t, lab.Config{})
	ctx := context.Background()
	ep := l.Endpoints()
	drv, err := digitalocean.New(digitalocean.Config{Token: ep.Token, BaseURL: ep.DigitalOceanAPI, PollInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	const claim = "vmswap-claim:run123"
	var srcs []*provider.Server
	for _, name := range []string{"web-1", "web-2"} {
		id, _, err := l.Seeder().Droplet(ctx, name, "s-1vcpu-1gb", nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := drv.TagServer(ctx, strconv.Itoa(id), claim); err != nil {
			t.Fatal(err)
		}
		src, err := drv.GetServer(ctx, strconv.Itoa(id))
		if err != nil {
			t.Fatal(err)
		}
		srcs = append(srcs, src)
	}
	img, err := drv.Snapshot(ctx, srcs[0], provider.SnapshotSpec{Name: "vmswap-web-1-x-plan1", First: true})
	if err != nil {
		t.Fatal(err)
	}
	specs := []provider.LaunchSpec{
		{Source: srcs[0], Image: img, Size: "s-2vcpu-4gb", Name: "web-1-run123", Token: "run123-0", First: true, Claim: claim},
		{Source: srcs[1], Image: img, Size: "s-2vcpu-4gb", Name: "web-2-run123", Token: "run123-1", First: true, Claim: claim},
	}
	var ids []string
	for _, sp := range specs {
		s, err := drv.Launch(ctx, sp)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, s.ID)
		if slices.ContainsFunc(s.Tags, func(t string) bool { return t == "vmswap-launch:"+sp.Token }) {
			t.Fatalf("%s carries a launch tag of its own: %v", sp.Name, s.Tags)
		}
	}
	before := len(l.Inventory().Droplets)
	for i, sp := range specs {
		got, err := drv.FindLaunched(ctx, sp)
		if err != nil || got == nil || got.ID != ids[i] {
			t.Fatalf("FindLaunched(%s) = %+v, %v; want %s", sp.Name, got, err, ids[i])
		}
		sp.First = false
		again, err := drv.Launch(ctx, sp)
		if err != nil || again.ID != ids[i] {
			t.Fatalf("a resumed Launch(%s) = %+v, %v; want %s", sp.Name, again, err, ids[i])
		}
	}
	if n := len(l.Inventory().Droplets); n != before {
		t.Fatalf("a resumed launch made another droplet: %d, %d before", n, before)
	}
	if got, err := drv.FindLaunched(ctx, provider.LaunchSpec{Token: "run123-2", Name: "web-3-run123", Claim: claim}); err != nil || got != nil {
		t.Fatalf("FindLaunched of a launch never made = %+v, %v", got, err)
	}
	calls := len(l.Requests())
	if err := drv.ForgetLaunch(ctx, specs[0]); err != nil || len(l.Requests()) != calls {
		t.Fatalf("ForgetLaunch of a claimed launch: %v, %d calls", err, len(l.Requests())-calls)
	}
}
