package main_test

import (
	"bytes"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/vmswap/vmswap/plans"
	"github.com/vmswap/vmswap/plans/runner"
)

// relay is a nameserver on loopback that passes questions to the lab's,
// and answers nothing while silent: a nameserver gone quiet mid-swap.
type relay struct {
	addr   string
	silent atomic.Bool
}

func startRelay(t *testing.T, upstream string) *relay {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &relay{addr: pc.LocalAddr().String()}
	srv := &mdns.Server{PacketConn: pc, Handler: mdns.HandlerFunc(func(w mdns.ResponseWriter, q *mdns.Msg) {
		if r.silent.Load() {
			return
		}
		a, err := mdns.Exchange(q, upstream)
		if err != nil {
			return
		}
		w.WriteMsg(a)
	})}
	go srv.ActivateAndServe()
	t.Cleanup(func() { srv.Shutdown() })
	return r
}

// setNameserver rewrites the world's plan with the lab provider's
// nameserver at addr.
func (w *killWorld) setNameserver(t *testing.T, addr string) {
	p := w.plan.Providers["lab"]
	p.Nameserver = addr
	w.plan.Providers["lab"] = p
	w.writePlan(t, w.planFile, w.plan)
}

// deadPort returns a loopback UDP address nothing listens on.
func deadPort(t *testing.T) string {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := pc.LocalAddr().String()
	pc.Close()
	return addr
}

// TestNameserverThatDoesNotAnswer: a plan whose nameserver does not answer
// (a typo, a firewall) is refused before anything is created; it used to
// move the record and then wait for as long as it was let run.
func TestNameserverThatDoesNotAnswer(t *testing.T) {
	t.Parallel()
	w := newCutoverWorld(t, "", "dns")
	w.setNameserver(t, deadPort(t))
	r := vmswap(t, w.env, "apply", "--poll", "50ms", w.planFile)
	must(t, r, runner.ExitBadInput, "the nameserver vmswap asks does not answer www.shop.test A", "set nameserver in the DNS provider block")
	inv := w.l.Inventory()
	if len(inv.Droplets) != 1 || len(inv.Snapshots) != 0 {
		t.Fatalf("a refused plan created something: %d droplets, %d snapshots", len(inv.Droplets), len(inv.Snapshots))
	}
	if got := w.serving(t); !slices.Equal(got, []int{w.srcID}) {
		t.Fatalf("record after a refused apply: %v", got)
	}
}

// TestNameserverGoesSilentMidSwap: the nameserver answers at preflight and
// stops answering once the record is moved. The wait for the change is
// bounded by the swap's ready_timeout: apply rolls back and reports what
// it could not confirm, rather than waiting forever.
func TestNameserverGoesSilentMidSwap(t *testing.T) {
	t.Parallel()
	w := newCutoverWorld(t, "", "dns")
	rl := startRelay(t, w.l.Endpoints().DNS)
	w.plan.Swaps[0].ReadyTimeout = plans.Duration(4 * time.Second)
	w.setNameserver(t, rl.addr)

	cmd, out := startApply(t, w.env, w.planFile)
	waitJournal(t, w.planFile, func(s *runner.SwapState) bool { return slices.Contains(s.Done, "snapshot") }, out)
	rl.silent.Store(true)
	start := time.Now()
	code := exitCode(cmd.Wait())
	if code == 0 || time.Since(start) > 60*time.Second {
		t.Fatalf("apply with a silent nameserver: exit %d after %s\n%s", code, time.Since(start), out)
	}
	if !strings.Contains(out.String(), "is not served as") || !strings.Contains(out.String(), "raise ready_timeout") {
		t.Fatalf("apply does not say what it could not confirm:\n%s", out)
	}
	// The nameserver is back: rollback finishes what the failed run left.
	rl.silent.Store(false)
	must(t, vmswap(t, w.env, "rollback", "--yes", "--poll", "50ms", w.planFile), 0, "vmswap: reverted")
	if got := w.serving(t); !slices.Equal(got, []int{w.srcID}) {
		t.Fatalf("record after rollback: %v, want the source %d", got, w.srcID)
	}
}

// TestSecondInterruptQuits: rollback runs on through a first Ctrl-C, as it
// says, and a second one quits at once. The second used to be ignored, and
// a rollback waiting on a silent nameserver could only be killed.
func TestSecondInterruptQuits(t *testing.T) {
	t.Parallel()
	w := newCutoverWorld(t, "", "dns")
	rl := startRelay(t, w.l.Endpoints().DNS)
	w.setNameserver(t, rl.addr)
	// Interrupted while it waits for the moved record to be served.
	cmd, out := startApply(t, w.env, w.planFile)
	waitJournal(t, w.planFile, func(s *runner.SwapState) bool { return slices.Contains(s.Done, "snapshot") }, out)
	rl.silent.Store(true)
	waitJournal(t, w.planFile, func(s *runner.SwapState) bool { return slices.Contains(s.Intents, "dns_set") }, out)
	cmd.Process.Signal(syscall.SIGINT)
	if code := exitCode(cmd.Wait()); code != runner.ExitAttention {
		t.Fatalf("interrupted apply: exit %d\n%s", code, out)
	}

	rb := startCmd(t, w.env, "rollback", "--yes", "--poll", "50ms", w.planFile)
	waitOutput(t, rb, "pointing www.shop.test A back at web-1")
	rb.cmd.Process.Signal(syscall.SIGINT)
	waitOutput(t, rb, "the rollback runs to its end")
	select {
	case <-rb.done:
		t.Fatalf("rollback stopped at the first interrupt:\n%s", rb.out)
	case <-time.After(500 * time.Millisecond):
	}
	rb.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-rb.done:
	case <-time.After(10 * time.Second):
		t.Fatalf("rollback still runs 10s after a second interrupt:\n%s", rb.out)
	}
	if code := exitCode(rb.err); code != runner.ExitAttention || !strings.Contains(rb.out.String(), "interrupted twice") {
		t.Fatalf("rollback after two interrupts: exit %d\n%s", code, rb.out)
	}
	// Run again once the nameserver answers: it finishes.
	rl.silent.Store(false)
	must(t, vmswap(t, w.env, "rollback", "--yes", "--poll", "50ms", w.planFile), 0, "vmswap: reverted")
	if got := w.serving(t); !slices.Equal(got, []int{w.srcID}) {
		t.Fatalf("record after rollback: %v, want the source %d", got, w.srcID)
	}
}

