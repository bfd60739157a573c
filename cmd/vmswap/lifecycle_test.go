package main_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vmswap/vmswap/plans"
	"github.com/vmswap/vmswap/plans/runner"
	"github.com/vmswap/vmswap/verify/probe"
)

// startApply starts `vmswap apply` in the background, with env added to
// the process's environment.
func startApply(t *testing.T, env []string, file string, args ...string) (*exec.Cmd, *bytes.Buffer) {
	cmd := exec.Command(bin, append(append([]string{"apply", "--poll", "50ms"}, args...), file)...)
	cmd.Env = append(os.Environ(), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill() })
	return cmd, &out
}

// waitJournal waits until the plan's journal satisfies ok.
func waitJournal(t *testing.T, file string, ok func(*runner.SwapState) bool, out *bytes.Buffer) {
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if j, _ := runner.LoadJournal(runner.JournalPath(file)); j != nil && ok(j.Swaps[0]) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("the journal never reached the state waited for:\n%s", out)
}

func exitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil {
		return -2
	}
	return 0
}

// interruptAt starts apply and sends SIGINT once the journal satisfies ok.
func interruptAt(t *testing.T, w *killWorld, ok func(*runner.SwapState) bool) string {
	cmd, out := startApply(t, w.env, w.planFile)
	waitJournal(t, w.planFile, ok, out)
	cmd.Process.Signal(syscall.SIGINT)
	if code := exitCode(cmd.Wait()); code != runner.ExitAttention {
		t.Fatalf("interrupted apply: exit %d\n%s", code, out)
	}
	return out.String()
}

func must(t *testing.T, r result, code int, want ...string) {
	t.Helper()
	if r.code != code {
		t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", r.code, code, r.stdout, r.stderr)
	}
	for _, s := range want {
		if !strings.Contains(r.stdout+r.stderr, s) {
			t.Fatalf("output lacks %q\nstdout: %s\nstderr: %s", s, r.stdout, r.stderr)
		}
	}
}

// TestApplyAfterRollbackStartsANewRun (lifecycle case 1): apply, rollback,
// apply. The third command starts a new run that really swaps again, and
// cleanup finds the server the reverted run left powered off.
func TestApplyAfterRollbackStartsANewRun(t *testing.T) {
	t.Parallel()
	w := newCutoverWorld(t, "", "loadbalancer")
	must(t, vmswap(t, w.env, "apply", "--poll", "50ms", w.planFile), 0, "vmswap: succeeded")
	first := w.serving(t)
	must(t, vmswap(t, w.env, "rollback", "--yes", "--poll", "50ms", w.planFile), 0, "vmswap: reverted")
	if got := w.serving(t); !slices.Equal(got, []int{w.srcID}) {
		t.Fatalf("pool after rollback: %v", got)
	}
	must(t, vmswap(t, w.env, "rollback", w.planFile), 0, "already rolled back")
	r := vmswap(t, w.env, "apply", "--poll", "50ms", w.planFile)
	must(t, r, 0, "starting run", "vmswap: succeeded")
	now := w.serving(t)
	if len(now) != 1 || now[0] == w.srcID || now[0] == first[0] {
		t.Fatalf("pool after the second apply: %v (source %d, first new %v)", now, w.srcID, first)
	}
	c := vmswap(t, w.env, "cleanup", "--yes", w.planFile)
	must(t, c, 0, "found 1 resource(s)", "deleted 1")
	inv := w.l.Inventory()
	if len(inv.Droplets) != 2 || len(inv.Snapshots) != 0 {
		t.Fatalf("after cleanup: %+v", inv)
	}
	j, _ := runner.LoadJournal(runner.JournalPath(w.planFile))
	if len(j.History) != 1 || j.History[0].Status != runner.StatusReverted {
		t.Fatalf("history: %+v", j.History)
	}
}

