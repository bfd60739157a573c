package runner_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/digitalocean/godo"
	"gopkg.in/yaml.v3"

	"github.com/vmswap/vmswap/dns"
	"github.com/vmswap/vmswap/dns/authority"
	"github.com/vmswap/vmswap/lab"
	"github.com/vmswap/vmswap/lab/labtest"
	"github.com/vmswap/vmswap/plans"
	"github.com/vmswap/vmswap/plans/registry"
	"github.com/vmswap/vmswap/plans/runner"
	"github.com/vmswap/vmswap/verify/probe"
)

// runner carries on a run of doc in the world: a resume (apply, or apply
// --continue with cont) or a rollback.
func (w *world) runner(doc *plans.Document, j *runner.Journal, cont bool) *runner.Runner {
	return &runner.Runner{Doc: doc, Drivers: w.drivers(doc), Journal: j, Poll: 50 * time.Millisecond, Continue: cont}
}

func (w *world) drivers(doc *plans.Document) map[string]*registry.Drivers {
	d, err := registry.Build(doc.Plan, registry.BuildOptions{Getenv: w.getenv, PollInterval: 50 * time.Millisecond})
	if err != nil {
		w.t.Fatal(err)
	}
	return d
}

// noClaimTag fails the test if the run's claim tag or a launch tag still
// exists (a run deletes them once it is done with them), or if the
// account holds other than keeps keep-until tags.
func (w *world) noClaimTag(run string, keeps int) {
	w.t.Helper()
	tags, _, err := labtest.Godo(w.t, w.l).Tags.List(context.Background(), &godo.ListOptions{PerPage: 200})
	if err != nil {
		w.t.Fatal(err)
	}
	var kept []string
	for _, tg := range tags {
		if strings.HasPrefix(tg.Name, "vmswap-claim:") || strings.HasPrefix(tg.Name, "vmswap-launch:") {
			w.t.Fatalf("the tag %s is left in the account (run %s)", tg.Name, run)
		}
		if strings.HasPrefix(tg.Name, "vmswap-keep-until:") {
			kept = append(kept, fmt.Sprintf("%s (%d droplets)", tg.Name, tg.Resources.Count))
		}
	}
	if len(kept) != keeps {
		w.t.Fatalf("keep-until tags: %v, want %d", kept, keeps)
	}
	for _, d := range w.droplets() {
		if slices.ContainsFunc(d.Tags, func(t string) bool { return strings.HasPrefix(t, "vmswap-claim:") }) {
			w.t.Fatalf("%s still carries a claim: %v", d.Name, d.Tags)
		}
	}
}

// laterClock is the wall clock moved on by a fixed time.
type laterClock struct{ d time.Duration }

func (c laterClock) Now() time.Time { return time.Now().Add(c.d) }
func (c laterClock) Sleep(ctx context.Context, d time.Duration) error {
	return runner.RealClock.Sleep(ctx, d)
}

// TestRollbackAfterSuccess switches a finished swap back: the old server is
// powered on, checked, put back in the pool, and the new one powered off,
// with traffic flowing and nothing failing.
func TestRollbackAfterSuccess(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	sw := w.swap("loadbalancer")
	sw.Retire.KeepFor = plans.Duration(time.Hour)
	doc := w.plan(sw)
	res, j := w.run(doc, nil)
	if res.ExitCode != 0 {
		t.Fatalf("swap: %s", res.Next)
	}
	w.noClaimTag(j.RunID, 1)
	newID, _ := strconv.Atoi(j.Swaps[0].NewID)
	ext, _ := probe.Start(probe.Config{URL: w.url(w.lbIP), Rate: 50})
	r := w.runner(doc, j, false)
	// Switched back two hours on: the new server's keep window is not the
	// source's, whose tag (emptied) goes.
	r.Clock = laterClock{2 * time.Hour}
	rev := r.Revert(context.Background())
	sum := ext.Stop()
	t.Logf("rollback: %s; outside probe %d requests, %d failed", rev.Status, sum.Requests, sum.Failed)
	if rev.ExitCode != 0 || rev.Status != runner.StatusReverted || j.Swaps[0].Status != runner.StatusReverted {
		t.Fatalf("revert: exit %d %s: %s", rev.ExitCode, rev.Status, rev.Next)
	}
	if sum.Failed != 0 || sum.Requests == 0 {
		t.Fatalf("probe during rollback: %d of %d failed: %v", sum.Failed, sum.Requests, sum.Errors)
	}
	w.noClaimTag(j.RunID, 1) // the new server's, not the source's
	// cleanup --expired of the plan finds the new server, retired by the
	// rollback, once its own window ended; the source serves.
	exp, err := runner.FindExpired(context.Background(), doc, j, w.drivers(doc), time.Now().Add(4*time.Hour))
	if err != nil || len(exp) != 1 || exp[0].ID != j.Swaps[0].NewID {
		t.Fatalf("expired after the rollback: %v %v, want the new server %s", exp, err, j.Swaps[0].NewID)
	}
	inv := w.l.Inventory()
	if m := inv.LBs[0].Droplets; len(m) != 1 || m[0] != w.srcID {
		t.Fatalf("LB after rollback: %v", m)
	}
	for _, d := range inv.Droplets {
		if d.ID == w.srcID && d.Status != "active" || d.ID == newID && d.Status != "off" {
			t.Fatalf("after rollback: %+v", inv.Droplets)
		}
	}
}

// TestStalePlanRefused: the world changes after `plan` observed it; apply
// refuses, listing each difference, and changes nothing.
func TestStalePlanRefused(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	sw := w.swap("loadbalancer")
	doc := w.plan(sw)
	if err := runner.ObserveWorld(context.Background(), doc.Plan, registry.BuildOptions{Getenv: w.getenv}); err != nil {
		t.Fatal(err)
	}
	// Someone adds a droplet to the pool and resizes the source.
	c := labtest.Godo(t, w.l)
	ctx := context.Background()
	otherID, _, err := w.l.Seeder().Droplet(ctx, "web-9", "s-1vcpu-1gb", nil, site)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.LoadBalancers.AddDroplets(ctx, w.lbID, otherID); err != nil {
		t.Fatal(err)
	}
	for _, step := range []func() (*godo.Action, *godo.Response, error){
		func() (*godo.Action, *godo.Response, error) { return c.DropletActions.PowerOff(ctx, w.srcID) },
		func() (*godo.Action, *godo.Response, error) {
			return c.DropletActions.Resize(ctx, w.srcID, "s-1vcpu-2gb", false)
		},
		func() (*godo.Action, *godo.Response, error) { return c.DropletActions.PowerOn(ctx, w.srcID) },
	} {
		a, _, err := step()
		if err != nil {
			t.Fatal(err)
		}
		for a.Status == "in-progress" {
			time.Sleep(50 * time.Millisecond)
			a, _, _ = c.DropletActions.Get(ctx, w.srcID, a.ID)
		}
	}
	before := len(w.l.Requests())
	res, _ := w.run(doc, nil)
	if res.ExitCode != runner.ExitBadInput {
		t.Fatalf("exit %d: %s", res.ExitCode, res.Next)
	}
	msg := res.Swaps[0].Error
	for _, want := range []string{"the world changed since the plan was written", "source web-1 was resized: s-1vcpu-1gb when planned, s-1vcpu-2gb now", "load balancer " + w.lbID + " members changed"} {
		if !strings.Contains(msg, want) {
			t.Fatalf("stale message lacks %q:\n%s", want, msg)
		}
	}
	if !strings.Contains(res.Next, "vmswap plan --refresh") {
		t.Fatalf("next: %s", res.Next)
	}
	for _, q := range w.l.Requests()[before:] {
		if q.Mutating() {
			t.Fatalf("a stale plan changed something: %+v", q)
		}
	}
	t.Logf("refused:\n%s", msg)
}