// lockedBuffer is a process's output, read while the process writes it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// running is a vmswap command in the background.
type running struct {
	cmd  *exec.Cmd
	out  *lockedBuffer
	done chan struct{}
	err  error // once done is closed
}

func startCmd(t *testing.T, env []string, args ...string) *running {
	t.Helper()
	r := &running{cmd: exec.Command(bin, args...), out: &lockedBuffer{}, done: make(chan struct{})}
	r.cmd.Env = append(os.Environ(), env...)
	r.cmd.Stdout, r.cmd.Stderr = r.out, r.out
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { r.err = r.cmd.Wait(); close(r.done) }()
	t.Cleanup(func() { r.cmd.Process.Kill(); <-r.done })
	return r
}

// waitOutput waits until the command has printed s.
func waitOutput(t *testing.T, r *running, s string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(r.out.String(), s) {
		select {
		case <-r.done:
			t.Fatalf("the command ended before printing %q:\n%s", s, r.out)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("the command never printed %q:\n%s", s, r.out)
		}
	}
}

// TestRollbackOfASnapshotUnderWay: kill -9 while the snapshot is being
// taken, then rollback. DigitalOcean makes the image only when the action
// completes, so a rollback that only looked for it reported "reverted" and
// left the image behind; it now waits for the imaging under way and
// deletes what it made.
func TestRollbackOfASnapshotUnderWay(t *testing.T) {
	t.Parallel()
	w := newCutoverWorld(t, "", "loadbalancer")
	cmd, out := startApply(t, w.env, w.planFile)
	waitJournal(t, w.planFile, func(s *runner.SwapState) bool { return s.SnapshotOp != "" && s.ImageID == "" }, out)
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	must(t, vmswap(t, w.env, "rollback", "--yes", "--poll", "50ms", w.planFile), 0, "vmswap: reverted")
	// The lab's snapshot action takes 800ms: any it had under way when
	// rollback ended has made its image by now.
	time.Sleep(1500 * time.Millisecond)
	inv := w.l.Inventory()
	if len(inv.Droplets) != 1 || len(inv.Snapshots) != 0 {
		t.Fatalf("after rollback: %d droplets, snapshots %v (want the source alone)", len(inv.Droplets), inv.Snapshots)
	}
	must(t, vmswap(t, w.env, "cleanup", "--yes", w.planFile), 0, "nothing to clean up")
}

// TestCleanupOfACopiedPlanKeepsTheLiveServer: a DNS swap succeeded, and
// the plan file is copied elsewhere without its journal (another checkout,
// a lost journal). cleanup of the copy found the new server, which the
// record points at, by the plan's tag and deleted it; a running server the
// journal does not know to serve nothing is no orphan.
func TestCleanupOfACopiedPlanKeepsTheLiveServer(t *testing.T) {
	t.Parallel()
	w := newCutoverWorld(t, "", "dns")
	must(t, vmswap(t, w.env, "apply", "--poll", "50ms", w.planFile), 0, "vmswap: succeeded")
	serving := w.serving(t)
	copied := filepath.Join(t.TempDir(), "plan.yaml")
	b, err := os.ReadFile(w.planFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(copied, b, 0o644); err != nil {
		t.Fatal(err)
	}
	must(t, vmswap(t, w.env, "cleanup", "--yes", copied), 0, "nothing to clean up")
	if got := w.serving(t); len(got) != 1 || !slices.Equal(got, serving) {
		t.Fatalf("record after cleanup: %v, before %v", got, serving)
	}
	found := false
	for _, d := range w.l.Inventory().Droplets {
		found = found || d.ID == serving[0]
	}
	if !found {
		t.Fatalf("cleanup of a copied plan deleted %d, the server the record points at", serving[0])
	}
}

// TestRollbackAfterAKillInRetire: kill -9 in the retire step, before the
// image is deleted, then rollback: it switches back and deletes the image
// too (it said "reverted" and left the image, billed, to cleanup).
func TestRollbackAfterAKillInRetire(t *testing.T) {
	t.Parallel()
	w := newCutoverWorld(t, "", "reserved_ip")
	cmd, out := startApply(t, w.env, w.planFile)
	waitJournal(t, w.planFile, func(s *runner.SwapState) bool { return s.Steps["retire"] != nil && s.ImageID != "" }, out)
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	must(t, vmswap(t, w.env, "rollback", "--yes", "--poll", "50ms", w.planFile), 0, "vmswap: reverted")
	if inv := w.l.Inventory(); len(inv.Snapshots) != 0 {
		t.Fatalf("after rollback: snapshots %v", inv.Snapshots)
	}
	if got := w.serving(t); !slices.Equal(got, []int{w.srcID}) {
		t.Fatalf("reserved IP on %v after rollback, want the source %d", got, w.srcID)
	}
}
