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

	"github.com/vmswap/vmswap/dns/authority"
	"github.com/vmswap/vmswap/lab"
	"github.com/vmswap/vmswap/lab/labtest"
	"github.com/vmswap/vmswap/plans"
	"github.com/vmswap/vmswap/plans/runner"
	"github.com/vmswap/vmswap/verify"
	"github.com/vmswap/vmswap/verify/probe"
)

// killWorld is a lab (in this process, so it outlives the killed binary)
// with web-1 behind a load balancer, a reserved IP and a DNS record, and a
// plan to swap it through one of them.
type killWorld struct {
	l        *lab.Lab
	srcID    int
	srcIP    string
	lbID     string
	lbIP     string
	ripIP    string
	cutover  string
	planFile string
	env      []string
	plan     *plans.Plan
}

func newKillWorld(t *testing.T, token string) *killWorld {
	return newCutoverWorld(t, token, "loadbalancer")
}

func newCutoverWorld(t *testing.T, token, cutover string) *killWorld {
	l := labtest.Start(t, lab.Config{Token: token})
	ctx := context.Background()
	sd := l.Seeder()
	srcID, srcIP, err := sd.Droplet(ctx, "web-1", "s-1vcpu-1gb", nil, map[string]string{"index.html": "<h1>shop</h1>\n"})
	if err != nil {
		t.Fatal(err)
	}
	lbID, lbIP, err := sd.LoadBalancer(ctx, "lb", []int{srcID})
	if err != nil {
		t.Fatal(err)
	}
	ripIP, err := sd.ReservedIP(ctx, srcID)
	if err != nil {
		t.Fatal(err)
	}
	if err := sd.Record(ctx, "shop.test", "www", srcIP, 30); err != nil {
		t.Fatal(err)
	}
	ep := l.Endpoints()
	// The lab's nameserver serves a change a moment after it is made.
	if err := authority.WaitServed(ctx, ep.DNS, "www.shop.test", "A", []string{srcIP}, 20*time.Millisecond, nil); err != nil {
		t.Fatal(err)
	}
	sw := plans.Swap{
		Source: plans.Source{Provider: "lab", Server: "web-1"}, Target: plans.Target{Size: "s-2vcpu-4gb"},
		Verify:  plans.Verify{HTTP: []verify.HTTPCheck{{URL: fmt.Sprintf("http://shop.test:%d/health", ep.HTTPPort), Status: 200}}, Compare: []string{"/"}},
		Observe: plans.Duration(time.Second),
		Retire:  plans.Retire{Action: "power_off", ShutdownTimeout: plans.Duration(5 * time.Second)},
	}
	switch cutover {
	case "loadbalancer":
		sw.Cutover.LoadBalancer = &plans.LBCutover{Provider: "lab", ID: lbID, IdentifyHeader: "X-Served-By", Drain: plans.Duration(300 * time.Millisecond)}
		sw.Probe = &plans.Probe{URL: fmt.Sprintf("http://%s:%d/", lbIP, ep.HTTPPort), Rate: 50}
	case "reserved_ip":
		sw.Cutover.ReservedIP = &plans.IPCutover{Provider: "lab", IP: ripIP, Drain: plans.Duration(300 * time.Millisecond)}
		sw.Probe = &plans.Probe{URL: fmt.Sprintf("http://%s:%d/", ripIP, ep.HTTPPort), Rate: 50}
	case "dns":
		sw.Cutover.DNS = &plans.DNSCutover{Provider: "lab", Record: "www.shop.test", Grace: plans.Duration(500 * time.Millisecond)}
		sw.Probe = &plans.Probe{URL: fmt.Sprintf("http://www.shop.test:%d/", ep.HTTPPort), Rate: 50, Resolver: ep.DNS}
	}
	p := &plans.Plan{Version: 1, ID: "kill", Providers: map[string]plans.Provider{"lab": {Type: "digitalocean", Endpoint: ep.DigitalOceanAPI, Nameserver: ep.DNS}},
		Swaps: []plans.Swap{sw}}
	w := &killWorld{l: l, srcID: srcID, srcIP: srcIP, lbID: lbID, lbIP: lbIP, ripIP: ripIP, cutover: cutover, plan: p,
		planFile: filepath.Join(t.TempDir(), "plan.yaml"), env: []string{"DIGITALOCEAN_TOKEN=" + ep.Token}}
	w.writePlan(t, w.planFile, p)
	return w
}