// TestChangedPlanDuringInterruptedRun (lifecycle case 2): a run interrupted
// during cutover can be neither overwritten by `plan -o` nor resumed with a
// changed file; `apply --finish` finishes it with the plan it recorded, and
// the changed plan then runs as a new run after a rollback.
func TestChangedPlanDuringInterruptedRun(t *testing.T) {
	t.Parallel()
	w := newCutoverWorld(t, "", "loadbalancer")
	interruptAt(t, w, func(s *runner.SwapState) bool { return slices.Contains(s.Intents, "lb_added") })
	ep := w.l.Endpoints()
	r := vmswap(t, w.env, "plan", "--endpoint", ep.DigitalOceanAPI, "--source", "web-1", "--size", "s-2vcpu-4gb", "--lb", w.lbID, "-o", w.planFile)
	must(t, r, runner.ExitBadInput, "has an unfinished run", "vmswap apply --finish "+w.planFile)
	changed := *w.plan
	changed.Swaps = slices.Clone(changed.Swaps)
	changed.Swaps[0].Observe = plans.Duration(2 * time.Second)
	w.writePlan(t, w.planFile, &changed)
	must(t, vmswap(t, w.env, "apply", w.planFile), runner.ExitBadInput, "changed since run", "vmswap apply --finish "+w.planFile, "vmswap rollback "+w.planFile)
	// status names the command that works, not plain apply.
	if st := vmswap(t, w.env, "status", w.planFile); st.code != 0 || !strings.Contains(st.stdout, "next: "+w.planFile+" changed since run") || !strings.Contains(st.stdout, "vmswap apply --finish "+w.planFile) {
		t.Fatalf("status after the plan changed: exit %d:\n%s", st.code, st.stdout)
	}
	must(t, vmswap(t, w.env, "cleanup", "--yes", w.planFile), runner.ExitBadInput, "owns what it created")
	must(t, vmswap(t, w.env, "apply", "--finish", "--poll", "50ms", w.planFile), 0, "resuming run", "vmswap: succeeded")
	j, _ := runner.LoadJournal(runner.JournalPath(w.planFile))
	if obs := j.Swaps[0].Steps["observe"]; obs.End.Sub(obs.Start) >= 2*time.Second {
		t.Fatalf("--finish ran the changed plan (observe %s)", obs.End.Sub(obs.Start))
	}
	must(t, vmswap(t, w.env, "rollback", "--yes", "--poll", "50ms", w.planFile), 0, "vmswap: reverted")
	must(t, vmswap(t, w.env, "apply", "--poll", "50ms", w.planFile), 0, "starting run", "vmswap: succeeded")
	j, _ = runner.LoadJournal(runner.JournalPath(w.planFile))
	if obs := j.Swaps[0].Steps["observe"]; obs.End.Sub(obs.Start) < 2*time.Second {
		t.Fatalf("the new run did not run the changed plan (observe %s)", obs.End.Sub(obs.Start))
	}
}

// TestResumeObservesInFull (lifecycle case 3): a run interrupted as observe
// starts and resumed after more than the observe time observes again in
// full, with the probe sending traffic.
func TestResumeObservesInFull(t *testing.T) {
	t.Parallel()
	w := newCutoverWorld(t, "", "loadbalancer")
	w.plan.Swaps[0].Observe = plans.Duration(3 * time.Second)
	w.writePlan(t, w.planFile, w.plan)
	interruptAt(t, w, func(s *runner.SwapState) bool { return slices.Contains(s.Done, "cutover") })
	time.Sleep(4 * time.Second)
	r := vmswap(t, w.env, "apply", "--poll", "50ms", w.planFile)
	must(t, r, 0, "resuming run", "probe: 50 req/s", "vmswap: succeeded")
	j, _ := runner.LoadJournal(runner.JournalPath(w.planFile))
	obs := j.Swaps[0].Steps["observe"]
	if d := obs.End.Sub(obs.Start); d < 3*time.Second {
		t.Fatalf("resumed observe lasted %s, want the full 3s", d)
	}
	if p := j.Swaps[0].Probe; p == nil || p.Requests < 100 || p.Failed != 0 {
		t.Fatalf("probe of the resumed run: %+v", p)
	}
}