// TestFailedDeletionNeedsAttention: when the rollback cannot delete what it
// created, the run ends with exit 3 and the exact command that finishes the
// job; cleanup then finds and deletes the orphans.
func TestFailedDeletionNeedsAttention(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.l.Inject(lab.Fault{Kind: lab.FaultServe500})
	// The retrying client tries a DELETE 6 times; all of them fail.
	w.l.Inject(lab.Fault{Kind: lab.FaultHTTPError, Operation: "droplets_destroy", Status: 500, Count: 6})
	doc := w.plan(w.swap("reserved_ip"))
	res, j := w.run(doc, nil)
	if res.ExitCode != runner.ExitAttention || !strings.Contains(res.Next, "Finish it with: vmswap cleanup --yes "+doc.File) {
		t.Fatalf("exit %d: %s", res.ExitCode, res.Next)
	}
	t.Logf("needs attention: %s", res.Next)
	orphans, err := runner.FindOrphans(context.Background(), doc, j, w.drivers(doc))
	if err != nil {
		t.Fatal(err)
	}
	if len(orphans) != 1 || orphans[0].Kind != "server" {
		t.Fatalf("orphans: %v", orphans)
	}
	if errs := runner.DeleteOrphans(context.Background(), orphans, w.drivers(doc)); len(errs) != 0 {
		t.Fatal(errs)
	}
	if inv := w.l.Inventory(); len(inv.Droplets) != 1 || len(inv.Snapshots) != 0 {
		t.Fatalf("after cleanup: %+v", inv)
	}
}

func TestLock(t *testing.T) {
	path := filepath.Join(t.TempDir(), "p.yaml.lock")
	l1, err := runner.AcquireLock(path, "apply p.yaml", false)
	if err != nil {
		t.Fatal(err)
	}
	_, err = runner.AcquireLock(path, "apply p.yaml", false)
	var le *runner.LockedError
	host, _ := os.Hostname()
	if !errors.As(err, &le) || !strings.Contains(err.Error(), fmt.Sprintf("%s pid %d since", host, os.Getpid())) {
		t.Fatalf("second lock: %v", err)
	}
	if st, _ := runner.ReadLock(path); st == nil || !st.Held || st.PID != os.Getpid() {
		t.Fatalf("lock state while held: %+v", st)
	}
	l1.Release()
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("lock file after release: %v", err)
	}
	// What a process killed with -9 leaves: the file, without the OS lock.
	// Nothing to break: the next command takes it.
	os.WriteFile(path, []byte(fmt.Sprintf(`{"host":%q,"pid":999999,"started":"2026-01-01T00:00:00Z","command":"apply p.yaml"}`, host)), 0o644)
	if st, _ := runner.ReadLock(path); st == nil || st.Held || st.PID != 999999 {
		t.Fatalf("lock state of a dead holder: %+v", st)
	}
	l2, err := runner.AcquireLock(path, "apply p.yaml", false)
	if err != nil {
		t.Fatalf("lock left by a killed process: %v", err)
	}
	l2.Release()
}

// TestLockHeldByAnotherProcess: the OS lock is held by another process
// (flock(1)), which then is killed with -9: refused while it runs, taken
// at once after.
func TestLockHeldByAnotherProcess(t *testing.T) {
	path := filepath.Join(t.TempDir(), "p.yaml.lock")
	os.WriteFile(path, []byte(`{"host":"ci-runner-7","pid":4242,"started":"2026-01-01T00:00:00Z","command":"apply p.yaml"}`), 0o644)
	cmd := exec.Command("flock", "--exclusive", "--close", path, "sleep", "60")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // its sleep goes with it
	if err := cmd.Start(); err != nil {
		t.Fatalf("flock(1): %v", err)
	}
	defer syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	deadline := time.Now().Add(5 * time.Second)
	for !runner.LockHeld(path) {
		if time.Now().After(deadline) {
			t.Fatal("flock(1) never took the lock")
		}
		time.Sleep(10 * time.Millisecond)
	}
	_, err := runner.AcquireLock(path, "apply p.yaml", true)
	var le *runner.LockedError
	if !errors.As(err, &le) || !strings.Contains(err.Error(), "ci-runner-7 pid 4242") {
		t.Fatalf("lock held by a live process: %v", err)
	}
	cmd.Process.Signal(syscall.SIGKILL) // the holder only
	cmd.Wait()
	// flock(1) forks its command before closing its copy of the lock's
	// descriptor there: for an instant the child holds it too.
	var l *runner.Lock
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if l, err = runner.AcquireLock(path, "apply p.yaml", false); err == nil || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		t.Fatalf("after its holder was killed: %v", err)
	}
	l.Release()
}

// TestNextRunKeepsCompletedSwaps: a two-swap plan whose second swap rolled
// back is applied again: the first swap is not run a second time, the
// second is.
func TestNextRunKeepsCompletedSwaps(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	ctx := context.Background()
	id2, _, err := w.l.Seeder().Droplet(ctx, "web-2", "s-1vcpu-1gb", nil, site)
	if err != nil {
		t.Fatal(err)
	}
	rip2, err := w.l.Seeder().ReservedIP(ctx, id2)
	if err != nil {
		t.Fatal(err)
	}
	second := w.swap("reserved_ip")
	second.Source.Server = "web-2"
	second.Verify.SSH = nil
	second.Cutover.ReservedIP = &plans.IPCutover{Provider: "lab", IP: rip2, Drain: plans.Duration(200 * time.Millisecond)}
	second.Probe = &plans.Probe{URL: w.url(rip2), Rate: 50}
	p := w.plan(w.swap("reserved_ip")).Plan
	p.Swaps = append(p.Swaps, second)
	doc := w.reparse(p)
	// The second swap's new droplet serves 500s: it rolls back.
	res, j := w.run(doc, func(e runner.Event) {
		if e.Event == "step" && e.Step == "launch" && e.Status == "started" && e.Swap == "web-2" {
			w.l.Inject(lab.Fault{Kind: lab.FaultServe500})
		}
	})
	if res.ExitCode != runner.ExitRolledBack || j.Swaps[0].Status != runner.StatusSucceeded || j.Swaps[1].Status != runner.StatusRolledBack {
		t.Fatalf("first run: exit %d, swaps %s/%s", res.ExitCode, j.Swaps[0].Status, j.Swaps[1].Status)
	}
	firstNew := j.Swaps[0].NewID
	next := runner.NextRun(j, filepath.Join(w.dir, "next.json"), doc, "nextrun12345")
	r := w.runner(doc, next, false)
	res = r.Run(context.Background())
	if res.ExitCode != 0 || next.Swaps[0].NewID != firstNew || next.Swaps[1].Status != runner.StatusSucceeded {
		t.Fatalf("second run: exit %d %s; first swap's new server %s -> %s", res.ExitCode, res.Next, firstNew, next.Swaps[0].NewID)
	}
	// web-1, web-2 seeded; one launch for the first swap, two for the second.
	if n := w.l.OperationCounts()["droplets_create"]; n != 5 {
		t.Fatalf("%d droplet creates, want 5", n)
	}
}

