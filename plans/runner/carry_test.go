package runner_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmswap/vmswap/lab"
	"github.com/vmswap/vmswap/plans"
	"github.com/vmswap/vmswap/plans/runner"
	"github.com/vmswap/vmswap/verify/probe"
)

// carried are the lab app's paths: uploads under the web root, sessions.
var carried = []string{"/var/www/html/uploads", "/var/lib/app/sessions"}

// carrySwap is a swap that carries the lab app's uploads and sessions, with
// the probe writing too.
func (w *world) carrySwap(cutover string) plans.Swap {
	sw := w.swap(cutover)
	sw.Carry = &plans.Carry{Paths: carried, Exclude: []string{"*.tmp"}}
	sw.Probe.Writes = true
	sw.Observe = plans.Duration(2 * time.Second)
	return sw
}

// users writes through the swap's entry point for the whole test, as the
// site's users would, from before the snapshot to after the retire.
func (w *world) users(sw plans.Swap) *probe.Writer {
	wr := probe.StartWriter(probe.Config{URL: sw.Probe.URL, Resolver: sw.Probe.Resolver}, 150*time.Millisecond)
	w.t.Cleanup(wr.Stop)
	return wr
}

func checkNothingLost(t *testing.T, wr *probe.Writer) probe.Writes {
	t.Helper()
	wr.Stop()
	got := wr.Check(context.Background())
	t.Logf("users: %s", got)
	if got.LostUploads+got.LostSessions != 0 || got.Uploads < 5 || got.Sessions < 5 {
		t.Fatalf("users' writes: %+v", got)
	}
	return got
}

func (w *world) newID(j *runner.Journal) int {
	id, _ := strconv.Atoi(j.Swaps[0].NewID)
	return id
}

// TestCarryKeepsWhatUsersWrite: uploads and logins made through the load
// balancer and through DNS while the swap runs, from before the snapshot to
// after the retire, are all on the new server afterwards.
func TestCarryKeepsWhatUsersWrite(t *testing.T) {
	for _, cut := range []string{"loadbalancer", "dns"} {
		t.Run(cut, func(t *testing.T) {
			t.Parallel()
			w := newWorld(t)
			sw := w.carrySwap(cut)
			users := w.users(sw)
			time.Sleep(300 * time.Millisecond)
			res, j := w.run(w.plan(sw), nil)
			if res.ExitCode != 0 {
				t.Fatalf("exit %d: %s (%s)", res.ExitCode, res.Next, j.Swaps[0].Error)
			}
			checkNothingLost(t, users)
			st := j.Swaps[0]
			if len(st.Passes) != 2 || st.Passes[0].Name != "catch-up" || st.Passes[1].Name != "final" || st.Passes[0].Res.Copied == 0 {
				t.Fatalf("passes: %+v", st.Passes)
			}
			if pw := st.Probe.Writes; pw == nil || pw.Uploads == 0 || pw.LostUploads+pw.LostSessions != 0 {
				t.Fatalf("the probe's writes: %+v", pw)
			}
			if st.Divergence == nil || st.Divergence.Count != 0 {
				t.Fatalf("divergence: %+v", st.Divergence)
			}
			for _, p := range st.Passes {
				t.Logf("%s pass: %d copied (%d bytes), %d deleted, %d conflicts, %d scanned, %s", p.Name, p.Res.Copied, p.Res.Bytes, p.Res.Deleted, len(p.Res.Conflicts), p.Res.Scanned, p.Res.Duration)
			}
		})
	}
}