// TestTwoPlansOneServer (lifecycle case 4): two plan files for one source,
// started two seconds apart: the second is refused before it changes
// anything, naming the run that holds the server.
func TestTwoPlansOneServer(t *testing.T) {
	t.Parallel()
	w := newCutoverWorld(t, "", "loadbalancer")
	w.plan.Swaps[0].Observe = plans.Duration(3 * time.Second)
	w.writePlan(t, w.planFile, w.plan)
	other := filepath.Join(t.TempDir(), "other.yaml")
	p2 := *w.plan
	p2.ID = "other"
	w.writePlan(t, other, &p2)
	cmd, out := startApply(t, w.env, w.planFile)
	waitJournal(t, w.planFile, func(s *runner.SwapState) bool { return slices.Contains(s.Done, "preflight") }, out)
	time.Sleep(2 * time.Second)
	before := len(w.l.Requests())
	r := vmswap(t, w.env, "apply", "--poll", "50ms", other)
	must(t, r, runner.ExitBadInput, "web-1 is being swapped by run", "nothing was changed")
	// Planning the claimed server is refused too, naming the run.
	ep := w.l.Endpoints()
	r = vmswap(t, w.env, "plan", "--endpoint", ep.DigitalOceanAPI, "--source", "web-1", "--size", "s-2vcpu-4gb", "--lb", w.lbID, "-o", filepath.Join(t.TempDir(), "third.yaml"))
	must(t, r, runner.ExitBadInput, "web-1 is being swapped by run")
	if code := exitCode(cmd.Wait()); code != 0 {
		t.Fatalf("first apply: exit %d\n%s", code, out)
	}
	// The second run changed nothing but its own claim tag, which it withdrew.
	for _, q := range w.l.Requests()[before:] {
		if q.Mutating() && q.Status < 300 && !strings.HasPrefix(q.Operation, "tags_") && q.Operation != "loadBalancers_add_droplets" &&
			q.Operation != "loadBalancers_remove_droplets" && q.Operation != "droplets_create" && q.Operation != "dropletActions_post" && q.Operation != "images_delete" {
			t.Fatalf("unexpected mutation %+v", q)
		}
	}
	if n := w.l.OperationCounts()["droplets_create"]; n != 2 {
		t.Fatalf("%d droplet creates, want 2 (web-1's seeding and the first plan's launch)", n)
	}
	inv := w.l.Inventory()
	if len(inv.Droplets) != 2 || len(inv.LBs[0].Droplets) != 1 {
		t.Fatalf("after two plans: %+v", inv)
	}
	j, _ := runner.LoadJournal(runner.JournalPath(other))
	if j.Status != runner.StatusRefused {
		t.Fatalf("second plan's run: %s", j.Status)
	}
}

// TestRollbackAfterInterruptedCutover (lifecycle case 5): apply is killed
// right after the provider accepted the cutover call, before the journal
// recorded it; rollback moves traffic back anyway and deletes what the run
// created, for every kind of cutover. Rollback after a completed cutover is
// TestApplyAfterRollbackStartsANewRun and plans' TestRollbackAfterSuccess.
func TestRollbackAfterInterruptedCutover(t *testing.T) {
	for _, tc := range []struct{ cutover, op string }{
		{"loadbalancer", "loadBalancers_add_droplets"}, {"reserved_ip", "reservedIPsActions_post"}, {"dns", "domains_update_record"},
	} {
		t.Run(tc.cutover, func(t *testing.T) {
			t.Parallel()
			n := mutationIndex(t, tc.cutover, tc.op)
			w := newCutoverWorld(t, "", tc.cutover)
			ext, err := probe.Start(w.entry())
			if err != nil {
				t.Fatal(err)
			}
			first := vmswap(t, append(w.env, "VMSWAP_CRASH_AT=api:"+n), "apply", "--poll", "50ms", w.planFile)
			if first.code != -1 {
				t.Fatalf("not killed at api:%s: %+v", n, first)
			}
			if tc.cutover != "loadbalancer" {
				// The provider finishes the accepted call after the kill.
				for deadline := time.Now().Add(10 * time.Second); slices.Contains(w.serving(t), w.srcID); time.Sleep(50 * time.Millisecond) {
					if time.Now().After(deadline) {
						t.Fatalf("the cutover call was not made before the kill: entry leads to %v", w.serving(t))
					}
				}
			}
			r := vmswap(t, w.env, "rollback", "--yes", "--poll", "50ms", "--break-lock", w.planFile)
			sum := ext.Stop()
			must(t, r, 0, "vmswap: reverted")
			if got := w.serving(t); !slices.Equal(got, []int{w.srcID}) {
				t.Fatalf("after rollback the entry point leads to %v, want the source %d", got, w.srcID)
			}
			inv := w.l.Inventory()
			if len(inv.Droplets) != 1 || len(inv.Snapshots) != 0 {
				t.Fatalf("left behind: %+v", inv)
			}
			t.Logf("%s: killed after %s (api:%s), rolled back; outside probe %d requests, %d failed", tc.cutover, tc.op, n, sum.Requests, sum.Failed)
			if sum.Failed != 0 {
				t.Fatalf("outside probe: %d of %d failed: %v", sum.Failed, sum.Requests, sum.Errors)
			}
		})
	}
}

// mutationIndex runs a clean apply and returns the ordinal of the first
// successful call of op among the run's API mutations (VMSWAP_CRASH_AT=api:N).
func mutationIndex(t *testing.T, cutover, op string) string {
	_, _, n := checkpoints(t, cutover, op)
	if n == 0 {
		t.Fatalf("%s never called", op)
	}
	return strconvItoa(n)
}

func strconvItoa(n int) string { b, _ := json.Marshal(n); return string(b) }