// TestQuiesce: with quiesce, sync runs on the source over SSH just before
// its snapshot, and the swap goes on.
func TestQuiesce(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	sw := w.swap("reserved_ip")
	sw.Quiesce = true
	var order []string
	res, _ := w.run(w.plan(sw), func(e runner.Event) {
		if strings.HasPrefix(e.Message, "quiesced web-1") || strings.HasPrefix(e.Message, "snapshotting web-1") {
			order = append(order, e.Message)
		}
	})
	if res.ExitCode != 0 {
		t.Fatalf("exit %d: %s", res.ExitCode, res.Next)
	}
	if len(order) != 2 || !strings.HasPrefix(order[0], "quiesced web-1: sync ran over SSH") || !strings.Contains(order[1], "crash-consistent") {
		t.Fatalf("events: %q", order)
	}
}

// TestDroppedCreateMakesNoTwin: the API carries out a droplet create and the
// connection drops before the answer. The driver finds its own droplet by
// its launch tag instead of creating a second one.
func TestDroppedCreateMakesNoTwin(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.l.Inject(lab.Fault{Kind: lab.FaultDropAfterCommit, Operation: "droplets_create"})
	res, _ := w.run(w.plan(w.swap("reserved_ip")), nil)
	if res.ExitCode != 0 {
		t.Fatalf("exit %d: %s", res.ExitCode, res.Next)
	}
	if f := w.l.Faults(); len(f) != 1 || f[0].Hits != 1 {
		t.Fatalf("the fault did not fire: %+v", f)
	}
	// web-1's seeding, and the swap's one create, which was dropped.
	if n := w.l.OperationCounts()["droplets_create"]; n != 2 {
		t.Fatalf("%d droplet creates, want 2", n)
	}
	if n := len(w.droplets()); n != 2 {
		t.Fatalf("%d droplets, want 2: %+v", n, w.droplets())
	}
}

// TestTokenEnvHoldingATokenIsRefused: a token pasted where the name of its
// variable belongs is refused by validation, and not echoed.
func TestTokenEnvHoldingATokenIsRefused(t *testing.T) {
	secret := "dop_v1_4f2c9e1b7a"
	_, err := plans.Check("p.yaml", []byte(`version: 1
providers:
  do: {type: digitalocean, token_env: "`+secret+`-x"}
swaps:
  - source: {provider: do, server: web-1}
    target: {size: s-2vcpu-4gb}
    cutover:
      reserved_ip: {provider: do, ip: 192.0.2.1}
    probe: {url: "http://192.0.2.1/", rate: 0}
`))
	if err == nil || strings.Contains(err.Error(), secret) || !strings.Contains(err.Error(), "token_env must name an environment variable") ||
		!strings.Contains(err.Error(), "probe rate 0") {
		t.Fatalf("got %v", err)
	}
	// A token with the shape of a variable name: DigitalOcean's own format.
	real := "dop_v1_" + strings.Repeat("4f3a9c2b", 8)
	_, err = plans.Check("p.yaml", []byte(`version: 1
providers:
  do: {type: digitalocean, token_env: `+real+`}
swaps:
  - source: {provider: do, server: web-1}
    target: {size: s-2vcpu-4gb}
    cutover:
      reserved_ip: {provider: do, ip: 192.0.2.1}
`))
	if err == nil || strings.Contains(err.Error(), real) || !strings.Contains(err.Error(), "token_env must name an environment variable") {
		t.Fatalf("a DigitalOcean token in token_env: %v", err)
	}
	_, err = registry.Build(&plans.Plan{Providers: map[string]plans.Provider{"do": {Type: "digitalocean", TokenEnv: real}}}, registry.BuildOptions{Getenv: func(string) string { return "" }})
	if err == nil || strings.Contains(err.Error(), real) {
		t.Fatalf("building a provider whose token_env is a token: %v", err)
	}
}

// TestTagSelectedPool: a load balancer that selects droplets by the tag
// web-1 carries. The new droplet stays out of the pool until it is verified,
// joins it at cutover by the tag, and web-1 leaves it by losing the tag;
// nothing fails through the load balancer.
func TestTagSelectedPool(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	lb := w.taggedLB(t)
	sw := w.swap("loadbalancer")
	sw.Cutover.LoadBalancer.ID = lb.ID
	var lbIP string
	for _, x := range w.l.Inventory().LBs {
		if x.ID == lb.ID {
			lbIP = x.IP
		}
	}
	sw.Probe.URL = w.url(lbIP)
	var beforeCutover []int
	res, j := w.run(w.plan(sw), func(e runner.Event) {
		if e.Event == "step" && e.Step == "verify" && e.Status == "ok" {
			beforeCutover = w.lbMembers(lb.ID)
		}
	})
	if res.ExitCode != 0 {
		t.Fatalf("exit %d: %s", res.ExitCode, res.Next)
	}
	newID, _ := strconv.Atoi(j.Swaps[0].NewID)
	if len(beforeCutover) != 1 || beforeCutover[0] != w.srcID {
		t.Fatalf("pool while the new droplet was verified: %v (source %d)", beforeCutover, w.srcID)
	}
	if got := w.lbMembers(lb.ID); len(got) != 1 || got[0] != newID {
		t.Fatalf("pool after the swap: %v, want [%d]", got, newID)
	}
	if p := res.Swaps[0]; p.Failed != 0 || p.Requests < 50 {
		t.Fatalf("probe through the tagged load balancer: %+v", p)
	}
}

func (w *world) lbMembers(id string) []int {
	for _, x := range w.l.Inventory().LBs {
		if x.ID == id {
			return x.Droplets
		}
	}
	return nil
}

func (w *world) lbHas(id string, droplet int) bool { return slices.Contains(w.lbMembers(id), droplet) }