// TestWithoutCarryTheDivergenceReportCatchesIt: the same users, no carried
// paths, on_found: stop. The run pauses before retiring the old server
// (exit 4), which still runs, and lists what it wrote; the users' writes
// are indeed missing on the new server. apply --continue then finishes.
func TestWithoutCarryTheDivergenceReportCatchesIt(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	sw := w.swap("loadbalancer")
	sw.Divergence = &plans.Divergence{OnFound: "stop"}
	users := w.users(sw)
	time.Sleep(300 * time.Millisecond)
	doc := w.plan(sw)
	res, j := w.run(doc, nil)
	if res.ExitCode != runner.ExitDecision || res.Status != runner.StatusPaused || !strings.Contains(res.Next, "apply --continue") {
		t.Fatalf("exit %d %s: %s", res.ExitCode, res.Status, res.Next)
	}
	d := j.Swaps[0].Divergence
	if d == nil || d.Count == 0 || len(d.Files) == 0 {
		t.Fatalf("divergence: %+v", d)
	}
	for _, f := range d.Files {
		if !strings.HasPrefix(f.Path, "/var/www/html/uploads/") && !strings.HasPrefix(f.Path, "/var/lib/app/sessions/") {
			t.Fatalf("divergence lists %s, which the app did not write", f.Path)
		}
	}
	for _, dr := range w.droplets() {
		if dr.ID == w.srcID && dr.Status != "active" {
			t.Fatalf("paused, but the old server is %s", dr.Status)
		}
	}
	users.Stop()
	if got := users.Check(context.Background()); got.LostUploads == 0 {
		t.Fatalf("without carry, the writes made after the snapshot should be missing on the new server: %+v", got)
	}
	r := w.runner(doc, j, true)
	if res := r.Run(context.Background()); res.ExitCode != 0 {
		t.Fatalf("apply --continue: exit %d: %s", res.ExitCode, res.Next)
	}
	for _, dr := range w.droplets() {
		if dr.ID == w.srcID && dr.Status != "off" {
			t.Fatalf("after --continue the old server is %s", dr.Status)
		}
	}
}

// conflictAfterCatchUp writes report.pdf on the source before the run, and
// differently on both servers once the catch-up pass has copied it: the
// final pass finds a conflict.
func (w *world) conflictAfterCatchUp() func(runner.Event) {
	w.l.WriteFile(w.srcID, "var/www/html/uploads/report.pdf", "version 0")
	var once sync.Once
	return func(e runner.Event) {
		if e.Event == "carry" && e.Step == "catch-up" {
			once.Do(func() {
				time.Sleep(1100 * time.Millisecond) // a later second than the pass saw
				w.l.WriteFile(w.srcID, "var/www/html/uploads/report.pdf", "edited on old")
				for _, d := range w.droplets() {
					if d.ID != w.srcID {
						w.l.WriteFile(d.ID, "var/www/html/uploads/report.pdf", "edited on the new server")
					}
				}
			})
		}
	}
}

// TestCarryConflictOverwritesNothing: a file changed on both servers after
// the catch-up pass is reported, and each keeps its own copy.
func TestCarryConflictOverwritesNothing(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	sw := w.carrySwap("loadbalancer")
	sw.Probe.Writes = false
	res, j := w.run(w.plan(sw), w.conflictAfterCatchUp())
	if res.ExitCode != 0 {
		t.Fatalf("exit %d: %s", res.ExitCode, res.Next)
	}
	st := j.Swaps[0]
	final := st.Passes[len(st.Passes)-1]
	if final.Name != "final" || len(final.Res.Conflicts) != 1 || final.Res.Conflicts[0].Path != "/var/www/html/uploads/report.pdf" {
		t.Fatalf("final pass: %+v", final.Res)
	}
	if !strings.Contains(strings.Join(res.Swaps[0].Warnings, "\n"), "carry conflict at /var/www/html/uploads/report.pdf") {
		t.Fatalf("warnings: %q", res.Swaps[0].Warnings)
	}
	if got, _ := w.l.ReadFile(w.newID(j), "var/www/html/uploads/report.pdf"); got != "edited on the new server" {
		t.Fatalf("new server's copy: %q", got)
	}
	if got, _ := w.l.ReadFile(w.srcID, "var/www/html/uploads/report.pdf"); got != "edited on old" {
		t.Fatalf("old server's copy: %q", got)
	}
}

