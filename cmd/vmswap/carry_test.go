package main_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmswap/vmswap/lab/labtest"
	"github.com/vmswap/vmswap/plans"
	"github.com/vmswap/vmswap/plans/runner"
	"github.com/vmswap/vmswap/verify/probe"
)

// newCarryWorld is the kill world's load-balancer swap, reached over SSH,
// carrying the lab app's uploads and sessions.
func newCarryWorld(t *testing.T, cutover string) *killWorld {
	w := newCutoverWorld(t, "", cutover)
	dir := t.TempDir()
	key, pub := labtest.NewKey(t, dir)
	if err := w.l.WriteFile(w.srcID, "root/.ssh/authorized_keys", pub); err != nil {
		t.Fatal(err)
	}
	sw := &w.plan.Swaps[0]
	sw.Verify.SSH = &plans.SSH{User: "root", Key: key, Port: w.l.SSHPort(), KnownHosts: "accept-new", KnownHostsFile: filepath.Join(dir, "known_hosts")}
	sw.Carry = &plans.Carry{Paths: []string{"/var/www/html/uploads", "/var/lib/app/sessions"}}
	w.writePlan(t, w.planFile, w.plan)
	return w
}

// TestKillDuringCarryPasses kills `vmswap apply` with SIGKILL in the middle
// of the catch-up pass and of the final pass, with users uploading and
// logging in through the entry point (the load balancer; DNS for the final
// pass, the one that waits for the TTL) all along, then applies again: the
// swap completes and nothing they wrote is lost.
func TestKillDuringCarryPasses(t *testing.T) {
	for _, tt := range []struct{ cutover, pt string }{{"loadbalancer", "carry:catch-up:2"}, {"loadbalancer", "carry:final:2"}, {"dns", "carry:final:2"}} {
		pt := tt.pt
		t.Run(tt.cutover+"/"+pt, func(t *testing.T) {
			t.Parallel()
			w := newCarryWorld(t, tt.cutover)
			users := probe.StartWriter(w.entry(), 100*time.Millisecond)
			defer users.Stop()
			time.Sleep(500 * time.Millisecond)
			first := vmswap(t, append(w.env, "VMSWAP_CRASH_AT="+pt), "apply", "--poll", "50ms", w.planFile)
			if first.code != -1 {
				t.Fatalf("run with crash at %s was not killed: exit %d\n%s", pt, first.code, first.stderr)
			}
			j, err := runner.LoadJournal(runner.JournalPath(w.planFile))
			if err != nil {
				t.Fatal(err)
			}
			pass := strings.TrimSuffix(strings.TrimPrefix(pt, "carry:"), ":2")
			if st := j.Swaps[0]; !contains(st.Intents, "carry:"+pass) || contains(st.Done, "carry:"+pass) {
				t.Fatalf("killed at %s, but the journal says intents %v, done %v", pt, st.Intents, st.Done)
			}
			second := vmswap(t, w.env, "apply", "--poll", "50ms", w.planFile)
			if second.code != 0 {
				t.Fatalf("resume after kill at %s: exit %d\n%s", pt, second.code, second.stderr)
			}
			users.Stop()
			got := users.Check(context.Background())
			t.Logf("kill at %s: %s", pt, got)
			if got.LostUploads+got.LostSessions != 0 || got.Uploads < 10 {
				t.Fatalf("after kill at %s and resume: %+v", pt, got)
			}
		})
	}
}

func contains(xs []string, x string) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}
