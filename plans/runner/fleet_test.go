package runner_test

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/digitalocean/godo"
	"github.com/vmswap/vmswap/lab"
	"github.com/vmswap/vmswap/lab/labtest"
	"github.com/vmswap/vmswap/loadbalancer"
	"github.com/vmswap/vmswap/plans"
	"github.com/vmswap/vmswap/plans/registry"
	"github.com/vmswap/vmswap/plans/runner"
)

// fleet is the world with n servers web-1..web-n, all tagged web, behind
// its load balancer.
type fleet struct {
	*world
	ids []int
}

func newFleet(t *testing.T, n int) *fleet {
	t.Helper()
	w := newWorld(t)
	f := &fleet{world: w, ids: []int{w.srcID}}
	ctx := context.Background()
	doc := w.plan(w.swap("loadbalancer"))
	lb := w.drivers(doc)["lab"].LB
	for i := 2; i <= n; i++ {
		id, _, err := w.l.Seeder().Droplet(ctx, fmt.Sprintf("web-%d", i), "s-1vcpu-1gb", []int{w.keyID}, site)
		if err != nil {
			t.Fatal(err)
		}
		if err := lb.AddMember(ctx, w.lbID, loadbalancer.Member{ServerID: strconv.Itoa(id)}); err != nil {
			t.Fatal(err)
		}
		f.ids = append(f.ids, id)
	}
	return f
}

// plan is a fleet plan over the tag web, observed as `vmswap plan --tag`
// writes it.
func (f *fleet) plan(st *plans.Strategy, edit func(i int, sw *plans.Swap)) *plans.Document {
	f.t.Helper()
	ep := f.l.Endpoints()
	p := &plans.Plan{Version: 1, ID: "fleet", Providers: map[string]plans.Provider{"lab": {Type: "digitalocean", Endpoint: ep.DigitalOceanAPI, Nameserver: ep.DNS}},
		Fleet: &plans.Fleet{Provider: "lab", Tag: "web"}, Strategy: st}
	for i := range f.ids {
		sw := f.swap("loadbalancer")
		sw.Name = fmt.Sprintf("web-%d", i+1)
		sw.Source.Server = sw.Name
		sw.Probe.Rate = 50
		// vmswap's own known_hosts, keyed by server ID: the lab reuses the
		// addresses of deleted droplets, as clouds do.
		k := *sw.Verify.SSH
		k.KnownHostsFile = ""
		sw.Verify.SSH = &k
		if edit != nil {
			edit(i, &sw)
		}
		p.Swaps = append(p.Swaps, sw)
	}
	if err := runner.ObserveWorld(context.Background(), p, registry.BuildOptions{Getenv: f.getenv}); err != nil {
		f.t.Fatal(err)
	}
	return f.reparse(p)
}

// runner is a runner for doc with the world's journal file, resuming j.
func (f *fleet) runner(doc *plans.Document, j *runner.Journal, cont bool) *runner.Runner {
	if j == nil {
		j = runner.NewJournal(runner.JournalPath(doc.File), doc, "fleet"+strconv.FormatInt(time.Now().UnixNano()%1e6, 10))
	}
	return &runner.Runner{Doc: doc, Drivers: f.drivers(doc), Journal: j, Poll: 50 * time.Millisecond, Continue: cont, Finish: cont, Emit: func(e runner.Event) {
		f.mu.Lock()
		f.events = append(f.events, e)
		f.mu.Unlock()
	}}
}

// pool is the load balancer's members, as name:size.
func (f *fleet) pool() []string {
	names := map[int]string{}
	for _, d := range f.l.Inventory().Droplets {
		names[d.ID] = d.Name + ":" + d.Size
	}
	var out []string
	for _, id := range f.lbMembers(f.lbID) {
		out = append(out, names[id])
	}
	slices.Sort(out)
	return out
}

// waveBegins returns a test of events true once: for the first event of
// wave n, which is its preparation (while the wave before it runs) or, not
// prepared, its start.
func waveBegins(n int) func(runner.Event) bool {
	var seen atomic.Bool
	return func(e runner.Event) bool {
		return e.Event == "wave" && e.Wave == n && (e.Status == "preparing" || e.Status == "started") && seen.CompareAndSwap(false, true)
	}
}