// TestRollbackCarriesBack: after a swap, users write on the new server;
// `vmswap rollback` switches back and what they wrote is on the old one.
func TestRollbackCarriesBack(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	sw := w.carrySwap("loadbalancer")
	sw.Probe.Writes = false
	sw.Retire.KeepFor = plans.Duration(time.Hour)
	doc := w.plan(sw)
	res, j := w.run(doc, nil)
	if res.ExitCode != 0 {
		t.Fatalf("swap: %s", res.Next)
	}
	users := w.users(sw)
	time.Sleep(time.Second)
	r := w.runner(doc, j, false)
	rev := r.Revert(context.Background())
	if rev.ExitCode != 0 {
		t.Fatalf("rollback: exit %d: %s", rev.ExitCode, rev.Next)
	}
	checkNothingLost(t, users)
	names := []string{}
	for _, p := range j.Swaps[0].Passes {
		names = append(names, p.Name)
	}
	if fmt.Sprint(names) != "[catch-up final carry-back carry-back final]" {
		t.Fatalf("passes: %v", names)
	}
}

// TestRollbackDuringARunCarriesBack: the error budget breaks during
// observe; the rollback carries back what users wrote on the new server.
func TestRollbackDuringARunCarriesBack(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	sw := w.carrySwap("loadbalancer")
	sw.Probe.Writes = false
	sw.Observe = plans.Duration(3 * time.Second)
	sw.Probe.ErrorBudget = plans.Budget{Count: 1}
	users := w.users(sw)
	var once sync.Once
	res, _ := w.run(w.plan(sw), func(e runner.Event) {
		if e.Event == "step" && e.Step == "observe" && e.Status == "started" {
			once.Do(func() {
				go func() {
					time.Sleep(time.Second) // users write on the new server first
					for _, d := range w.droplets() {
						if d.ID != w.srcID {
							w.l.BreakDroplet(d.ID, lab.FaultServe500)
						}
					}
				}()
			})
		}
	})
	if res.ExitCode != runner.ExitRolledBack {
		t.Fatalf("exit %d: %s", res.ExitCode, res.Next)
	}
	checkNothingLost(t, users)
}

// TestHooks: hooks run where and when the plan says; a failing hook before
// the cutover rolls back, one after it stops the run with traffic on the
// new server (exit 3) and says what ran.
func TestHooks(t *testing.T) {
	t.Run("order", func(t *testing.T) {
		t.Parallel()
		w := newWorld(t)
		sw := w.swap("reserved_ip")
		sw.Hooks = &plans.Hooks{
			BeforeSnapshot: []plans.Hook{{On: "source", Run: "touch /var/lib/app/flushed"}},
			AfterSnapshot:  []plans.Hook{{On: "source", Run: "echo resumed writers"}},
			BeforeCutover:  []plans.Hook{{On: "new", Run: "echo warm cache"}},
			AfterCutover:   []plans.Hook{{On: "new", Run: "true"}},
			BeforeRetire:   []plans.Hook{{On: "source", Run: "sleep 0.1"}},
		}
		res, j := w.run(w.plan(sw), nil)
		if res.ExitCode != 0 {
			t.Fatalf("exit %d: %s", res.ExitCode, res.Next)
		}
		var got []string
		for _, h := range j.Swaps[0].Hooks {
			got = append(got, fmt.Sprintf("%s/%s/%v/%s", h.Phase, h.On, h.OK, strings.Join(h.Tail, "|")))
		}
		want := "[before_snapshot/source/true/ after_snapshot/source/true/resumed writers before_cutover/new/true/warm cache after_cutover/new/true/ before_retire/source/true/]"
		if fmt.Sprint(got) != want {
			t.Fatalf("hooks ran %v\nwant %s", got, want)
		}
		// The file the first hook touched is in the image, so on the new server.
		if _, err := w.l.ReadFile(w.newID(j), "var/lib/app/flushed"); err != nil {
			t.Fatalf("before_snapshot ran after the image was taken: %v", err)
		}
	})
	t.Run("before cutover fails", func(t *testing.T) {
		t.Parallel()
		w := newWorld(t)
		sw := w.swap("reserved_ip")
		sw.Hooks = &plans.Hooks{BeforeCutover: []plans.Hook{{On: "new", Run: "false"}}}
		res, j := w.run(w.plan(sw), nil)
		if res.ExitCode != runner.ExitRolledBack || !strings.Contains(res.Next, `hook before_cutover`) || !strings.Contains(res.Next, "exit status 1") {
			t.Fatalf("exit %d: %s", res.ExitCode, res.Next)
		}
		if n := len(w.droplets()); n != 1 || w.l.Inventory().ReservedIPs[w.ripIP] != w.srcID {
			t.Fatalf("after the rollback: %d droplets, reserved IP on %d", n, w.l.Inventory().ReservedIPs[w.ripIP])
		}
		if h := j.Swaps[0].Hooks; len(h) != 1 || h[0].OK {
			t.Fatalf("journal hooks: %+v", h)
		}
	})
	t.Run("after cutover fails", func(t *testing.T) {
		t.Parallel()
		w := newWorld(t)
		sw := w.swap("reserved_ip")
		sw.Hooks = &plans.Hooks{AfterCutover: []plans.Hook{{On: "new", Run: "false"}}}
		res, j := w.run(w.plan(sw), nil)
		if res.ExitCode != runner.ExitAttention || !strings.Contains(res.Next, "traffic is on "+j.Swaps[0].NewName+" and stays there") || !strings.Contains(res.Next, `"false"`) {
			t.Fatalf("exit %d: %s", res.ExitCode, res.Next)
		}
		if on := w.l.Inventory().ReservedIPs[w.ripIP]; on != w.newID(j) {
			t.Fatalf("the reserved IP is on %d, want the new server %d", on, w.newID(j))
		}
	})
}

