package runner_test

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/digitalocean/godo"
	"github.com/vmswap/vmswap/lab"
	"github.com/vmswap/vmswap/lab/labtest"
	"github.com/vmswap/vmswap/plans"
	"github.com/vmswap/vmswap/plans/runner"
	"github.com/vmswap/vmswap/provider"
	"github.com/vmswap/vmswap/verify/probe"
)

// TestServerKeepsItsName swaps web-1 up, then down to a size its image fits:
// one active server named exactly web-1 at the last size is left, the two
// retired ones are web-1-retired-…, and no request failed.
func TestServerKeepsItsName(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	ext, err := probe.Start(probe.Config{URL: w.url(w.lbIP), Rate: 50})
	if err != nil {
		t.Fatal(err)
	}
	var runs []string
	for _, size := range []string{"g-2vcpu-8gb", "s-1vcpu-1gb"} {
		sw := w.swap("loadbalancer")
		sw.Target.Size = size
		sw.Verify.Compare = nil
		res, j := w.run(w.plan(sw), nil)
		if res.ExitCode != 0 {
			t.Fatalf("swap to %s: exit %d: %s", size, res.ExitCode, res.Next)
		}
		runs = append(runs, j.ShortRunID())
		if want := "web-1-" + j.ShortRunID(); j.Swaps[0].NewName != want {
			t.Fatalf("launched as %s, want %s: a launch name is the base name plus one run suffix", j.Swaps[0].NewName, want)
		}
	}
	sum := ext.Stop()
	if sum.Failed != 0 || sum.Requests == 0 {
		t.Fatalf("probe: %d of %d failed: %v", sum.Failed, sum.Requests, sum.Errors)
	}
	var active, retired []string
	for _, d := range w.droplets() {
		switch d.Status {
		case "active":
			active = append(active, d.Name+"@"+d.Size)
		case "off":
			retired = append(retired, d.Name)
		}
	}
	if len(active) != 1 || active[0] != "web-1@s-1vcpu-1gb" {
		t.Fatalf("active: %v", active)
	}
	if len(retired) != 2 || !strings.HasPrefix(retired[0], "web-1-retired-") || !strings.HasPrefix(retired[1], "web-1-retired-") {
		t.Fatalf("retired: %v", retired)
	}
	t.Logf("after two swaps (runs %v): active %v, retired %v, %d requests, 0 failed", runs, active, retired, sum.Requests)
}

// TestNamesComeBackOnRollback: switching back gives the source its name
// back, and the new server the name it was launched with.
func TestNamesComeBackOnRollback(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	sw := w.swap("reserved_ip")
	sw.Retire.KeepFor = plans.Duration(time.Hour)
	doc := w.plan(sw)
	res, j := w.run(doc, nil)
	if res.ExitCode != 0 {
		t.Fatalf("swap: %s", res.Next)
	}
	names := func() map[int]string {
		out := map[int]string{}
		for _, d := range w.droplets() {
			out[d.ID] = d.Name
		}
		return out
	}
	if n := names(); n[w.newID(j)] != "web-1" || n[w.srcID] != "web-1-retired-"+j.ShortRunID() {
		t.Fatalf("names after the swap: %v", n)
	}
	r := w.runner(doc, j, false)
	if rev := r.Revert(context.Background()); rev.ExitCode != 0 {
		t.Fatalf("rollback: %s", rev.Next)
	}
	if n := names(); n[w.srcID] != "web-1" || n[w.newID(j)] != j.Swaps[0].NewName {
		t.Fatalf("names after switching back: %v", n)
	}
	// The source serves again: no keep window on it; the retired new
	// server has one.
	for _, d := range w.droplets() {
		kept := slices.ContainsFunc(d.Tags, func(t string) bool { return strings.HasPrefix(t, "vmswap-keep-until:") })
		if d.ID == w.srcID && kept || d.ID == w.newID(j) && !kept {
			t.Fatalf("keep tags after switching back: %s %v", d.Name, d.Tags)
		}
	}
}