// upgraded counts the pool's members of the target size.
func upgraded(pool []string) int {
	n := 0
	for _, m := range pool {
		if strings.HasSuffix(m, ":s-2vcpu-4gb") {
			n++
		}
	}
	return n
}

// TestFleetCanaryGateAndWaves: five servers, a canary of one and waves of
// two. apply stops after the canary (exit 4) with only web-1 upgraded;
// apply --continue runs the other waves, each wave's swaps at once, every
// event tagged with its wave, no probe request failing, and the pool ends
// with five new servers.
func TestFleetCanaryGateAndWaves(t *testing.T) {
	t.Parallel()
	f := newFleet(t, 5)
	doc := f.plan(&plans.Strategy{MaxParallel: 2, Canary: 1, Gates: []string{"after_canary"}}, nil)
	if m := strings.Join(doc.Plan.Mutations, "\n"); !strings.Contains(m, "fleet: 5 servers tagged web, upgraded in 3 wave(s): a canary of 1 alone, then waves of at most 2, pausing after_canary") {
		t.Fatalf("mutations: %s", m)
	}
	r := f.runner(doc, nil, false)
	res := r.Run(context.Background())
	if res.ExitCode != runner.ExitDecision || !strings.Contains(res.Next, "paused after wave 1 of 3 (upgraded web-1;") || !strings.Contains(res.Next, "apply --continue") {
		t.Fatalf("after the canary: exit %d: %s", res.ExitCode, res.Next)
	}
	if p := f.pool(); upgraded(p) != 1 || len(p) != 5 || !slices.Contains(p, "web-2:s-1vcpu-1gb") || !slices.Contains(p, "web-1:s-2vcpu-4gb") {
		t.Fatalf("pool at the gate: %v", p)
	}
	if len(res.Swaps) != 5 || res.Swaps[1].Status != runner.StatusPending {
		t.Fatalf("the summary lists every server: %+v", res.Swaps)
	}
	// The gate holds: a plain apply refuses, --continue goes on.
	j := r.Journal
	res = f.runner(doc, j, true).Run(context.Background())
	if res.ExitCode != 0 {
		t.Fatalf("apply --continue: exit %d: %s", res.ExitCode, res.Next)
	}
	if p := f.pool(); upgraded(p) != 5 || len(p) != 5 {
		t.Fatalf("pool after the rollout: %v", p)
	}
	failed, total := 0, 0
	for _, s := range res.Swaps {
		failed, total = failed+s.Failed, total+s.Requests
		if s.Status != runner.StatusSucceeded {
			t.Fatalf("swap %s: %s", s.Name, s.Status)
		}
	}
	t.Logf("fleet of 5: %d probe requests, %d failed", total, failed)
	if failed != 0 || total == 0 {
		t.Fatalf("probe: %d of %d failed", failed, total)
	}
	// Waves 2 (web-2, web-3) and 3 (web-4, web-5) ran their swaps at once.
	// Wave 3 was prepared while wave 2 moved traffic (once both of wave
	// 2's new servers were verified), and moved traffic only after wave 2
	// ended.
	step := func(i int, name string) *runner.StepLog { return j.Swaps[i].Steps[name] }
	s1, e1 := step(1, "preflight").Start, step(1, "retire").End
	s2, e2 := step(2, "preflight").Start, step(2, "retire").End
	for _, i := range []int{3, 4} {
		prep, cut := step(i, "preflight").Start, step(i, "catchup").Start
		if prep.Before(step(1, "verify").End) || prep.Before(step(2, "verify").End) || !prep.Before(e1) || !prep.Before(e2) || cut.Before(e1) || cut.Before(e2) {
			t.Fatalf("wave 3's %s: prepared from %v, catchup from %v; wave 2: web-2 verified %v, ended %v; web-3 verified %v, ended %v",
				j.Swaps[i].SourceName, prep, cut, step(1, "verify").End, e1, step(2, "verify").End, e2)
		}
	}
	if !(s2.Before(e1) && s1.Before(e2)) {
		t.Fatalf("wave 2 ran one after the other: web-2 %v..%v, web-3 %v..%v", s1, e1, s2, e2)
	}
	waves := map[string]int{}
	for _, e := range f.events {
		if e.Swap != "" && e.Wave == 0 {
			t.Fatalf("an event without its wave: %+v", e)
		}
		waves[e.Swap] = e.Wave
	}
	if want := map[string]int{"": 3, "web-1": 1, "web-2": 2, "web-3": 2, "web-4": 3, "web-5": 3}; fmt.Sprint(waves) != fmt.Sprint(want) {
		t.Fatalf("events' waves: %v", waves)
	}
}