// servedA is what the lab's nameserver answers for www.shop.test A.
func (w *world) servedA(t *testing.T) []string {
	got, _, err := authority.Lookup(context.Background(), w.l.Endpoints().DNS, "www.shop.test", "A")
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func (w *world) waitServedA(t *testing.T, want ...string) {
	t.Helper()
	if err := authority.WaitServed(context.Background(), w.l.Endpoints().DNS, "www.shop.test", "A", want, 20*time.Millisecond, nil); err != nil {
		t.Fatal(err)
	}
}

// TestSharedDNSRecord: www serves web-1 and web-2. Swapping web-1 replaces
// web-1's value only; switching back puts it back and keeps web-2.
func TestSharedDNSRecord(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	ctx := context.Background()
	_, ip2, err := w.l.Seeder().Droplet(ctx, "web-2", "s-1vcpu-1gb", nil, site)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.l.Seeder().Record(ctx, "shop.test", "www", ip2, 30); err != nil {
		t.Fatal(err)
	}
	w.waitServedA(t, w.srcIP, ip2)
	sw := w.swap("dns")
	sw.Retire.KeepFor = plans.Duration(time.Hour)
	doc := w.plan(sw)
	if err := runner.ObserveWorld(ctx, doc.Plan, registry.BuildOptions{Getenv: w.getenv}); err != nil {
		t.Fatal(err)
	}
	if m := strings.Join(doc.Plan.Mutations, "\n"); !strings.Contains(m, "replace web-1's value "+w.srcIP) || !strings.Contains(m, "the other values ["+ip2+"] stay") {
		t.Fatalf("mutations: %s", m)
	}
	doc = w.reparse(doc.Plan)
	res, j := w.run(doc, nil)
	if res.ExitCode != 0 {
		t.Fatalf("exit %d: %s", res.ExitCode, res.Next)
	}
	newIP := j.Swaps[0].NewIP
	if got := w.servedA(t); !sameValues(got, newIP, ip2) {
		t.Fatalf("after the swap www serves %v, want %s and web-2's %s", got, newIP, ip2)
	}
	r := w.runner(doc, j, false)
	if rev := r.Revert(ctx); rev.ExitCode != 0 {
		t.Fatalf("revert: %s", rev.Next)
	}
	if got := w.servedA(t); !sameValues(got, w.srcIP, ip2) {
		t.Fatalf("after switching back www serves %v, want %s and %s", got, w.srcIP, ip2)
	}
}

func sameValues(got []string, want ...string) bool {
	return slices.Equal(slices.Sorted(slices.Values(got)), slices.Sorted(slices.Values(want)))
}

// TestConcurrentDNSEdit: someone adds a value to www while the new server
// is being launched. The cutover finds the set is not what preflight read,
// changes nothing, and the run rolls back naming the values; the other
// person's value stays.
func TestConcurrentDNSEdit(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	ctx := context.Background()
	res, _ := w.run(w.plan(w.swap("dns")), func(e runner.Event) {
		if e.Event == "step" && e.Step == "launch" && e.Status == "started" {
			if err := w.l.Seeder().Record(ctx, "shop.test", "www", "127.0.0.250", 30); err != nil {
				t.Error(err)
			}
		}
	})
	if res.ExitCode != runner.ExitRolledBack || !strings.Contains(res.Next, "someone else changed www.shop.test") || !strings.Contains(res.Next, "127.0.0.250") || !strings.Contains(res.Next, "this run moved no traffic") || strings.Contains(res.Next, "serves as before") {
		t.Fatalf("exit %d: %s", res.ExitCode, res.Next)
	}
	w.waitServedA(t, w.srcIP, "127.0.0.250")
	for _, q := range w.l.Requests() {
		if q.Operation == "domains_update_record" || q.Operation == "domains_delete_record" {
			t.Fatalf("the record was changed: %+v", q)
		}
	}
}

// landThenStop is a DNS driver whose first SetRecord lands and then the
// run is stopped, as a kill between the call and the journal's record of it.
type landThenStop struct {
	dns.Provider
	stop func()
	once sync.Once
}

func (d *landThenStop) SetRecord(ctx context.Context, rec dns.Record) (*dns.Record, error) {
	got, err := d.Provider.SetRecord(ctx, rec)
	stopped := false
	d.once.Do(func() { d.stop(); stopped = true })
	if stopped {
		return nil, context.Canceled
	}
	return got, err
}

// TestResumeAfterSomeoneRewroteTheRecord: a run stopped right after its
// DNS change landed; someone then points the record at a server of their
// own. The resumed run leaves their value and says the swap needs
// attention (www serves neither server): not "rolled back", which would
// claim the source serves as before.
func TestResumeAfterSomeoneRewroteTheRecord(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	ctx := context.Background()
	doc := w.plan(w.swap("dns"))
	j := runner.NewJournal(runner.JournalPath(doc.File), doc, "rundns01")
	r := w.runner(doc, j, false)
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for _, d := range r.Drivers {
		if d.DNS != nil {
			d.DNS = &landThenStop{Provider: d.DNS, stop: cancel}
		}
	}
	if res := r.Run(rctx); res.Status != runner.StatusInterrupted {
		t.Fatalf("stopped run: %s, exit %d: %s", res.Status, res.ExitCode, res.Next)
	}
	newIP := j.Swaps[0].NewIP
	w.waitServedA(t, newIP)
	gd := labtest.Godo(t, w.l)
	recs, _, err := gd.Domains.RecordsByTypeAndName(ctx, "shop.test", "A", "www.shop.test", nil)
	if err != nil || len(recs) != 1 {
		t.Fatalf("www records: %v %v", recs, err)
	}
	if _, _, err := gd.Domains.EditRecord(ctx, "shop.test", recs[0].ID, &godo.DomainRecordEditRequest{Type: "A", Name: "www", Data: "127.0.0.250", TTL: recs[0].TTL}); err != nil {
		t.Fatal(err)
	}
	w.waitServedA(t, "127.0.0.250")
	res := w.runner(doc, j, false).Run(ctx)
	if res.ExitCode != runner.ExitAttention || !strings.Contains(res.Next, "someone changed it") || !strings.Contains(res.Next, "127.0.0.250") {
		t.Fatalf("resume: exit %d: %s", res.ExitCode, res.Next)
	}
	w.waitServedA(t, "127.0.0.250")
}

// stopAtWait is a DNS driver whose first WaitServed for a set vmswap
// changed stops the run: the record is set, and the run killed while it
// waits to see it served. (Preflight's wait for the set as read passes.)
type stopAtWait struct {
	dns.Provider
	stop func()
	once sync.Once
}

func (d *stopAtWait) WaitServed(ctx context.Context, rec dns.Record) error {
	if rec.Expect == nil {
		return d.Provider.WaitServed(ctx, rec)
	}
	stopped := false
	d.once.Do(func() { d.stop(); stopped = true })
	if stopped {
		return context.Canceled
	}
	return d.Provider.WaitServed(ctx, rec)
}

// TestResumeAfterTheSetRecordWasRewritten: the run set the record and was
// stopped while waiting to see it served; someone then rewrote it. The
// resumed run reads the record before waiting (it waited out the whole
// ready timeout for values no longer there) and needs attention at once.
func TestResumeAfterTheSetRecordWasRewritten(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	ctx := context.Background()
	sw := w.swap("dns")
	sw.ReadyTimeout = plans.Duration(time.Minute)
	doc := w.plan(sw)
	j := runner.NewJournal(runner.JournalPath(doc.File), doc, "rundns02")
	r := w.runner(doc, j, false)
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for _, d := range r.Drivers {
		if d.DNS != nil {
			d.DNS = &stopAtWait{Provider: d.DNS, stop: cancel}
		}
	}
	if res := r.Run(rctx); res.Status != runner.StatusInterrupted || !slices.Contains(j.Swaps[0].Done, "dns_set") && !strings.Contains(fmt.Sprint(j.Swaps[0]), "dns_set") {
		t.Fatalf("stopped run: %s, exit %d: %s (%+v)", res.Status, res.ExitCode, res.Next, j.Swaps[0])
	}
	gd := labtest.Godo(t, w.l)
	recs, _, err := gd.Domains.RecordsByTypeAndName(ctx, "shop.test", "A", "www.shop.test", nil)
	if err != nil || len(recs) != 1 {
		t.Fatalf("www records: %v %v", recs, err)
	}
	if _, _, err := gd.Domains.EditRecord(ctx, "shop.test", recs[0].ID, &godo.DomainRecordEditRequest{Type: "A", Name: "www", Data: "127.0.0.250", TTL: recs[0].TTL}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	res := w.runner(doc, j, false).Run(ctx)
	if res.ExitCode != runner.ExitAttention || !strings.Contains(res.Next, "someone changed it") || time.Since(start) > 30*time.Second {
		t.Fatalf("resume after %s: exit %d: %s", time.Since(start).Round(time.Second), res.ExitCode, res.Next)
	}
	w.waitServedA(t, "127.0.0.250")
}

// TestBudgetCoversTheRetireHold: the new server starts failing once observe
// is over, while the old one is still kept for the drain. The error budget
// is checked during that hold too: the swap rolls back before the old
// server is powered off.
func TestBudgetCoversTheRetireHold(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	sw := w.swap("loadbalancer")
	sw.Cutover.LoadBalancer.Drain = plans.Duration(4 * time.Second)
	sw.Observe = plans.Duration(500 * time.Millisecond)
	var once sync.Once
	res, _ := w.run(w.plan(sw), func(e runner.Event) {
		if e.Event == "step" && e.Step == "retire" && e.Status == "started" {
			once.Do(func() {
				for _, d := range w.droplets() {
					if d.ID != w.srcID {
						w.l.BreakDroplet(d.ID, lab.FaultServe500)
					}
				}
			})
		}
	})
	if res.ExitCode != runner.ExitRolledBack || !strings.Contains(res.Next, "retire failed and was rolled back") || !strings.Contains(res.Next, "error budget breached") {
		t.Fatalf("exit %d: %s", res.ExitCode, res.Next)
	}
	for _, d := range w.droplets() {
		if d.ID == w.srcID && d.Status != "active" {
			t.Fatalf("the source is %s", d.Status)
		}
	}
	if m := w.lbMembers(w.lbID); len(m) != 1 || m[0] != w.srcID {
		t.Fatalf("pool after rollback: %v", m)
	}
}

func TestDurationTooLarge(t *testing.T) {
	var d plans.Duration
	err := yaml.Unmarshal([]byte("99999999999h"), &d)
	if err == nil || !strings.Contains(err.Error(), "too large") {
		t.Fatalf("got %v", err)
	}
	if err := yaml.Unmarshal([]byte("forever"), &d); err == nil || !strings.Contains(err.Error(), "write a number and a unit") {
		t.Fatalf("got %v", err)
	}
}

// TestDualStackDNS: dual.shop.test has an A and an AAAA record for a
// dual-stack web-6. The swap moves both to the new server (launched with
// IPv6, as its source), so IPv6 clients are not left on a server about to
// be powered off; switching back moves both back. An AAAA cutover of a
// server without IPv6 is refused before anything changes.
func TestDualStackDNS(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	ctx := context.Background()
	sd := w.l.Seeder()
	_, ip4, ip6, err := sd.DualStackDroplet(ctx, "web-6", "s-1vcpu-1gb", nil, site)
	if err != nil || ip6 == "" {
		t.Fatalf("dual-stack droplet: %q %v", ip6, err)
	}
	for _, v := range []string{ip4, ip6} {
		if err := sd.Record(ctx, "shop.test", "dual", v, 30); err != nil {
			t.Fatal(err)
		}
	}
	dnsAddr := w.l.Endpoints().DNS
	if err := authority.WaitServed(ctx, dnsAddr, "dual.shop.test", "AAAA", []string{ip6}, 20*time.Millisecond, nil); err != nil {
		t.Fatal(err)
	}
	sw := w.swap("dns")
	sw.Source.Server = "web-6"
	sw.Verify = plans.Verify{HTTP: sw.Verify.HTTP, Compare: sw.Verify.Compare}
	sw.Cutover.DNS.Record = "dual.shop.test"
	sw.Probe.URL = fmt.Sprintf("http://dual.shop.test:%d/", w.l.HTTPPort())
	sw.Retire.KeepFor = plans.Duration(time.Hour)
	doc := w.plan(sw)
	if err := runner.ObserveWorld(ctx, doc.Plan, registry.BuildOptions{Getenv: w.getenv}); err != nil {
		t.Fatal(err)
	}
	if m := strings.Join(doc.Plan.Mutations, "\n"); !strings.Contains(m, "dual.shop.test AAAA") {
		t.Fatalf("the plan does not say it moves the AAAA set: %s", m)
	}
	doc = w.reparse(doc.Plan)
	res, j := w.run(doc, nil)
	if res.ExitCode != 0 {
		t.Fatalf("exit %d: %s", res.ExitCode, res.Next)
	}
	st := j.Swaps[0]
	if st.NewIPv6 == "" || st.NewIPv6 == ip6 {
		t.Fatalf("the new server's IPv6: %q (source %q)", st.NewIPv6, ip6)
	}
	for typ, want := range map[string]string{"A": st.NewIP, "AAAA": st.NewIPv6} {
		if err := authority.WaitServed(ctx, dnsAddr, "dual.shop.test", typ, []string{want}, 20*time.Millisecond, nil); err != nil {
			t.Fatalf("after the swap %s: %v", typ, err)
		}
	}
	if p := res.Swaps[0]; p.Failed != 0 || p.Requests < 50 {
		t.Fatalf("probe: %+v", p)
	}
	r := w.runner(doc, j, false)
	if rev := r.Revert(ctx); rev.ExitCode != 0 {
		t.Fatalf("revert: %s", rev.Next)
	}
	for typ, want := range map[string]string{"A": ip4, "AAAA": ip6} {
		got, _, err := authority.Lookup(ctx, dnsAddr, "dual.shop.test", typ)
		if err != nil || !sameValues(got, want) {
			t.Fatalf("after switching back %s = %v (%v), want %s", typ, got, err, want)
		}
	}

	// An AAAA cutover of the dual-stack name moves its A set with it.
	sw6 := sw
	sw6.Cutover.DNS = &plans.DNSCutover{Provider: "lab", Record: "dual.shop.test", Type: "AAAA", Grace: sw.Cutover.DNS.Grace}
	doc6 := w.plan(sw6)
	if err := runner.ObserveWorld(ctx, doc6.Plan, registry.BuildOptions{Getenv: w.getenv}); err != nil {
		t.Fatal(err)
	}
	if m := strings.Join(doc6.Plan.Mutations, "\n"); !strings.Contains(m, "dual.shop.test AAAA") || !strings.Contains(m, "dual.shop.test A [") {
		t.Fatalf("an AAAA cutover of a dual-stack name does not move its A set: %s", m)
	}

	// web-1 has no IPv6: an AAAA cutover of it is refused in preflight.
	sw1 := w.swap("dns")
	sw1.Cutover.DNS.Type = "AAAA"
	before := len(w.l.Requests())
	res, _ = w.run(w.plan(sw1), nil)
	if res.ExitCode != runner.ExitBadInput || !strings.Contains(res.Swaps[0].Error, "web-1 has no IPv6 address") {
		t.Fatalf("AAAA cutover of an IPv4-only server: exit %d: %s", res.ExitCode, res.Swaps[0].Error)
	}
	for _, q := range w.l.Requests()[before:] {
		if q.Mutating() && !strings.HasPrefix(q.Operation, "tags_") {
			t.Fatalf("a refused plan changed something: %+v", q)
		}
	}
}

// TestOtherTagSelectedPool: besides the plan's load balancer (by ID), a
// second one selects droplets by the tag web-1 carries. The new droplet
// stays out of that one until it is verified and joins it at cutover; the
// reserved IP on web-1, which the plan does not move, is warned about.
func TestOtherTagSelectedPool(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	lb := w.taggedLB(t)
	var inTagged []int
	var warned bool
	res, j := w.run(w.plan(w.swap("loadbalancer")), func(e runner.Event) {
		if e.Event == "step" && e.Step == "verify" && e.Status == "ok" {
			inTagged = w.lbMembers(lb.ID)
		}
		if e.Event == "warning" && strings.Contains(e.Message, "also takes traffic through reserved IP "+w.ripIP) {
			warned = true
		}
	})
	if res.ExitCode != 0 {
		t.Fatalf("exit %d: %s", res.ExitCode, res.Next)
	}
	newID, _ := strconv.Atoi(j.Swaps[0].NewID)
	if slices.Contains(inTagged, newID) {
		t.Fatalf("the tag-selected pool had the new droplet before it was verified: %v", inTagged)
	}
	if !w.lbHas(lb.ID, newID) {
		t.Fatalf("the tag-selected pool lacks the new droplet after the swap: %v", w.lbMembers(lb.ID))
	}
	if !warned || len(res.Swaps[0].Warnings) != 1 || !strings.Contains(res.Swaps[0].Warnings[0], "reserved IP "+w.ripIP) {
		t.Fatalf("the reserved IP the plan does not move: warned %v, summary %q", warned, res.Swaps[0].Warnings)
	}
}

// TestCutoverUndoneBeforeRetire: someone takes the new droplet out of the
// pool while the swap observes it. Retire checks the cutover still holds
// before the old server goes: it does not, so the swap rolls back and the
// source serves, instead of claiming a swap that no longer exists.
func TestCutoverUndoneBeforeRetire(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	ctx := context.Background()
	c := labtest.Godo(t, w.l)
	sw := w.swap("loadbalancer")
	sw.Observe = plans.Duration(2 * time.Second)
	// The pool is left empty, so requests fail: an unlimited budget lets
	// the run reach retire, which is what this test is about.
	sw.Probe.ErrorBudget = plans.Budget{Ratio: 1, Text: "100%"}
	var once sync.Once
	res, _ := w.run(w.plan(sw), func(e runner.Event) {
		if e.Event == "step" && e.Step == "observe" && e.Status == "started" {
			once.Do(func() {
				for _, d := range w.droplets() {
					if d.ID != w.srcID {
						if _, err := c.LoadBalancers.RemoveDroplets(ctx, w.lbID, d.ID); err != nil {
							t.Error(err)
						}
					}
				}
			})
		}
	})
	if res.ExitCode != runner.ExitRolledBack || !strings.Contains(res.Next, "the cutover no longer holds") {
		t.Fatalf("exit %d: %s", res.ExitCode, res.Next)
	}
	if m := w.lbMembers(w.lbID); len(m) != 1 || m[0] != w.srcID {
		t.Fatalf("pool after rollback: %v", m)
	}
	for _, d := range w.droplets() {
		if d.ID == w.srcID && d.Status != "active" {
			t.Fatalf("the source is %s", d.Status)
		}
	}
}

// taggedLB creates a load balancer that selects the droplets tagged web
// (web-1 among them) and waits until it lists web-1.
func (w *world) taggedLB(t *testing.T) *godo.LoadBalancer {
	t.Helper()
	c := labtest.Godo(t, w.l)
	lb, _, err := c.LoadBalancers.Create(context.Background(), &godo.LoadBalancerRequest{Name: "tagged", Region: "nyc3", Tag: "web",
		ForwardingRules: []godo.ForwardingRule{{EntryProtocol: "http", EntryPort: 80, TargetProtocol: "http", TargetPort: w.l.HTTPPort()}},
		HealthCheck:     &godo.HealthCheck{Protocol: "http", Port: w.l.HTTPPort(), Path: "/health", CheckIntervalSeconds: 3, ResponseTimeoutSeconds: 3, HealthyThreshold: 3, UnhealthyThreshold: 3}})
	if err != nil {
		t.Fatal(err)
	}
	for !w.lbHas(lb.ID, w.srcID) {
		time.Sleep(20 * time.Millisecond)
	}
	return lb
}

// TestSourceDeletedDuringTheRun: someone deletes the source while the new
// server is observed. Retire finds nothing to power off and the swap
// finishes (it used to fail retire on the 404 forever, and rollback with
// it): the new server serves, takes the name, and nothing is left behind.
func TestSourceDeletedDuringTheRun(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	ctx := context.Background()
	c := labtest.Godo(t, w.l)
	sw := w.swap("loadbalancer")
	sw.Observe = plans.Duration(2 * time.Second)
	sw.Verify.SSH, sw.Verify.Compare = nil, nil
	var once sync.Once
	var warned atomic.Bool
	res, _ := w.run(w.plan(sw), func(e runner.Event) {
		if e.Event == "step" && e.Step == "observe" && e.Status == "started" {
			once.Do(func() {
				if _, err := c.Droplets.Delete(ctx, w.srcID); err != nil {
					t.Error(err)
				}
			})
		}
		if e.Event == "warning" && strings.Contains(e.Message, "no longer exists") {
			warned.Store(true)
		}
	})
	if res.ExitCode != runner.ExitOK || !warned.Load() {
		t.Fatalf("exit %d (warned that the source is gone: %v): %s", res.ExitCode, warned.Load(), res.Next)
	}
	ds := w.droplets()
	if len(ds) != 1 || ds[0].Name != "web-1" || ds[0].Status != "active" || slices.ContainsFunc(ds[0].Tags, func(t string) bool { return strings.HasPrefix(t, "vmswap-claim:") }) {
		t.Fatalf("droplets after the swap: %+v", ds)
	}
	if m := w.lbMembers(w.lbID); len(m) != 1 || m[0] != ds[0].ID {
		t.Fatalf("pool: %v", m)
	}
	if imgs, _, _ := c.Images.ListUser(ctx, nil); len(imgs) != 0 {
		t.Fatalf("images left: %v", imgs)
	}
}

// TestRollbackLeavesASourceSomeoneStopped: the source is powered off by
// someone during the run, and then the swap fails after its cutover. The
// rollback does not power it on (this run did not stop it): traffic stays
// on the new server, which serves, and the message says what to do.
func TestRollbackLeavesASourceSomeoneStopped(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	ctx := context.Background()
	c := labtest.Godo(t, w.l)
	sw := w.swap("loadbalancer")
	sw.Observe = plans.Duration(2 * time.Second)
	sw.Verify.SSH, sw.Verify.Compare = nil, nil
	var once sync.Once
	res, _ := w.run(w.plan(sw), func(e runner.Event) {
		if e.Event == "step" && e.Step == "observe" && e.Status == "started" {
			once.Do(func() {
				if _, _, err := c.DropletActions.PowerOff(ctx, w.srcID); err != nil {
					t.Error(err)
				}
				// The swap fails after its cutover: the new server leaves the pool.
				time.Sleep(300 * time.Millisecond)
				for _, d := range w.droplets() {
					if d.ID != w.srcID {
						if _, err := c.LoadBalancers.RemoveDroplets(ctx, w.lbID, d.ID); err != nil {
							t.Error(err)
						}
					}
				}
			})
		}
	})
	if res.ExitCode != runner.ExitAttention || !strings.Contains(res.Next, "this run did not power it off") {
		t.Fatalf("exit %d: %s", res.ExitCode, res.Next)
	}
	for _, d := range w.droplets() {
		if d.ID == w.srcID && d.Status != "off" {
			t.Fatalf("the source someone stopped is %s", d.Status)
		}
	}
}

// TestSourceDeletedBeforeTheCutover: someone deletes the source while the
// new server is verified. The rollback that follows does not delete the
// new server (it is the only one left) nor say the source serves: it
// keeps it, and says so.
func TestSourceDeletedBeforeTheCutover(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	ctx := context.Background()
	c := labtest.Godo(t, w.l)
	sw := w.swap("reserved_ip")
	sw.Verify.SSH, sw.Verify.Compare = nil, nil
	var once sync.Once
	res, j := w.run(w.plan(sw), func(e runner.Event) {
		if e.Event == "step" && e.Step == "verify" && e.Status == "started" {
			once.Do(func() {
				if _, err := c.Droplets.Delete(ctx, w.srcID); err != nil {
					t.Error(err)
				}
			})
		}
	})
	if res.ExitCode != runner.ExitAttention || !strings.Contains(res.Next, "is kept: it is the only server left") || strings.Contains(res.Next, "serves as before") {
		t.Fatalf("exit %d: %s", res.ExitCode, res.Next)
	}
	newID := j.Swaps[0].NewID
	if ds := w.droplets(); len(ds) != 1 || strconv.Itoa(ds[0].ID) != newID || ds[0].Status != "active" {
		t.Fatalf("droplets after the rollback: %+v (new server %s)", ds, newID)
	}
}

// TestSourceDeletedThenTheSwapFails: someone deletes the source right at
// the cutover of a DNS swap; clients that cached its address fail, and the
// swap fails under the probe. The rollback has nothing to switch back to:
// it gives up, says so, and apply (run again) finishes the swap on the new
// server. (It used to send the operator from apply to rollback and back.)
func TestSourceDeletedThenTheSwapFails(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	ctx := context.Background()
	c := labtest.Godo(t, w.l)
	sw := w.swap("dns")
	sw.Verify.SSH, sw.Verify.Compare = nil, nil
	sw.Observe = plans.Duration(3 * time.Second)
	doc := w.plan(sw)
	var once sync.Once
	res, j := w.run(doc, func(e runner.Event) {
		if e.Event == "step" && e.Step == "cutover" && e.Status == "started" {
			once.Do(func() {
				if _, err := c.Droplets.Delete(ctx, w.srcID); err != nil {
					t.Error(err)
				}
			})
		}
	})
	switch res.ExitCode {
	case runner.ExitOK:
		// The probe did not meet the cached address: retire found the
		// source gone, and the swap finished.
		if !slices.ContainsFunc(res.Swaps[0].Warnings, func(w string) bool { return strings.Contains(w, "no longer exists") }) {
			t.Fatalf("finished without saying the source is gone: %v", res.Swaps[0].Warnings)
		}
		return
	case runner.ExitAttention:
	default:
		t.Fatalf("exit %d: %s", res.ExitCode, res.Next)
	}
	if !strings.Contains(res.Next, "nothing to switch back to") || !strings.Contains(res.Next, "finishes the swap") {
		t.Fatalf("the rollback says: %s", res.Next)
	}
	j, err := runner.LoadJournal(runner.JournalPath(doc.File))
	if err != nil {
		t.Fatal(err)
	}
	if j.RollbackOwed() {
		t.Fatal("the journal still owes a rollback: apply would refuse to finish the swap")
	}
	drivers, err := registry.Build(doc.Plan, registry.BuildOptions{Getenv: w.getenv, PollInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	again := (&runner.Runner{Doc: doc, Drivers: drivers, Journal: j, Poll: 50 * time.Millisecond}).Run(ctx)
	if again.ExitCode != runner.ExitOK {
		t.Fatalf("apply again: exit %d: %s", again.ExitCode, again.Next)
	}
	if ds := w.droplets(); len(ds) != 1 || ds[0].Name != "web-1" || ds[0].Status != "active" {
		t.Fatalf("droplets after apply: %+v", ds)
	}
}

// TestSourceDeletedOnceOff: someone deletes the source the moment it is
// powered off, before vmswap tags its keep window and renames it. Retire
// finishes whichever call meets the 404 (the run used to be stuck on the
// keep-until tag for good): the new server takes the name, nothing is
// left behind.
func TestSourceDeletedOnceOff(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	ctx := context.Background()
	c := labtest.Godo(t, w.l)
	sw := w.swap("loadbalancer")
	sw.Verify.SSH, sw.Verify.Compare = nil, nil
	sw.Retire.KeepFor = plans.Duration(time.Hour)
	var once sync.Once
	deleted := make(chan struct{})
	res, _ := w.run(w.plan(sw), func(e runner.Event) {
		if e.Event == "step" && e.Step == "retire" && e.Status == "started" {
			once.Do(func() {
				go func() {
					defer close(deleted)
					for start := time.Now(); time.Since(start) < time.Minute; time.Sleep(time.Millisecond) {
						for _, d := range w.droplets() {
							if d.ID == w.srcID && d.Status == "off" {
								if _, err := c.Droplets.Delete(ctx, w.srcID); err != nil {
									t.Error(err)
								}
								return
							}
						}
					}
				}()
			})
		}
	})
	<-deleted
	if res.ExitCode != runner.ExitOK {
		t.Fatalf("exit %d: %s", res.ExitCode, res.Next)
	}
	t.Logf("warnings: %v", res.Swaps[0].Warnings)
	ds := w.droplets()
	if len(ds) != 1 || ds[0].Name != "web-1" || ds[0].Status != "active" || slices.ContainsFunc(ds[0].Tags, func(t string) bool { return strings.HasPrefix(t, "vmswap-claim:") }) {
		t.Fatalf("droplets after the swap: %+v", ds)
	}
	if imgs, _, _ := c.Images.ListUser(ctx, nil); len(imgs) != 0 {
		t.Fatalf("images left: %v", imgs)
	}
}

// TestClaimRemovedDuringTheRun: someone removes the run's claim from the
// source mid-swap. Alone, it is put back before traffic moves and the swap
// finishes; with another run's claim on the source since, traffic stays
// and the swap rolls back.
func TestClaimRemovedDuringTheRun(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		other   bool
		code    int
		message string
	}{
		{"put back", false, 0, "someone removed this run's claim"},
		{"another run took it", true, runner.ExitRolledBack, "is claimed by run other too"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			w := newWorld(t)
			gd := labtest.Godo(t, w.l)
			ctx := context.Background()
			res, j := w.run(w.plan(w.swap("loadbalancer")), func(e runner.Event) {
				if e.Event != "step" || e.Step != "launch" || e.Status != "ok" {
					return
				}
				src := []godo.Resource{{ID: strconv.Itoa(w.srcID), Type: godo.DropletResourceType}}
				d, _, err := gd.Droplets.Get(ctx, w.srcID)
				if err != nil {
					t.Error(err)
					return
				}
				for _, tag := range d.Tags {
					if strings.HasPrefix(tag, "vmswap-claim:") {
						if _, err := gd.Tags.UntagResources(ctx, tag, &godo.UntagResourcesRequest{Resources: src}); err != nil {
							t.Error(err)
						}
					}
				}
				if tc.other {
					if _, _, err := gd.Tags.Create(ctx, &godo.TagCreateRequest{Name: "vmswap-claim:other"}); err != nil {
						t.Error(err)
					}
					if _, err := gd.Tags.TagResources(ctx, "vmswap-claim:other", &godo.TagResourcesRequest{Resources: src}); err != nil {
						t.Error(err)
					}
				}
			})
			if res.ExitCode != tc.code {
				t.Fatalf("exit %d, want %d: %s", res.ExitCode, tc.code, res.Next)
			}
			found := strings.Contains(j.Swaps[0].Error, tc.message)
			for _, e := range w.events {
				found = found || strings.Contains(e.Message, tc.message)
			}
			if !found {
				t.Fatalf("nothing said %q: %s", tc.message, j.Swaps[0].Error)
			}
			m := w.l.Inventory().LBs[0].Droplets
			if tc.other && (len(m) != 1 || m[0] != w.srcID) {
				t.Fatalf("the pool after the rollback: %v, want the source alone", m)
			}
			if !tc.other && (len(m) != 1 || m[0] == w.srcID) {
				t.Fatalf("the pool after the swap: %v, want the new server alone", m)
			}
		})
	}
}

// TestCleanupKeepsALaunchTheJournalNeverSaw: a run killed after its create
// was answered but before the journal recorded the server's ID: the
// server is the interrupted swap's, found again by its launch token when
// the run resumes or rolls back, so cleanup must not delete it. (A fleet
// killed while preparing a wave had cleanup delete such a server.)
func TestCleanupKeepsALaunchTheJournalNeverSaw(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	ctx := context.Background()
	doc := w.plan(w.swap("reserved_ip"))
	j := runner.NewJournal(runner.JournalPath(doc.File), doc, "runorph1")
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	r := w.runner(doc, j, false)
	r.Emit = func(e runner.Event) {
		if e.Event == "step" && e.Step == "launch" && e.Status == "ok" {
			cancel()
		}
	}
	if res := r.Run(rctx); res.Status != runner.StatusInterrupted {
		t.Fatalf("stopped run: %s, exit %d: %s", res.Status, res.ExitCode, res.Next)
	}
	st := j.Swaps[0]
	if st.NewID == "" || st.ImageID == "" || st.Token == "" {
		t.Fatalf("the interrupted swap: %+v", st)
	}
	// As if killed between the create's answer and the journal's write.
	st.NewID, st.NewIP = "", ""
	if err := j.Save(); err != nil {
		t.Fatal(err)
	}
	orphans, err := runner.FindOrphans(ctx, doc, j, w.drivers(doc))
	if err != nil {
		t.Fatal(err)
	}
	if len(orphans) != 0 {
		t.Fatalf("cleanup would delete what the interrupted run is still to finish or undo: %v", orphans)
	}
	// Rolled back, the server is found by its token and deleted.
	if res := w.runner(doc, j, false).Revert(ctx); res.ExitCode != 0 {
		t.Fatalf("rollback: exit %d: %s", res.ExitCode, res.Next)
	}
	if inv := w.l.Inventory(); len(inv.Droplets) != 1 || len(inv.Snapshots) != 0 {
		t.Fatalf("after rollback: %d droplets, snapshots %v", len(inv.Droplets), inv.Snapshots)
	}
}

// TestSwitchBackAfterTheNewServerWasDeleted: after a swap succeeded,
// someone deletes the new server. `vmswap rollback` brings the kept old
// server back where traffic arrives (a pool the deletion emptied, a record
// still pointing at the deleted server, an IP the deletion unassigned),
// says what went with the new server, and touches nothing of it.
func TestSwitchBackAfterTheNewServerWasDeleted(t *testing.T) {
	t.Parallel()
	for _, cutover := range []string{"loadbalancer", "dns", "reserved_ip"} {
		t.Run(cutover, func(t *testing.T) {
			t.Parallel()
			w := newWorld(t)
			ctx := context.Background()
			sw := w.swap(cutover)
			sw.Retire.KeepFor = plans.Duration(time.Hour)
			doc := w.plan(sw)
			res, j := w.run(doc, nil)
			if res.ExitCode != 0 {
				t.Fatalf("exit %d: %s", res.ExitCode, res.Next)
			}
			if _, err := labtest.Godo(t, w.l).Droplets.Delete(ctx, w.newID(j)); err != nil {
				t.Fatal(err)
			}
			var warned atomic.Bool
			r := w.runner(doc, j, false)
			r.Emit = func(e runner.Event) {
				if e.Event == "warning" && strings.Contains(e.Message, "someone deleted it") {
					warned.Store(true)
				}
			}
			began := time.Now()
			rev := r.Revert(ctx)
			took := time.Since(began).Seconds()
			if rev.ExitCode != 0 || rev.Status != runner.StatusReverted {
				t.Fatalf("revert: exit %d, %s: %s", rev.ExitCode, rev.Status, rev.Next)
			}
			// The summary's time is the switch back's, not the swap's, and
			// the swap's warnings (what retiring the source cuts off) are
			// not repeated.
			if len(rev.Swaps) != 1 || rev.Swaps[0].DurationS > took+0.1 || len(rev.Swaps[0].Warnings) > 0 {
				t.Errorf("the switch back took %.1fs; its summary says %+v", took, rev.Swaps)
			}
			if !warned.Load() {
				t.Error("no warning said the new server was gone")
			}
			if !j.Swaps[0].NewGone {
				t.Error("the journal does not say the new server was gone")
			}
			var src *lab.InventoryDroplet
			for _, d := range w.droplets() {
				if d.ID == w.srcID {
					src = &d
				}
			}
			if src == nil || src.Status != "active" || src.Name != "web-1" {
				t.Fatalf("the old server after switching back: %+v", src)
			}
			switch cutover {
			case "loadbalancer":
				if got := w.lbMembers(w.lbID); !slices.Equal(got, []int{w.srcID}) {
					t.Fatalf("pool after switching back: %v", got)
				}
			case "dns":
				w.waitServedA(t, w.srcIP)
			case "reserved_ip":
				got, err := w.drivers(doc)["lab"].IP.AssignedTo(ctx, w.ripIP)
				if err != nil || got != strconv.Itoa(w.srcID) {
					t.Fatalf("reserved IP points at %q (%v)", got, err)
				}
			}
			resp, err := http.Get(w.url(w.srcIP) + "health")
			if err != nil {
				t.Fatalf("the old server does not answer: %v", err)
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("the old server answers %s", resp.Status)
			}
		})
	}
}