// pausedRun runs a carrying swap that pauses before retire: the source
// wrote a file outside the carried paths after its snapshot.
func (w *world) pausedRun(t *testing.T, sw plans.Swap) (*plans.Document, *runner.Journal) {
	t.Helper()
	sw.Divergence = &plans.Divergence{OnFound: "stop"}
	sw.Hooks = &plans.Hooks{AfterSnapshot: []plans.Hook{{On: "source", Run: "touch /etc/app.conf"}}}
	doc := w.plan(sw)
	res, j := w.run(doc, nil)
	if res.ExitCode != runner.ExitDecision || j.Swaps[0].Status != runner.StatusPaused {
		t.Fatalf("exit %d %s: %s", res.ExitCode, j.Swaps[0].Status, res.Next)
	}
	if d := j.Swaps[0].Divergence; d == nil || d.Count != 1 || d.Files[0].Path != "/etc/app.conf" {
		t.Fatalf("divergence: %+v", d)
	}
	return doc, j
}

func put(t *testing.T, url, body string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPut, url, strings.NewReader(body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("PUT %s: %v %v", url, resp, err)
	}
	resp.Body.Close()
}

// TestRollbackOfAPausedRun: a run paused before retire is switched back by
// `vmswap rollback`: what users wrote on the new server meanwhile is
// carried back, traffic returns to the source, the new server is deleted.
func TestRollbackOfAPausedRun(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	sw := w.carrySwap("loadbalancer")
	sw.Probe.Writes = false
	doc, j := w.pausedRun(t, sw)
	users := w.users(sw)
	time.Sleep(time.Second)
	r := w.runner(doc, j, false)
	rev := r.Revert(context.Background())
	if rev.ExitCode != 0 || rev.Status != runner.StatusReverted || j.Swaps[0].Status != runner.StatusRolledBack {
		t.Fatalf("rollback of a paused run: exit %d %s, swap %s: %s", rev.ExitCode, rev.Status, j.Swaps[0].Status, rev.Next)
	}
	checkNothingLost(t, users)
	inv := w.l.Inventory()
	if len(inv.Droplets) != 1 || inv.LBs[0].Droplets[0] != w.srcID || inv.Droplets[0].Name != "web-1" {
		t.Fatalf("after the rollback: %+v", inv)
	}
}