// TestFleetWaveFailure: waves of two; the first new server of wave 2
// answers 500, so its swap fails verify. With rollback_wave its wave-mate
// rolls back too; with finish_wave it finishes. No further wave starts
// either way, the summary says which server is where, and apply, run
// again once the cause is gone, upgrades the rest without touching what
// is done.
func TestFleetWaveFailure(t *testing.T) {
	for _, mode := range []string{"rollback_wave", "finish_wave"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			f := newFleet(t, 6)
			doc := f.plan(&plans.Strategy{MaxParallel: 2, OnFailure: mode}, func(i int, sw *plans.Swap) {
				sw.Observe = plans.Duration(3 * time.Second) // the wave-mate is still running when the other fails
			})
			r := f.runner(doc, nil, false)
			emit, begins := r.Emit, waveBegins(2)
			r.Emit = func(e runner.Event) {
				if begins(e) {
					if err := f.l.Inject(lab.Fault{Kind: lab.FaultServe500}); err != nil {
						t.Error(err)
					}
				}
				emit(e)
			}
			res := r.Run(context.Background())
			if res.ExitCode != runner.ExitRolledBack {
				t.Fatalf("exit %d: %s", res.ExitCode, res.Next)
			}
			up, back := 2, 2
			if mode == "finish_wave" {
				up, back = 3, 1
			}
			var gotUp, gotBack []string
			for _, s := range res.Swaps {
				switch s.Status {
				case runner.StatusSucceeded:
					gotUp = append(gotUp, s.Name)
				case runner.StatusRolledBack:
					gotBack = append(gotBack, s.Name)
				}
			}
			if len(gotUp) != up || len(gotBack) != back || !slices.Contains(gotUp, "web-1") || !slices.Contains(gotUp, "web-2") || slices.Contains(gotUp, "web-5") {
				for _, s := range res.Swaps {
					t.Logf("%s: %s: %s", s.Name, s.Status, s.Error)
				}
				t.Fatalf("upgraded %v, rolled back %v; want %d and %d", gotUp, gotBack, up, back)
			}
			for _, want := range []string{"wave 2 of 3 did not finish; no further wave started.", "upgraded: " + strings.Join(gotUp, ", ") + "\n", "back on the old size: " + strings.Join(gotBack, ", ") + "\n", "not started: web-5, web-6", "upgrades the rest"} {
				if !strings.Contains(res.Next, want) {
					t.Fatalf("the summary lacks %q:\n%s", want, res.Next)
				}
			}
			p := f.pool()
			if upgraded(p) != up || len(p) != 6 || !slices.Contains(p, "web-5:s-1vcpu-1gb") || !slices.Contains(p, "web-6:s-1vcpu-1gb") {
				t.Fatalf("pool after the failed wave: %v", p)
			}
			if n := len(f.l.Inventory().Droplets); n != 6+up {
				t.Fatalf("droplets after the failed wave: %d, want %d (nothing of a rolled-back swap is left)", n, 6+up)
			}
			// The fault is gone: apply again finishes the fleet.
			j := runner.NextRun(r.Journal, runner.JournalPath(doc.File), doc, "again1")
			res = f.runner(doc, j, false).Run(context.Background())
			if res.ExitCode != 0 {
				t.Fatalf("the second apply: exit %d: %s", res.ExitCode, res.Next)
			}
			if p := f.pool(); upgraded(p) != 6 || len(p) != 6 {
				t.Fatalf("pool after the second apply: %v", p)
			}
		})
	}
}

