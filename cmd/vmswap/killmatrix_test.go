package main_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/vmswap/vmswap/lab"
	"github.com/vmswap/vmswap/lab/labtest"
	"github.com/vmswap/vmswap/plans"
	"github.com/vmswap/vmswap/verify"
	"github.com/vmswap/vmswap/verify/probe"
)

// killWorld is a lab (in this process, so it outlives the killed binary)
// with web-1 behind a load balancer, and a plan to swap it.
type killWorld struct {
	l        *lab.Lab
	srcID    int
	lbIP     string
	planFile string
	env      []string
}

func newKillWorld(t *testing.T, token string) *killWorld {
	l := labtest.Start(t, lab.Config{Token: token})
	ctx := context.Background()
	sd := l.Seeder()
	srcID, _, err := sd.Droplet(ctx, "web-1", "s-1vcpu-1gb", nil, map[string]string{"index.html": "<h1>shop</h1>\n"})
	if err != nil {
		t.Fatal(err)
	}
	lbID, lbIP, err := sd.LoadBalancer(ctx, "lb", []int{srcID})
	if err != nil {
		t.Fatal(err)
	}
	ep := l.Endpoints()
	p := &plans.Plan{Version: 1, ID: "kill", Providers: map[string]plans.Provider{"lab": {Type: "digitalocean", Endpoint: ep.DigitalOceanAPI}},
		Swaps: []plans.Swap{{
			Source: plans.Source{Provider: "lab", Server: "web-1"}, Target: plans.Target{Size: "s-2vcpu-4gb"},
			Verify:  plans.Verify{HTTP: []verify.HTTPCheck{{URL: fmt.Sprintf("http://shop.test:%d/health", ep.HTTPPort), Status: 200}}, Compare: []string{"/"}},
			Cutover: plans.Cutover{LoadBalancer: &plans.LBCutover{Provider: "lab", ID: lbID, IdentifyHeader: "X-Served-By", Drain: plans.Duration(300 * time.Millisecond)}},
			Probe:   &plans.Probe{URL: fmt.Sprintf("http://%s:%d/", lbIP, ep.HTTPPort), Rate: 50},
			Observe: plans.Duration(time.Second),
			Retire:  plans.Retire{Action: "power_off", ShutdownTimeout: plans.Duration(5 * time.Second)},
		}}}
	b, err := yaml.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	w := &killWorld{l: l, srcID: srcID, lbIP: lbIP, planFile: filepath.Join(t.TempDir(), "plan.yaml"), env: []string{"DIGITALOCEAN_TOKEN=" + ep.Token}}
	if err := os.WriteFile(w.planFile, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return w
}

// checkpoints counts the journal writes and API mutations of a clean run.
func checkpoints(t *testing.T) (journal, api int) {
	w := newKillWorld(t, "")
	r := vmswap(t, w.env, "apply", "--poll", "50ms", w.planFile)
	if r.code != 0 {
		t.Fatalf("clean run: exit %d: %s", r.code, r.stderr)
	}
	j, err := plans.LoadJournal(plans.JournalPath(w.planFile))
	if err != nil {
		t.Fatal(err)
	}
	seeding := 0
	for _, q := range w.l.Requests() {
		if q.Mutating() && q.API == "digitalocean" {
			api++
		}
		if q.Operation == "droplets_create" || q.Operation == "loadBalancers_create" {
			seeding++
		}
	}
	return j.Seq, api - seeding + 1 // + the swap's own droplets_create, counted in seeding
}

// TestKillMatrix kills `vmswap apply` with SIGKILL after each journal write
// and after each API mutation in turn, then applies again. Every time, the
// swap completes, the cloud saw exactly one new droplet and one snapshot,
// nothing is orphaned, and traffic through the load balancer never failed.
func TestKillMatrix(t *testing.T) {
	nj, na := checkpoints(t)
	t.Logf("kill points: %d journal writes + %d API mutations = %d", nj, na, nj+na)
	var points []string
	for i := 1; i <= nj; i++ {
		points = append(points, "journal:"+strconv.Itoa(i))
	}
	for i := 1; i <= na; i++ {
		points = append(points, "api:"+strconv.Itoa(i))
	}
	for _, pt := range points {
		t.Run(pt, func(t *testing.T) {
			t.Parallel()
			w := newKillWorld(t, "")
			ext, err := probe.Start(probe.Config{URL: fmt.Sprintf("http://%s:%d/", w.lbIP, w.l.HTTPPort()), Rate: 50})
			if err != nil {
				t.Fatal(err)
			}
			first := vmswap(t, append(w.env, "VMSWAP_CRASH_AT="+pt), "apply", "--poll", "50ms", w.planFile)
			if first.code != -1 {
				t.Fatalf("run with crash at %s was not killed: exit %d\n%s", pt, first.code, first.stderr)
			}
			// The lock of the killed run is reported, not silently broken.
			locked := vmswap(t, w.env, "apply", "--poll", "50ms", w.planFile)
			if locked.code != plans.ExitBadInput || !strings.Contains(locked.stderr, "no longer running") || !strings.Contains(locked.stderr, "--break-lock") {
				t.Fatalf("second apply over a dead run's lock: exit %d\n%s", locked.code, locked.stderr)
			}
			second := vmswap(t, w.env, "apply", "--poll", "50ms", "--break-lock", w.planFile)
			sum := ext.Stop()
			inv := w.l.Inventory()
			acts := w.l.ActionCounts()
			creates := w.l.OperationCounts()["droplets_create"] - 1 // web-1's seeding
			leftovers := len(inv.Snapshots)
			var newDroplets int
			for _, d := range inv.Droplets {
				if d.ID != w.srcID {
					newDroplets++
				}
			}
			fmt.Printf("kill at %-10s -> resumed: exit %d; droplets created %d, snapshots taken %d; failed requests %d of %d; leftovers %d\n",
				pt, second.code, creates, acts["snapshot"], sum.Failed, sum.Requests, leftovers+newDroplets-1)
			if second.code != 0 {
				t.Fatalf("resume after kill at %s: exit %d\n%s", pt, second.code, second.stderr)
			}
			if creates != 1 || acts["snapshot"] != 1 || newDroplets != 1 || leftovers != 0 {
				t.Fatalf("after kill at %s: %d creates, %d snapshots, inventory %+v", pt, creates, acts["snapshot"], inv)
			}
			if sum.Failed != 0 {
				t.Fatalf("after kill at %s: %d of %d requests failed: %v", pt, sum.Failed, sum.Requests, sum.Errors)
			}
		})
	}
}