// TestContinueCarriesWhatCameMeanwhile: after a pause, a write that still
// reached the old server (a client on a stale address) is carried by
// apply --continue before the old server is retired.
func TestContinueCarriesWhatCameMeanwhile(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	sw := w.carrySwap("loadbalancer")
	sw.Probe.Writes = false
	doc, j := w.pausedRun(t, sw)
	put(t, w.url(w.srcIP)+"uploads/late.txt", "written during the pause")
	r := w.runner(doc, j, true)
	if res := r.Run(context.Background()); res.ExitCode != 0 {
		t.Fatalf("apply --continue: exit %d: %s", res.ExitCode, res.Next)
	}
	if got, _ := w.l.ReadFile(w.newID(j), "var/www/html/uploads/late.txt"); got != "written during the pause" {
		t.Fatalf("the write made during the pause, on the new server: %q", got)
	}
	last := j.Swaps[0].Passes[len(j.Swaps[0].Passes)-1]
	if last.Name != "final, after the pause" || last.Res.Copied != 1 {
		t.Fatalf("passes: %+v", j.Swaps[0].Passes)
	}
}

// TestDeleteKeepsTheOnlyCopy: with retire: delete, a carry conflict pauses
// the run before the delete (exit 4), the old server kept; --continue
// deletes it.
func TestDeleteKeepsTheOnlyCopy(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	sw := w.carrySwap("loadbalancer")
	sw.Probe.Writes = false
	sw.Retire = plans.Retire{Action: "delete"}
	doc := w.plan(sw)
	res, j := w.run(doc, w.conflictAfterCatchUp())
	if res.ExitCode != runner.ExitDecision || !strings.Contains(j.Swaps[0].Error, "delete would destroy") {
		t.Fatalf("exit %d: %s (%s)", res.ExitCode, res.Next, j.Swaps[0].Error)
	}
	if got, err := w.l.ReadFile(w.srcID, "var/www/html/uploads/report.pdf"); err != nil || got != "edited on old" {
		t.Fatalf("the old server's copy: %q %v", got, err)
	}
	r := w.runner(doc, j, true)
	if res := r.Run(context.Background()); res.ExitCode != 0 {
		t.Fatalf("apply --continue: exit %d: %s", res.ExitCode, res.Next)
	}
	if n := len(w.droplets()); n != 1 {
		t.Fatalf("%d droplets after --continue: the old one was not deleted", n)
	}
}

// TestWrongSSHKeyChangesNothing: a key the source does not accept is found
// in preflight: exit 2, nothing created.
func TestWrongSSHKeyChangesNothing(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	sw := w.carrySwap("reserved_ip")
	other, _ := newKeyFile(t, t.TempDir())
	sw.Verify.SSH.Key = other
	res, _ := w.run(w.plan(sw), nil)
	if res.ExitCode != runner.ExitBadInput || !strings.Contains(res.Swaps[0].Error, "SSH to the source") || !strings.Contains(res.Swaps[0].Error, "unable to authenticate") {
		t.Fatalf("exit %d: %s (%s)", res.ExitCode, res.Next, res.Swaps[0].Error)
	}
	if n := w.l.OperationCounts()["droplets_create"]; n != 1 {
		t.Fatalf("%d droplets created", n)
	}
}