// TestFleetStale: a server that joined the tag after the plan was written
// makes apply refuse the plan, naming it, before anything changes.
func TestFleetStale(t *testing.T) {
	t.Parallel()
	f := newFleet(t, 2)
	doc := f.plan(&plans.Strategy{MaxParallel: 2}, nil)
	if _, _, err := f.l.Seeder().Droplet(context.Background(), "web-9", "s-1vcpu-1gb", nil, nil); err != nil {
		t.Fatal(err)
	}
	before := len(f.l.Inventory().Droplets)
	res := f.runner(doc, nil, false).Run(context.Background())
	if res.ExitCode != runner.ExitBadInput || !strings.Contains(res.Next, "web-9") || !strings.Contains(res.Next, "joined the tag web") || !strings.Contains(res.Next, "plan --refresh") {
		t.Fatalf("exit %d: %s", res.ExitCode, res.Next)
	}
	if n := len(f.l.Inventory().Droplets); n != before {
		t.Fatalf("a refused fleet plan changed something: %d droplets, %d before", n, before)
	}
}

// TestFleetLaterWaveRefused: wave 1 upgrades web-1; web-2, powered off
// meanwhile, is refused in wave 2's preflight. The run is not "refused,
// nothing changed": it needs attention, and rollback switches web-1 back.
func TestFleetLaterWaveRefused(t *testing.T) {
	t.Parallel()
	f := newFleet(t, 2)
	// Wave 2 prepared in its wave: powered off while wave 1 is observed,
	// web-2 would fail wave 1's probe through the pool.
	doc := f.plan(&plans.Strategy{MaxParallel: 1, Prepare: "in_wave"}, nil)
	r := f.runner(doc, nil, false)
	emit, begins := r.Emit, waveBegins(2)
	r.Emit = func(e runner.Event) {
		if begins(e) {
			if err := f.drivers(doc)["lab"].Compute.PowerOff(context.Background(), strconv.Itoa(f.ids[1]), 5*time.Second); err != nil {
				t.Error(err)
			}
		}
		emit(e)
	}
	res := r.Run(context.Background())
	if res.ExitCode != runner.ExitAttention || res.Status != runner.StatusNeedsAttention || !strings.Contains(res.Next, "What this run did before stays") {
		t.Fatalf("exit %d %s: %s", res.ExitCode, res.Status, res.Next)
	}
	if r.Journal.Status != runner.StatusNeedsAttention {
		t.Fatalf("journal: %s", r.Journal.Status)
	}
	if d := runner.Decide(runner.CmdRollback, r.Journal, false, doc.File); d.Action != runner.ActUndo {
		t.Fatalf("rollback would %s: %s", d.Action, d.Why)
	}
	rev := f.runner(doc, r.Journal, false).Revert(context.Background())
	if rev.ExitCode != 0 {
		t.Fatalf("rollback: exit %d: %s", rev.ExitCode, rev.Next)
	}
	if p := f.pool(); upgraded(p) != 0 || !slices.Contains(p, "web-1:s-1vcpu-1gb") {
		t.Fatalf("pool after the rollback: %v", p)
	}
}

// TestFleetMemberLeavesTheTag: a server taken out of the fleet's tag while
// the run is under way is left out: its swap is refused at its start (the
// wave's own list of the tag no longer names it), nothing is made for it,
// a warning says why, and the rest of the fleet is upgraded: the run
// succeeds, and applying it again has nothing to do.
func TestFleetMemberLeavesTheTag(t *testing.T) {
	t.Parallel()
	f := newFleet(t, 3)
	doc := f.plan(&plans.Strategy{MaxParallel: 2, Canary: 1}, nil)
	r := f.runner(doc, nil, false)
	emit, begins := r.Emit, waveBegins(2)
	r.Emit = func(e runner.Event) {
		if begins(e) {
			res := []godo.Resource{{ID: strconv.Itoa(f.ids[1]), Type: godo.DropletResourceType}}
			if _, err := labtest.Godo(t, f.l).Tags.UntagResources(context.Background(), "web", &godo.UntagResourcesRequest{Resources: res}); err != nil {
				t.Error(err)
			}
		}
		emit(e)
	}
	before := len(f.l.Inventory().Droplets)
	res := r.Run(context.Background())
	if res.ExitCode != 0 || res.Swaps[1].Status != runner.StatusRefused || !strings.Contains(res.Swaps[1].Error, "web-2 left the tag web since the plan was written: it is left out") {
		t.Fatalf("exit %d %s: %s\nweb-2: %s %q", res.ExitCode, res.Status, res.Next, res.Swaps[1].Status, res.Swaps[1].Error)
	}
	warned := false
	for _, e := range f.events {
		warned = warned || e.Event == "warning" && e.Swap == "web-2" && strings.Contains(e.Message, "left the tag web")
	}
	if !warned {
		t.Fatal("no warning named web-2")
	}
	if p := f.pool(); upgraded(p) != 2 || !slices.Contains(p, "web-2:s-1vcpu-1gb") {
		t.Fatalf("pool: %v, want web-1 and web-3 upgraded and web-2 as it was", p)
	}
	if n := len(f.l.Inventory().Droplets); n != before+2 {
		t.Fatalf("%d droplets, want %d: web-1's and web-3's new servers", n, before+2)
	}
	if d := runner.Decide(runner.CmdApply, r.Journal, false, doc.File); d.Action != runner.ActNothing {
		t.Fatalf("apply again would %s: %s", d.Action, d.Why)
	}
}