// TestEveryCommandIsCancellable (lifecycle case 6): a plan that is no
// regular file is refused at once, and `plan` against an API that never
// answers stops on SIGINT.
func TestEveryCommandIsCancellable(t *testing.T) {
	t.Parallel()
	fifo := filepath.Join(t.TempDir(), "plan.fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"/dev/zero", fifo} {
		start := time.Now()
		r := vmswap(t, nil, "validate", f)
		must(t, r, runner.ExitBadInput, "not a regular file")
		if d := time.Since(start); d > 10*time.Second {
			t.Fatalf("validate %s took %s", f, d)
		}
	}
	big := filepath.Join(t.TempDir(), "big.yaml")
	os.WriteFile(big, bytes.Repeat([]byte("# x\n"), plans.MaxPlanSize/4+1), 0o644)
	must(t, vmswap(t, nil, "validate", big), runner.ExitBadInput, "over the 4 MiB")
	// /dev/stdin with a file behind it reads as a regular file, but the
	// journal would go into /dev: refused, nothing written there.
	in, err := os.Open("../../examples/digitalocean-reserved-ip.yaml")
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	stdin := exec.Command(bin, "apply", "/dev/stdin")
	stdin.Stdin = in
	said, err := stdin.CombinedOutput()
	if exitCode(err) != runner.ExitBadInput || !strings.Contains(string(said), "name the plan file itself") {
		t.Fatalf("apply /dev/stdin: exit %d: %s", exitCode(err), said)
	}
	if _, err := os.Stat("/dev/stdin.journal.json"); err == nil {
		t.Fatal("apply /dev/stdin wrote /dev/stdin.journal.json")
	}
	r := vmswap(t, nil, "apply", "-o", "json", filepath.Join(t.TempDir(), "missing.yaml"))
	var ev struct{ Event, Message string }
	if err := json.Unmarshal([]byte(lastLine(r.stdout)), &ev); err != nil || ev.Event != "error" || !strings.Contains(ev.Message, "no such file") || r.code != runner.ExitBadInput {
		t.Fatalf("apply -o json of a missing plan: %+v (%v)", r, err)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() { // accept and never answer
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	cmd := exec.Command(bin, "plan", "--endpoint", "http://"+ln.Addr().String(), "--source", "web-1", "--size", "s-2vcpu-4gb", "--lb", "x")
	cmd.Env = append(os.Environ(), "DIGITALOCEAN_TOKEN=t")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	start := time.Now()
	cmd.Process.Signal(syscall.SIGINT)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		t.Logf("plan stopped %s after SIGINT: exit %d: %s", time.Since(start).Round(time.Millisecond), exitCode(err), lastLine(out.String()))
		if exitCode(err) != runner.ExitAttention || !strings.Contains(out.String(), "vmswap: interrupted") {
			t.Fatalf("plan against a silent API, interrupted: exit %d: %s", exitCode(err), out.String())
		}
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("plan ignored SIGINT for 10s: %s", out.String())
	}
}

// TestRollbackAfterCompletedCutover: after a finished reserved-IP swap,
// rollback points the IP back at the source with traffic flowing, and the
// new server is retired. (The load balancer's is
// TestApplyAfterRollbackStartsANewRun, DNS's plans' TestSharedDNSRecord.)
func TestRollbackAfterCompletedCutover(t *testing.T) {
	t.Parallel()
	w := newCutoverWorld(t, "", "reserved_ip")
	w.plan.Swaps[0].Retire.KeepFor = plans.Duration(time.Hour)
	w.writePlan(t, w.planFile, w.plan)
	must(t, vmswap(t, w.env, "apply", "--poll", "50ms", w.planFile), 0, "vmswap: succeeded")
	newID := w.serving(t)[0]
	ext, err := probe.Start(w.entry())
	if err != nil {
		t.Fatal(err)
	}
	must(t, vmswap(t, w.env, "rollback", "--yes", "--poll", "50ms", w.planFile), 0, "vmswap: reverted")
	sum := ext.Stop()
	if got := w.serving(t); !slices.Equal(got, []int{w.srcID}) {
		t.Fatalf("after rollback the reserved IP leads to %v, want %d", got, w.srcID)
	}
	for _, d := range w.l.Inventory().Droplets {
		if d.ID == newID && d.Status != "off" {
			t.Fatalf("the new server is %s after rollback", d.Status)
		}
	}
	if sum.Failed != 0 || sum.Requests == 0 {
		t.Fatalf("outside probe during rollback: %d of %d failed: %v", sum.Failed, sum.Requests, sum.Errors)
	}
}

// TestRollbackAfterKillDuringRetire: apply is killed right after its
// power-off of the old server was accepted, before the journal recorded
// it. rollback then powers the old server on, proves the load balancer
// routes to it, and only then retires the new server: the site is whole,
// and an outside probe sees no failed request.
func TestRollbackAfterKillDuringRetire(t *testing.T) {
	t.Parallel()
	// The ordinal of the shutdown action among a clean run's mutations:
	// the first droplet action after the old server left the pool.
	cw := newCutoverWorld(t, "", "loadbalancer")
	before := len(cw.l.Requests())
	must(t, vmswap(t, cw.env, "apply", "--poll", "50ms", cw.planFile), 0)
	n, removed, crash := 0, false, 0
	for _, q := range cw.l.Requests()[before:] {
		if q.Mutating() && q.API == "digitalocean" && q.Status < 300 {
			n++
			removed = removed || q.Operation == "loadBalancers_remove_droplets"
			if removed && q.Operation == "dropletActions_post" && crash == 0 {
				crash = n
			}
		}
	}
	if crash == 0 {
		t.Fatal("no power-off after the cutover in a clean run")
	}
	w := newCutoverWorld(t, "", "loadbalancer")
	if r := vmswap(t, append(w.env, "VMSWAP_CRASH_AT=api:"+strconvItoa(crash)), "apply", "--poll", "50ms", w.planFile); r.code != -1 {
		t.Fatalf("not killed at api:%d: %+v", crash, r)
	}
	// The accepted shutdown finishes after the kill.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		off := false
		for _, d := range w.l.Inventory().Droplets {
			off = off || d.ID == w.srcID && d.Status == "off"
		}
		if off {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the old server was not powered off by the killed run")
		}
	}
	ext, err := probe.Start(w.entry())
	if err != nil {
		t.Fatal(err)
	}
	r := vmswap(t, w.env, "rollback", "--yes", "--poll", "50ms", "--break-lock", w.planFile)
	sum := ext.Stop()
	must(t, r, 0, "vmswap: reverted")
	if got := w.serving(t); !slices.Equal(got, []int{w.srcID}) {
		t.Fatalf("after rollback the load balancer sends to %v, want the old server %d", got, w.srcID)
	}
	for _, d := range w.l.Inventory().Droplets {
		if d.ID == w.srcID && d.Status != "active" {
			t.Fatalf("the old server is %s after the rollback", d.Status)
		}
	}
	if sum.Failed != 0 {
		t.Fatalf("outside probe: %d of %d failed: %v", sum.Failed, sum.Requests, sum.Errors)
	}
}