// TestSuffixNamesNeverStack: with names: suffix the new server keeps its
// launch name, and swapping that one again launches web-1-RUN, not
// web-1-RUN-RUN.
func TestSuffixNamesNeverStack(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	sw := w.swap("reserved_ip")
	sw.Names = "suffix"
	res, j := w.run(w.plan(sw), nil)
	if res.ExitCode != 0 {
		t.Fatalf("swap: %s", res.Next)
	}
	first := j.Swaps[0].NewName
	sw.Source.Server = first
	sw.Target.Size = "s-2vcpu-4gb"
	sw.Target.Size = "s-4vcpu-8gb"
	res, j = w.run(w.plan(sw), nil)
	if res.ExitCode != 0 {
		t.Fatalf("second swap: %s", res.Next)
	}
	if got := j.Swaps[0].NewName; got != "web-1-"+j.ShortRunID() {
		t.Fatalf("swapping %s launched %s", first, got)
	}
}

// TestImageThatCarriedTheHostname: a new server whose OS hostname is the
// source's is a warning, or a failed verify with hostname_check: fail.
func TestImageThatCarriedTheHostname(t *testing.T) {
	for _, mode := range []string{"warn", "fail"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			w := newWorld(t)
			w.l.Inject(lab.Fault{Kind: lab.FaultKeepHostname})
			sw := w.swap("reserved_ip")
			sw.Verify.HostnameCheck = mode
			res, _ := w.run(w.plan(sw), nil)
			if mode == "warn" {
				if res.ExitCode != 0 || !strings.Contains(strings.Join(res.Swaps[0].Warnings, "\n"), "hostname web-1 is the source's") {
					t.Fatalf("exit %d, warnings %q", res.ExitCode, res.Swaps[0].Warnings)
				}
				return
			}
			if res.ExitCode != runner.ExitRolledBack || !strings.Contains(res.Next, "hostname web-1 is the source's") {
				t.Fatalf("exit %d: %s", res.ExitCode, res.Next)
			}
		})
	}
}