// TestFleetCanaryLeavesTheTag: the canary's server is taken out of the
// fleet's tag as the run starts. It is left out, and since no canary ran
// no wave starts: refused, nothing changed, the plan to be refreshed.
func TestFleetCanaryLeavesTheTag(t *testing.T) {
	t.Parallel()
	f := newFleet(t, 3)
	doc := f.plan(&plans.Strategy{MaxParallel: 2, Canary: 1}, nil)
	r := f.runner(doc, nil, false)
	emit := r.Emit
	r.Emit = func(e runner.Event) {
		if e.Event == "wave" && e.Wave == 1 && e.Status == "started" {
			res := []godo.Resource{{ID: strconv.Itoa(f.ids[0]), Type: godo.DropletResourceType}}
			if _, err := labtest.Godo(t, f.l).Tags.UntagResources(context.Background(), "web", &godo.UntagResourcesRequest{Resources: res}); err != nil {
				t.Error(err)
			}
		}
		emit(e)
	}
	before := len(f.l.Inventory().Droplets)
	res := r.Run(context.Background())
	if res.ExitCode != runner.ExitBadInput || res.Status != runner.StatusRefused || !strings.Contains(res.Next, "no canary ran: web-1 left the tag web") {
		t.Fatalf("exit %d %s: %s", res.ExitCode, res.Status, res.Next)
	}
	for i, sw := range res.Swaps {
		if want := map[bool]runner.State{true: runner.StatusRefused, false: runner.StatusPending}[i == 0]; sw.Status != want {
			t.Fatalf("swap %d is %s, want %s", i, sw.Status, want)
		}
	}
	if p := f.pool(); upgraded(p) != 0 {
		t.Fatalf("pool: %v, want nothing upgraded", p)
	}
	if n := len(f.l.Inventory().Droplets); n != before {
		t.Fatalf("%d droplets, want %d: nothing made", n, before)
	}
}

// TestFleetInterruptKeepsTheOthersClaims interrupts a wave after one of its
// swaps succeeded while the other still observes: the run's claim tag must
// stay on the unfinished swap's servers (deleting the tag once the first
// swap had released would have released them too, letting another plan
// take a server mid-swap).
func TestFleetInterruptKeepsTheOthersClaims(t *testing.T) {
	f := newFleet(t, 2)
	doc := f.plan(&plans.Strategy{MaxParallel: 2}, func(i int, sw *plans.Swap) {
		sw.Observe = plans.Duration(time.Duration(1+8*i) * time.Second)
	})
	r := f.runner(doc, nil, false)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	emit := r.Emit
	r.Emit = func(e runner.Event) {
		emit(e)
		if e.Event == "swap" && e.Swap == "web-1" && e.Status == string(runner.StatusSucceeded) {
			cancel()
		}
	}
	res := r.Run(ctx)
	if res.ExitCode == 0 {
		t.Fatalf("exit 0 after an interrupt: %s", res.Next)
	}
	claim := "vmswap-claim:" + r.Journal.RunID
	held := 0
	for _, d := range f.l.Inventory().Droplets {
		if slices.Contains(d.Tags, claim) {
			held++
			if !strings.HasPrefix(d.Name, "web-2") {
				t.Fatalf("%s still carries %s", d.Name, claim)
			}
		}
	}
	if held != 2 {
		t.Fatalf("%d servers carry the claim %s after the interrupt; want web-2 and its new server", held, claim)
	}
}

