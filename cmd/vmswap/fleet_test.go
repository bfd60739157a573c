package main_test

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vmswap/vmswap/loadbalancer"
	"github.com/vmswap/vmswap/plans"
	"github.com/vmswap/vmswap/plans/registry"
	"github.com/vmswap/vmswap/plans/runner"
)

// newFleetWorld is the kill world with n servers web-1..web-n, all tagged
// web, behind its load balancer.
func newFleetWorld(t *testing.T, n int) *killWorld {
	t.Helper()
	w := newCutoverWorld(t, "", "loadbalancer")
	ctx := context.Background()
	d, err := registry.Build(w.plan, registry.BuildOptions{Getenv: func(k string) string {
		if k == "DIGITALOCEAN_TOKEN" {
			return w.l.Endpoints().Token
		}
		return ""
	}})
	if err != nil {
		t.Fatal(err)
	}
	for i := 2; i <= n; i++ {
		id, _, err := w.l.Seeder().Droplet(ctx, fmt.Sprintf("web-%d", i), "s-1vcpu-1gb", nil, map[string]string{"index.html": "<h1>shop</h1>\n"})
		if err != nil {
			t.Fatal(err)
		}
		if err := d["lab"].LB.AddMember(ctx, w.lbID, loadbalancer.Member{ServerID: strconv.Itoa(id)}); err != nil {
			t.Fatal(err)
		}
	}
	return w
}

// fleetPlan writes `vmswap plan --tag web` with the strategy flags.
func fleetPlan(t *testing.T, w *killWorld, strategy ...string) string {
	t.Helper()
	ep := w.l.Endpoints()
	file := filepath.Join(t.TempDir(), "fleet.yaml")
	args := append([]string{"plan", "--endpoint", ep.DigitalOceanAPI, "--tag", "web", "--size", "s-2vcpu-4gb", "--lb", w.lbID,
		"--identify-header", "X-Served-By", "--drain", "300ms", "--observe", "1s", "--http", fmt.Sprintf("http://shop.test:%d/health", ep.HTTPPort),
		"--probe-url", fmt.Sprintf("http://%s:%d/", w.lbIP, ep.HTTPPort), "--probe-rate", "30", "-o", file}, strategy...)
	must(t, vmswap(t, w.env, args...), 0, "fleet:")
	return file
}

// sizes counts the load balancer's members by size.
func sizes(w *killWorld) map[string]int {
	size := map[int]string{}
	for _, d := range w.l.Inventory().Droplets {
		size[d.ID] = d.Size
	}
	out := map[string]int{}
	for _, id := range w.l.Inventory().LBs[0].Droplets {
		out[size[id]]++
	}
	return out
}

// TestFleetPlanGateContinue: `vmswap plan --tag web` writes one swap per
// server of the tag; apply stops after the canary with exit 4 and the
// command to go on; a plain apply refuses the paused run; apply --continue
// upgrades the rest, two at a time.
func TestFleetPlanGateContinue(t *testing.T) {
	t.Parallel()
	w := newFleetWorld(t, 3)
	file := fleetPlan(t, w, "--max-parallel", "2", "--canary", "1", "--wave-gate", "after_canary")
	doc, err := plans.Load(file)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(doc.Plan.Swaps); n != 3 || doc.Plan.Fleet == nil || len(doc.Plan.Observed.Fleet) != 3 {
		t.Fatalf("the fleet plan: %d swaps, fleet %+v", n, doc.Plan.Fleet)
	}
	must(t, vmswap(t, w.env, "apply", "--poll", "50ms", file), runner.ExitDecision, "paused after wave 1 of 2", "apply --continue "+file)
	if s := sizes(w); s["s-2vcpu-4gb"] != 1 || s["s-1vcpu-1gb"] != 2 {
		t.Fatalf("pool at the gate: %v", s)
	}
	must(t, vmswap(t, w.env, "apply", "--poll", "50ms", file), runner.ExitBadInput, "paused for a decision")
	must(t, vmswap(t, w.env, "status", file), 0, "fleet: wave 1", "paused at the gate after wave 1", "pending  source web-3 (-)")
	must(t, vmswap(t, w.env, "apply", "--poll", "50ms", "--continue", file), 0, "vmswap: succeeded")
	if s := sizes(w); s["s-2vcpu-4gb"] != 3 || len(s) != 1 {
		t.Fatalf("pool after the rollout: %v", s)
	}
}

// TestKillDuringConcurrentWave: SIGKILL while three swaps of one wave are
// in flight, each past its launch; apply again resumes every one of them:
// nothing is created twice, and the pool ends with three new servers.
func TestKillDuringConcurrentWave(t *testing.T) {
	t.Parallel()
	w := newFleetWorld(t, 3)
	file := fleetPlan(t, w, "--max-parallel", "3")
	cmd, out := startApply(t, w.env, file)
	deadline := time.Now().Add(90 * time.Second)
	for {
		j, _ := runner.LoadJournal(runner.JournalPath(file))
		launched := 0
		if j != nil {
			for _, st := range j.Swaps {
				if st.NewID != "" && st.Status == runner.StatusRunning {
					launched++
				}
			}
		}
		if launched >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the wave never had two launched swaps at once:\n%s", out)
		}
		time.Sleep(10 * time.Millisecond)
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	must(t, vmswap(t, w.env, "apply", "--poll", "50ms", file), 0, "vmswap: succeeded")
	inv := w.l.Inventory()
	if len(inv.Droplets) != 6 {
		names := []string{}
		for _, d := range inv.Droplets {
			names = append(names, d.Name+"/"+d.Status)
		}
		t.Fatalf("after kill -9 and resume: %d droplets (want 3 old + 3 new): %s", len(inv.Droplets), strings.Join(names, ", "))
	}
	if s := sizes(w); s["s-2vcpu-4gb"] != 3 || len(s) != 1 {
		t.Fatalf("pool after the resume: %v", s)
	}
}

// TestKillWhilePreparingAWave: SIGKILL while wave 1 moves traffic and wave
// 2, prepared ahead, has launched its new server; apply again resumes both
// from where they were: nothing is created twice, the pool ends upgraded.
func TestKillWhilePreparingAWave(t *testing.T) {
	t.Parallel()
	w := newFleetWorld(t, 3)
	file := fleetPlan(t, w, "--max-parallel", "1")
	cmd, out := startApply(t, w.env, file)
	deadline := time.Now().Add(90 * time.Second)
	for {
		j, _ := runner.LoadJournal(runner.JournalPath(file))
		if j != nil && j.Swaps[1].NewID != "" && !slices.Contains(j.Swaps[0].Done, "retire") {
			break
		}
		if time.Now().After(deadline) || j != nil && slices.Contains(j.Swaps[0].Done, "retire") {
			cmd.Process.Kill()
			t.Fatalf("wave 2 was not launched while wave 1 ran:\n%s", out)
		}
		time.Sleep(10 * time.Millisecond)
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	must(t, vmswap(t, w.env, "apply", "--poll", "50ms", file), 0, "vmswap: succeeded")
	inv := w.l.Inventory()
	if len(inv.Droplets) != 6 || len(inv.Snapshots) != 0 {
		t.Fatalf("after kill -9 and resume: %d droplets (want 3 old + 3 new), snapshots %v", len(inv.Droplets), inv.Snapshots)
	}
	if s := sizes(w); s["s-2vcpu-4gb"] != 3 || len(s) != 1 {
		t.Fatalf("pool after the resume: %v", s)
	}
}