// TestClosedOutputPipe: the reader of apply's output goes away (`apply |
// head -1`, a dropped SSH session): the run is not killed mid-swap by
// SIGPIPE but finishes, as its journal shows.
func TestClosedOutputPipe(t *testing.T) {
	t.Parallel()
	w := newCutoverWorld(t, "", "loadbalancer")
	cmd := exec.Command(bin, "apply", "--poll", "50ms", w.planFile)
	cmd.Env = append(os.Environ(), w.env...)
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	line := make([]byte, 1)
	if _, err := pr.Read(line); err != nil {
		t.Fatal(err)
	}
	pr.Close() // what head does after its lines
	err = cmd.Wait()
	j, _ := runner.LoadJournal(runner.JournalPath(w.planFile))
	if err != nil || j == nil || j.Status != runner.StatusSucceeded {
		t.Fatalf("apply with its output closed: %v, journal %+v", err, j)
	}
}

// TestCleanupOfARunThatNeedsAttention: cleanup deletes nothing a run that
// needs attention made, and says why rather than "nothing to clean up"
// alone. (The journal is marked as a failed rollback leaves it.)
func TestCleanupOfARunThatNeedsAttention(t *testing.T) {
	t.Parallel()
	w := newCutoverWorld(t, "", "loadbalancer")
	must(t, vmswap(t, w.env, "apply", "--poll", "50ms", w.planFile), 0, "vmswap: succeeded")
	j, err := runner.LoadJournal(runner.JournalPath(w.planFile))
	if err != nil {
		t.Fatal(err)
	}
	j.Status, j.Swaps[0].Status = runner.StatusNeedsAttention, runner.StatusNeedsAttention
	if err := j.Save(); err != nil {
		t.Fatal(err)
	}
	before := w.l.Inventory()
	must(t, vmswap(t, w.env, "cleanup", "--yes", w.planFile), 0, "needs attention", "vmswap status "+w.planFile)
	if after := w.l.Inventory(); len(after.Droplets) != len(before.Droplets) || len(after.Snapshots) != len(before.Snapshots) {
		t.Fatalf("cleanup deleted what the run made: %+v -> %+v", before, after)
	}
}