// TestFleetPreparedWaveRolledBackWithTheWaveBefore: wave 2 is prepared
// (snapshot, launch, verify) while wave 1 is observed; wave 1's new server
// then breaks. Wave 1 rolls back, and so does what was prepared for wave
// 2: nothing of either is left, wave 3 never starts, and the summary says
// where each server is.
func TestFleetPreparedWaveRolledBackWithTheWaveBefore(t *testing.T) {
	t.Parallel()
	f := newFleet(t, 3)
	doc := f.plan(&plans.Strategy{MaxParallel: 1}, func(i int, sw *plans.Swap) {
		sw.Observe = plans.Duration(4 * time.Second)
	})
	before := len(f.l.Inventory().Droplets)
	r := f.runner(doc, nil, false)
	emit := r.Emit
	var prepared atomic.Bool
	r.Emit = func(e runner.Event) {
		if e.Event == "step" && e.Swap == "web-2" && e.Step == "verify" && e.Status == "ok" && prepared.CompareAndSwap(false, true) {
			for _, d := range f.droplets() {
				if strings.HasPrefix(d.Name, "web-1-") {
					f.l.BreakDroplet(d.ID, lab.FaultServe500)
				}
			}
		}
		emit(e)
	}
	res := r.Run(context.Background())
	if !prepared.Load() {
		t.Fatal("wave 2 was not prepared while wave 1 ran")
	}
	if res.ExitCode != runner.ExitRolledBack || !strings.Contains(res.Next, "back on the old size: web-1, web-2\n") || !strings.Contains(res.Next, "not started: web-3") {
		t.Fatalf("exit %d: %s", res.ExitCode, res.Next)
	}
	if s := res.Swaps[1]; s.Status != runner.StatusRolledBack || !strings.Contains(s.Error, "wave 1, run while this one was prepared, did not finish") {
		t.Fatalf("web-2: %s: %s", s.Status, s.Error)
	}
	if p := f.pool(); upgraded(p) != 0 || len(p) != 3 {
		t.Fatalf("pool: %v", p)
	}
	if inv := f.l.Inventory(); len(inv.Droplets) != before || len(inv.Snapshots) != 0 {
		t.Fatalf("left behind: %d droplets (want %d), snapshots %v", len(inv.Droplets), before, inv.Snapshots)
	}
}

// TestFleetPreparedSourcePoweredOff: web-2, prepared while wave 1 ran, is
// powered off by someone before its wave moves traffic. The cutover reads
// it once more and does not move traffic to or from it: rolled back, its
// new server deleted, web-1 stays upgraded.
func TestFleetPreparedSourcePoweredOff(t *testing.T) {
	t.Parallel()
	f := newFleet(t, 2)
	doc := f.plan(&plans.Strategy{MaxParallel: 1}, nil)
	before := len(f.l.Inventory().Droplets)
	r := f.runner(doc, nil, false)
	emit := r.Emit
	r.Emit = func(e runner.Event) {
		if e.Event == "wave" && e.Wave == 2 && e.Status == "started" {
			if !slices.Contains(r.Journal.Swaps[1].Done, "verify") {
				t.Errorf("wave 2 starts unprepared: %v", r.Journal.Swaps[1].Done)
			}
			if err := f.drivers(doc)["lab"].Compute.PowerOff(context.Background(), strconv.Itoa(f.ids[1]), 5*time.Second); err != nil {
				t.Error(err)
			}
		}
		emit(e)
	}
	res := r.Run(context.Background())
	if res.ExitCode != runner.ExitRolledBack || res.Swaps[0].Status != runner.StatusSucceeded || res.Swaps[1].Status != runner.StatusRolledBack || !strings.Contains(res.Swaps[1].Error, "web-2 is off, not running as it was at preflight") {
		t.Fatalf("exit %d: %s\nweb-2: %s %s", res.ExitCode, res.Next, res.Swaps[1].Status, res.Swaps[1].Error)
	}
	if n := len(f.l.Inventory().Droplets); n != before+1 {
		t.Fatalf("%d droplets, want %d: web-1's new server alone", n, before+1)
	}
	if p := f.pool(); upgraded(p) != 1 || !slices.Contains(p, "web-2:s-1vcpu-1gb") {
		t.Fatalf("pool: %v", p)
	}
}