// TestCleanupExpired: of two retired sources, kept for 1s and for 1h, and
// an unrelated powered-off droplet, `cleanup --expired` finds exactly the
// one whose window ended; the window is on the server as a tag too.
func TestCleanupExpired(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	ctx := context.Background()
	sd := w.l.Seeder()
	id2, _, err := sd.Droplet(ctx, "web-2", "s-1vcpu-1gb", nil, site)
	if err != nil {
		t.Fatal(err)
	}
	ip2, err := sd.ReservedIP(ctx, id2)
	if err != nil {
		t.Fatal(err)
	}
	other, _, err := sd.Droplet(ctx, "batch-1", "s-1vcpu-1gb", nil, site)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := labtest.Godo(t, w.l).DropletActions.PowerOff(ctx, other); err != nil {
		t.Fatal(err)
	}
	sw1 := w.swap("reserved_ip")
	sw1.Retire.KeepFor = plans.Duration(time.Second)
	sw2 := w.swap("reserved_ip")
	sw2.Source.Server, sw2.Cutover.ReservedIP.IP = "web-2", ip2
	sw2.Probe.URL = w.url(ip2)
	sw2.Verify.SSH, sw2.Verify.Compare = nil, nil
	sw2.Retire.KeepFor = plans.Duration(time.Hour)
	p := w.plan(sw1).Plan
	p.Swaps = append(p.Swaps, sw2)
	doc := w.reparse(p)
	res, j := w.run(doc, nil)
	if res.ExitCode != 0 {
		t.Fatalf("swaps: %s", res.Next)
	}
	for _, d := range w.droplets() {
		if d.ID == w.srcID && !slices.ContainsFunc(d.Tags, func(t string) bool { return strings.HasPrefix(t, "vmswap-keep-until:") }) {
			t.Fatalf("the kept source carries no keep window: %v", d.Tags)
		}
	}
	time.Sleep(1100 * time.Millisecond)
	expired, err := runner.FindExpired(ctx, doc, j, w.drivers(doc), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if len(expired) != 1 || expired[0].ID != strconv.Itoa(w.srcID) {
		t.Fatalf("expired: %v (web-1 was %d, web-2 %d, batch-1 %d)", expired, w.srcID, id2, other)
	}
	// The same across the account, from the tags alone (no journal).
	all, err := runner.FindExpiredIn(ctx, "lab", w.drivers(doc)["lab"].Compute, time.Now())
	if err != nil || len(all) != 1 || all[0].ID != strconv.Itoa(w.srcID) {
		t.Fatalf("expired across the account: %v %v", all, err)
	}
	if errs := runner.DeleteOrphans(ctx, expired, w.drivers(doc)); len(errs) != 0 {
		t.Fatal(errs)
	}
	var left []string
	for _, d := range w.droplets() {
		left = append(left, d.Name)
	}
	slices.Sort(left)
	if fmt.Sprint(left) != fmt.Sprintf("[batch-1 web-1 web-2 web-2-retired-%s]", j.ShortRunID()) {
		t.Fatalf("after cleanup --expired: %v", left)
	}
	// The expired server's keep-until tag went with it; web-2's stays.
	tags, _, err := labtest.Godo(t, w.l).Tags.List(ctx, &godo.ListOptions{PerPage: 200})
	if err != nil {
		t.Fatal(err)
	}
	var keeps []string
	for _, tg := range tags {
		if strings.HasPrefix(tg.Name, "vmswap-keep-until:") {
			keeps = append(keeps, tg.Name)
		}
	}
	if len(keeps) != 1 || keeps[0] != "vmswap-keep-until:"+j.Swaps[1].KeepUntil.UTC().Format("20060102T150405Z") {
		t.Fatalf("keep-until tags after cleanup --expired: %v, want web-2's alone (%s)", keeps, j.Swaps[1].KeepUntil)
	}
	// Switching back now is refused before anything changes: web-1's old
	// server is gone.
	r := w.runner(doc, j, false)
	if rev := r.Revert(ctx); rev.ExitCode != runner.ExitBadInput || !strings.Contains(rev.Next, "no longer exists") {
		t.Fatalf("rollback after cleanup --expired: exit %d: %s", rev.ExitCode, rev.Next)
	}
}

// TestRollbackRefusedWhenTheWorldMovedOn: a finished swap whose new server
// was since replaced by a later swap (another plan), or whose old server
// was deleted by cleanup --expired, is not switched back: exit 2, nothing
// changed. And a later run refused in preflight does not hide the run
// that succeeded.
func TestRollbackRefusedWhenTheWorldMovedOn(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	ctx := context.Background()
	sw := w.swap("reserved_ip")
	sw.Retire.KeepFor = plans.Duration(time.Hour)
	docA := w.plan(sw)
	res, jA := w.run(docA, nil)
	if res.ExitCode != 0 {
		t.Fatalf("swap A: %s", res.Next)
	}
	// A run of the same plan refused in preflight (its world changed):
	// nothing changed, and run A stays the plan's last run.
	stale := *docA.Plan
	stale.Observed = &plans.Observed{At: time.Now(), Swaps: []plans.ObservedSwap{{Source: provider.Server{ID: "999", Name: "web-1"}}}}
	docStale := w.reparse(&stale)
	j2 := runner.NextRun(jA, runner.JournalPath(docStale.File), docStale, "stale123456")
	r2 := w.runner(docStale, j2, false)
	if res := r2.Run(ctx); res.ExitCode != runner.ExitBadInput {
		t.Fatalf("stale run: exit %d: %s", res.ExitCode, res.Next)
	}
	if j2.RunID != jA.RunID || j2.Status != runner.StatusSucceeded || j2.History[len(j2.History)-1].Status != runner.StatusRefused {
		t.Fatalf("after a refused run, the journal's last run is %s (%s), history %+v", j2.RunID, j2.Status, j2.History)
	}
	// Another plan swaps web-1 (now the server A launched) again.
	swB := w.swap("reserved_ip")
	swB.Target.Size = "s-4vcpu-8gb"
	swB.Verify.Compare = nil
	pB := *w.plan(swB).Plan
	pB.ID = "planb"
	docB := w.reparse(&pB)
	if res, _ := w.run(docB, nil); res.ExitCode != 0 {
		t.Fatalf("swap B: %s", res.Next)
	}
	before := w.l.Inventory()
	r := w.runner(docA, j2, false)
	rev := r.Revert(ctx)
	if rev.ExitCode != runner.ExitBadInput || !strings.Contains(rev.Next, "retired by a later swap") || j2.Status != runner.StatusSucceeded {
		t.Fatalf("rollback of A after B: exit %d %s: %s", rev.ExitCode, j2.Status, rev.Next)
	}
	if after := w.l.Inventory(); fmt.Sprint(after.Droplets) != fmt.Sprint(before.Droplets) || fmt.Sprint(after.ReservedIPs) != fmt.Sprint(before.ReservedIPs) {
		t.Fatalf("a refused rollback changed the world:\nbefore %+v\nafter  %+v", before, after)
	}
}

// TestRollbackRefusedWhileALaterRunHoldsTheServer: a later plan is
// swapping the server an earlier run launched (interrupted, its claim on
// the server): switching the earlier run back is refused before anything
// changes, naming the run that holds it, and works once that run is
// rolled back.
func TestRollbackRefusedWhileALaterRunHoldsTheServer(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	sw := w.swap("reserved_ip")
	sw.Retire.KeepFor = plans.Duration(time.Hour)
	docA := w.plan(sw)
	res, jA := w.run(docA, nil)
	if res.ExitCode != 0 {
		t.Fatalf("swap A: %s", res.Next)
	}
	swB := w.swap("reserved_ip")
	swB.Target.Size = "s-4vcpu-8gb"
	swB.Verify.Compare = nil
	pB := *w.plan(swB).Plan
	pB.ID = "planb"
	docB := w.reparse(&pB)
	jB := runner.NewJournal(runner.JournalPath(docB.File), docB, "runb0001")
	ctx, cancel := context.WithCancel(context.Background())
	rB := w.runner(docB, jB, false)
	rB.Emit = func(e runner.Event) {
		if e.Event == "step" && e.Step == "snapshot" && e.Status == "started" {
			cancel() // B has claimed web-1 (A's new server) and stops there
		}
	}
	if res := rB.Run(ctx); res.Status != runner.StatusInterrupted {
		t.Fatalf("run B: exit %d: %s", res.ExitCode, res.Next)
	}
	before := w.l.Inventory()
	rev := w.runner(docA, jA, false).Revert(context.Background())
	if rev.ExitCode != runner.ExitBadInput || !strings.Contains(rev.Next, "run runb0001") || jA.Status != runner.StatusSucceeded {
		t.Fatalf("rollback of A while B holds web-1: exit %d %s: %s", rev.ExitCode, jA.Status, rev.Next)
	}
	if after := w.l.Inventory(); fmt.Sprint(after.Droplets) != fmt.Sprint(before.Droplets) || fmt.Sprint(after.ReservedIPs) != fmt.Sprint(before.ReservedIPs) {
		t.Fatalf("a refused rollback changed the world:\nbefore %+v\nafter  %+v", before, after)
	}
	// B rolled back releases web-1: A switches back.
	if rev := w.runner(docB, jB, false).Revert(context.Background()); rev.ExitCode != 0 {
		t.Fatalf("rollback of B: exit %d: %s", rev.ExitCode, rev.Next)
	}
	if rev := w.runner(docA, jA, false).Revert(context.Background()); rev.ExitCode != 0 {
		t.Fatalf("rollback of A after B's: exit %d: %s", rev.ExitCode, rev.Next)
	}
	if on := w.l.Inventory().ReservedIPs[w.ripIP]; on != w.srcID {
		t.Fatalf("after both rollbacks the reserved IP is on %d, want the first source %d", on, w.srcID)
	}
}

// TestRollbackWhenTheNewServerDied: a person powered the new server off
// (the site is down): rollback switches back to the old one.
func TestRollbackWhenTheNewServerDied(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	ctx := context.Background()
	sw := w.swap("loadbalancer")
	sw.Retire.KeepFor = plans.Duration(time.Hour)
	doc := w.plan(sw)
	res, j := w.run(doc, nil)
	if res.ExitCode != 0 {
		t.Fatalf("swap: %s", res.Next)
	}
	if _, _, err := labtest.Godo(t, w.l).DropletActions.PowerOff(ctx, w.newID(j)); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if d := w.l.Inventory(); slices.ContainsFunc(d.Droplets, func(x lab.InventoryDroplet) bool { return x.ID == w.newID(j) && x.Status == "off" }) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the new droplet never went off")
		}
	}
	r := w.runner(doc, j, false)
	if rev := r.Revert(ctx); rev.ExitCode != 0 {
		t.Fatalf("rollback with the new server down: exit %d: %s", rev.ExitCode, rev.Next)
	}
	if lb := w.l.Inventory().LBs[0].Droplets; len(lb) != 1 || lb[0] != w.srcID {
		t.Fatalf("after the rollback the pool is %v", lb)
	}
}