// TestGateBeforeCutover: with gates: [before_cutover], apply stops after
// verify (exit 4): the new server runs, traffic is still on the source.
// apply --continue moves it; from the gate, rollback deletes the new one.
func TestGateBeforeCutover(t *testing.T) {
	for _, then := range []string{"continue", "rollback"} {
		t.Run(then, func(t *testing.T) {
			t.Parallel()
			w := newWorld(t)
			sw := w.swap("loadbalancer")
			sw.Gates = []string{"before_cutover"}
			doc := w.plan(sw)
			res, j := w.run(doc, nil)
			if res.ExitCode != runner.ExitDecision || !strings.Contains(res.Next, "gate before_cutover") || j.Swaps[0].Status != runner.StatusPaused {
				t.Fatalf("exit %d %s: %s", res.ExitCode, j.Swaps[0].Status, res.Next)
			}
			inv := w.l.Inventory()
			if len(inv.Droplets) != 2 || len(inv.LBs[0].Droplets) != 1 || inv.LBs[0].Droplets[0] != w.srcID {
				t.Fatalf("at the gate: %+v", inv)
			}
			r := w.runner(doc, j, then == "continue")
			if then == "continue" {
				if res := r.Run(context.Background()); res.ExitCode != 0 {
					t.Fatalf("apply --continue: exit %d: %s", res.ExitCode, res.Next)
				}
				if lb := w.l.Inventory().LBs[0].Droplets; len(lb) != 1 || lb[0] != w.newID(j) {
					t.Fatalf("after --continue the pool is %v", lb)
				}
				return
			}
			if rev := r.Revert(context.Background()); rev.ExitCode != 0 {
				t.Fatalf("rollback at the gate: exit %d: %s", rev.ExitCode, rev.Next)
			}
			if inv := w.l.Inventory(); len(inv.Droplets) != 1 || inv.LBs[0].Droplets[0] != w.srcID {
				t.Fatalf("after rollback at the gate: %+v", inv)
			}
		})
	}
}

// TestVerifyCommands: the user's own tests run before the cutover through
// the pinning proxy, which sends the site's hostname to the new server (no
// hosts file): curl sees the new server answer. A failing one rolls back,
// its output in the checks; the provider token is not in its environment.
func TestVerifyCommands(t *testing.T) {
	t.Run("pass", func(t *testing.T) {
		t.Parallel()
		w := newWorld(t)
		sw := w.swap("loadbalancer")
		site := fmt.Sprintf("http://www.shop.test:%d/", w.l.HTTPPort())
		sw.Verify.Commands = []plans.Command{{Run: `curl -sS -f -D - -o /dev/null --max-time 5 ` + site + ` | grep -i "^x-served-by: web-1-" && echo "served by the new server"`, Timeout: plans.Duration(20 * time.Second)}}
		res, j := w.run(w.plan(sw), nil)
		if res.ExitCode != 0 {
			t.Fatalf("exit %d: %s", res.ExitCode, res.Next)
		}
		var seen bool
		for _, c := range j.Swaps[0].Checks {
			seen = seen || strings.HasPrefix(c.Name, "command curl") && c.OK && strings.Contains(c.Detail, "served by the new server")
		}
		if !seen {
			t.Fatalf("checks: %+v", j.Swaps[0].Checks)
		}
	})
	t.Run("fail", func(t *testing.T) {
		t.Parallel()
		w := newWorld(t)
		sw := w.swap("reserved_ip")
		sw.Verify.Commands = []plans.Command{{Run: `echo "token=[${DIGITALOCEAN_TOKEN}] proxy=${HTTPS_PROXY%:*} hosts=$VMSWAP_HOSTS"; exit 3`}}
		doc := w.plan(sw)
		j := runner.NewJournal(runner.JournalPath(doc.File), doc, "cmdfail123")
		r := &runner.Runner{Doc: doc, Drivers: w.drivers(doc), Journal: j, Poll: 50 * time.Millisecond,
			Environ: func() []string { return append(os.Environ(), "DIGITALOCEAN_TOKEN="+w.l.Token()) }}
		res := r.Run(context.Background())
		if res.ExitCode != runner.ExitRolledBack {
			t.Fatalf("exit %d: %s", res.ExitCode, res.Next)
		}
		var detail string
		for _, c := range j.Swaps[0].Checks {
			if strings.HasPrefix(c.Name, "command ") {
				detail = c.Detail
			}
		}
		if !strings.Contains(detail, "exit status 3") || !strings.Contains(detail, "token=[]") || !strings.Contains(detail, "proxy=http://127.0.0.1") || !strings.Contains(detail, "hosts=www.shop.test") {
			t.Fatalf("the failed command's check: %q", detail)
		}
	})
}