// TestFleetInterruptedWhilePreparing: the run is stopped while wave 2 is
// being prepared and wave 1 moves traffic. Both are left interrupted; the
// next apply goes on from where each stopped and upgrades the fleet with
// exactly one new server per source.
func TestFleetInterruptedWhilePreparing(t *testing.T) {
	t.Parallel()
	f := newFleet(t, 3)
	doc := f.plan(&plans.Strategy{MaxParallel: 1}, nil)
	r := f.runner(doc, nil, false)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	emit := r.Emit
	r.Emit = func(e runner.Event) {
		if e.Event == "step" && e.Swap == "web-2" && e.Step == "launch" && e.Status == "started" {
			cancel()
		}
		emit(e)
	}
	res := r.Run(ctx)
	if res.Status != runner.StatusInterrupted || res.Swaps[1].Status != runner.StatusInterrupted {
		t.Fatalf("stopped run: %s, web-2 %s: %s", res.Status, res.Swaps[1].Status, res.Next)
	}
	res = f.runner(doc, r.Journal, false).Run(context.Background())
	if res.ExitCode != 0 {
		t.Fatalf("resumed: exit %d: %s", res.ExitCode, res.Next)
	}
	bigger := 0
	for _, d := range f.droplets() {
		if d.Size == "s-2vcpu-4gb" {
			bigger++
		}
	}
	if p := f.pool(); upgraded(p) != 3 || len(p) != 3 || bigger != 3 {
		t.Fatalf("pool %v, %d new servers (want 3)", p, bigger)
	}
}

// TestFleetRollbackCheckedWhole: a finished fleet run whose first server a
// later run has claimed, or whose pool someone changed so that it holds
// neither of a swap's servers, is not switched back at all: refused up
// front, nothing changed (it switched the other servers back before
// refusing).
func TestFleetRollbackCheckedWhole(t *testing.T) {
	t.Run("claimed by a later run", func(t *testing.T) { fleetRollbackRefused(t, true) })
	t.Run("new server taken out of the pool", func(t *testing.T) { fleetRollbackRefused(t, false) })
}

func fleetRollbackRefused(t *testing.T, claimed bool) {
	t.Parallel()
	f := newFleet(t, 3)
	doc := f.plan(&plans.Strategy{MaxParallel: 2}, func(i int, sw *plans.Swap) {
		sw.Retire.KeepFor = plans.Duration(time.Hour)
	})
	r := f.runner(doc, nil, false)
	if res := r.Run(context.Background()); res.ExitCode != 0 {
		t.Fatalf("apply: exit %d: %s", res.ExitCode, res.Next)
	}
	gd := labtest.Godo(t, f.l)
	ctx := context.Background()
	newID, _ := strconv.Atoi(r.Journal.Swaps[0].NewID)
	want := "run later"
	if claimed {
		if _, _, err := gd.Tags.Create(ctx, &godo.TagCreateRequest{Name: "vmswap-claim:later"}); err != nil {
			t.Fatal(err)
		}
		if _, err := gd.Tags.TagResources(ctx, "vmswap-claim:later", &godo.TagResourcesRequest{Resources: []godo.Resource{{ID: strconv.Itoa(newID), Type: godo.DropletResourceType}}}); err != nil {
			t.Fatal(err)
		}
	} else {
		if _, err := gd.LoadBalancers.RemoveDroplets(ctx, f.lbID, newID); err != nil {
			t.Fatal(err)
		}
		want = "has neither web-1 nor the new server"
	}
	before := f.l.Inventory()
	rev := f.runner(doc, r.Journal, false).Revert(ctx)
	if rev.ExitCode != runner.ExitBadInput || !strings.Contains(rev.Next, "nothing was changed") || !strings.Contains(rev.Next, want) || r.Journal.Status != runner.StatusSucceeded {
		t.Fatalf("rollback: exit %d %s: %s", rev.ExitCode, r.Journal.Status, rev.Next)
	}
	after := f.l.Inventory()
	if fmt.Sprint(after.Droplets) != fmt.Sprint(before.Droplets) || fmt.Sprint(after.LBs) != fmt.Sprint(before.LBs) {
		t.Fatalf("a refused rollback changed the world:\nbefore %+v\nafter  %+v", before, after)
	}
}