func (w *killWorld) writePlan(t *testing.T, file string, p *plans.Plan) {
	b, err := yaml.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// entry is the public entry point of the world's cutover, as a probe config.
func (w *killWorld) entry() probe.Config {
	sw := w.plan.Swaps[0]
	return probe.Config{URL: sw.Probe.URL, Rate: 50, Resolver: sw.Probe.Resolver}
}

// serving returns the droplet ID the cutover's entry point leads to.
func (w *killWorld) serving(t *testing.T) []int {
	inv := w.l.Inventory()
	switch w.cutover {
	case "loadbalancer":
		return inv.LBs[0].Droplets
	case "reserved_ip":
		return []int{inv.ReservedIPs[w.ripIP]}
	}
	var out []int
	for _, ip := range strings.Split(inv.Records["www.shop.test A"], ",") {
		for _, d := range inv.Droplets {
			if d.IP == strings.TrimSpace(ip) {
				out = append(out, d.ID)
			}
		}
	}
	return out
}

// checkpoints counts the journal writes and API mutations of a clean run.
// checkpoints runs a clean apply and counts its journal writes and its
// successful API mutations (what VMSWAP_CRASH_AT counts), and returns the
// ordinal of the first call of op among those (0 if none).
func checkpoints(t *testing.T, cutover, op string) (journal, api, first int) {
	w := newCutoverWorld(t, "", cutover)
	before := len(w.l.Requests())
	r := vmswap(t, w.env, "apply", "--poll", "50ms", w.planFile)
	if r.code != 0 {
		t.Fatalf("clean run: exit %d: %s", r.code, r.stderr)
	}
	j, err := runner.LoadJournal(runner.JournalPath(w.planFile))
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range w.l.Requests()[before:] {
		if q.Mutating() && q.API == "digitalocean" && q.Status < 300 {
			api++
			if q.Operation == op && first == 0 {
				first = api
			}
		}
	}
	return j.Seq, api, first
}

// TestKillMatrix kills `vmswap apply` with SIGKILL after each journal write
// and after each API mutation in turn, then applies again. Every time, the
// swap completes, the cloud saw exactly one new droplet and one snapshot,
// nothing is orphaned, traffic through the entry point never failed, and
// the entry point leads to the new droplet. The load-balancer plan is
// killed at every point; the reserved-IP plan after every API mutation
// from its cutover call on (the steps before it are the load balancer's),
// the DNS plan after its record change and the two calls after it (a DNS
// point costs the record's 30 s TTL twice).
func TestKillMatrix(t *testing.T) {
	for _, cutover := range []string{"loadbalancer", "reserved_ip", "dns"} {
		t.Run(cutover, func(t *testing.T) {
			op := map[string]string{"loadbalancer": "", "reserved_ip": "reservedIPsActions_post", "dns": "domains_update_record"}[cutover]
			nj, na, first := checkpoints(t, cutover, op)
			var points []string
			if cutover == "loadbalancer" {
				first = 1
				for i := 1; i <= nj; i++ {
					points = append(points, "journal:"+strconv.Itoa(i))
				}
			} else if first == 0 {
				t.Fatalf("the clean run never called %s", op)
			}
			last := na
			if cutover == "dns" {
				// The record's change and the two calls after it: each DNS
				// point holds the record's 30 s TTL, twice.
				last = min(na, first+2)
			}
			for i := first; i <= last; i++ {
				points = append(points, "api:"+strconv.Itoa(i))
			}
			t.Logf("%s: kill points: %d of %d journal writes + %d API mutations", cutover, len(points)-na, nj, na)
			for _, pt := range points {
				t.Run(pt, func(t *testing.T) {
					t.Parallel()
					killAndResume(t, newCutoverWorld(t, "", cutover), pt)
				})
			}
		})
	}
}

func killAndResume(t *testing.T, w *killWorld, pt string) {
	ext, err := probe.Start(w.entry())
	if err != nil {
		t.Fatal(err)
	}
	first := vmswap(t, append(w.env, "VMSWAP_CRASH_AT="+pt), "apply", "--poll", "50ms", w.planFile)
	if first.code != -1 {
		t.Fatalf("run with crash at %s was not killed: exit %d\n%s", pt, first.code, first.stderr)
	}
	// The killed run's lock died with it: status says so, and the next
	// apply takes it over with no --break-lock.
	if st := vmswap(t, w.env, "status", w.planFile); !strings.Contains(st.stdout, "no longer running") {
		t.Fatalf("status after the kill: exit %d\n%s%s", st.code, st.stdout, st.stderr)
	}
	second := vmswap(t, w.env, "apply", "--poll", "50ms", w.planFile)
	sum := ext.Stop()
	inv := w.l.Inventory()
	acts := w.l.ActionCounts()
	creates := w.l.OperationCounts()["droplets_create"] - 1 // web-1's seeding
	leftovers := len(inv.Snapshots)
	var newDroplets, newID int
	for _, d := range inv.Droplets {
		if d.ID != w.srcID {
			newDroplets++
			newID = d.ID
		}
	}
	fmt.Printf("kill %-12s at %-10s -> resumed: exit %d; droplets created %d, snapshots taken %d; failed requests %d of %d; leftovers %d\n",
		w.cutover, pt, second.code, creates, acts["snapshot"], sum.Failed, sum.Requests, leftovers+newDroplets-1)
	if second.code != 0 {
		t.Fatalf("resume after kill at %s: exit %d\n%s", pt, second.code, second.stderr)
	}
	if creates != 1 || acts["snapshot"] != 1 || newDroplets != 1 || leftovers != 0 {
		t.Fatalf("after kill at %s: %d creates, %d snapshots, inventory %+v", pt, creates, acts["snapshot"], inv)
	}
	if got := w.serving(t); len(got) != 1 || got[0] != newID {
		t.Fatalf("after kill at %s: the entry point leads to %v, want the new droplet %d", pt, got, newID)
	}
	// The names moved, whatever the kill interrupted: the server is still
	// web-1, and the retired one is web-1-retired-RUN.
	for _, d := range inv.Droplets {
		if d.ID == newID && d.Name != "web-1" || d.ID == w.srcID && !strings.HasPrefix(d.Name, "web-1-retired-") {
			t.Fatalf("after kill at %s: droplet %d is named %q", pt, d.ID, d.Name)
		}
	}
	for _, d := range inv.Droplets {
		for _, tag := range d.Tags {
			if strings.HasPrefix(tag, "vmswap-claim:") {
				t.Fatalf("after kill at %s: droplet %s still carries %s", pt, d.Name, tag)
			}
		}
	}
	if sum.Failed != 0 {
		t.Fatalf("after kill at %s: %d of %d requests failed: %v", pt, sum.Failed, sum.Requests, sum.Errors)
	}
}
