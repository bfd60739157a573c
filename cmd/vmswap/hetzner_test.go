package main_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hetznercloud/hcloud-go/v2/hcloud"

	"github.com/vmswap/vmswap/dns/authority"
	"github.com/vmswap/vmswap/lab"
	"github.com/vmswap/vmswap/lab/labtest"
	"github.com/vmswap/vmswap/plans"
	"github.com/vmswap/vmswap/plans/runner"
	"github.com/vmswap/vmswap/verify"
	"github.com/vmswap/vmswap/verify/probe"
)

// hzWorld is a lab (in this process, so it outlives a killed binary) with
// the Hetzner server web-1 behind a load balancer, a floating IP and an A
// record in a Hetzner zone, and a plan to swap it through one of them.
type hzWorld struct {
	l        *lab.Lab
	c        *hcloud.Client
	srcID    int64
	srcIP    string
	lbID     int64
	fip      string
	cutover  string
	planFile string
	env      []string
	plan     *plans.Plan
}

func newHetznerWorld(t *testing.T, cutover string) *hzWorld {
	l := labtest.Start(t, lab.Config{})
	ctx := context.Background()
	sd := l.Seeder()
	srcID, srcIP, err := sd.HetznerServer(ctx, "web-1", "cx22", map[string]string{"role": "web"}, map[string]string{"index.html": "<h1>shop</h1>\n"})
	if err != nil {
		t.Fatal(err)
	}
	lbID, lbIP, err := sd.HetznerLoadBalancer(ctx, "lb", []int64{srcID}, "/health")
	if err != nil {
		t.Fatal(err)
	}
	_, fip, err := sd.HetznerFloatingIP(ctx, srcID)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sd.HetznerZone(ctx, "shop.test", 300); err != nil {
		t.Fatal(err)
	}
	if err := sd.HetznerRecord(ctx, "shop.test", "www", "A", []string{srcIP}, 60); err != nil { // Hetzner's shortest TTL
		t.Fatal(err)
	}
	ep := l.Endpoints()
	if err := authority.WaitServed(ctx, ep.DNS, "www.shop.test", "A", []string{srcIP}, 20*time.Millisecond, nil); err != nil {
		t.Fatal(err)
	}
	sw := plans.Swap{
		Source: plans.Source{Provider: "hz", Server: "web-1"}, Target: plans.Target{Size: "cx32"},
		Verify:  plans.Verify{HTTP: []verify.HTTPCheck{{URL: fmt.Sprintf("http://shop.test:%d/health", ep.HTTPPort), Status: 200}}, Compare: []string{"/"}},
		Observe: plans.Duration(time.Second),
		Retire:  plans.Retire{Action: "power_off", ShutdownTimeout: plans.Duration(5 * time.Second)},
	}
	switch cutover {
	case "loadbalancer":
		sw.Cutover.LoadBalancer = &plans.LBCutover{Provider: "hz", ID: strconv.FormatInt(lbID, 10), Drain: plans.Duration(300 * time.Millisecond)}
		sw.Probe = &plans.Probe{URL: fmt.Sprintf("http://%s:%d/", lbIP, ep.HTTPPort), Rate: 50}
	case "floating_ip":
		sw.Cutover.ReservedIP = &plans.IPCutover{Provider: "hz", IP: fip, Drain: plans.Duration(300 * time.Millisecond)}
		sw.Probe = &plans.Probe{URL: fmt.Sprintf("http://%s:%d/", fip, ep.HTTPPort), Rate: 50}
	case "dns":
		sw.Cutover.DNS = &plans.DNSCutover{Provider: "hz", Record: "www.shop.test", Grace: plans.Duration(500 * time.Millisecond)}
		sw.Probe = &plans.Probe{URL: fmt.Sprintf("http://www.shop.test:%d/", ep.HTTPPort), Rate: 50, Resolver: ep.DNS}
	}
	p := &plans.Plan{Version: 1, ID: "hzkill", Providers: map[string]plans.Provider{"hz": {Type: "hetzner", Endpoint: ep.HetznerAPI, Nameserver: ep.DNS}},
		Swaps: []plans.Swap{sw}}
	w := &hzWorld{l: l, srcID: srcID, srcIP: srcIP, lbID: lbID, fip: fip, cutover: cutover, plan: p,
		c:        hcloud.NewClient(hcloud.WithEndpoint(ep.HetznerAPI), hcloud.WithToken(ep.Token)),
		planFile: filepath.Join(t.TempDir(), "plan.yaml"), env: []string{"HCLOUD_TOKEN=" + ep.Token}}
	(&killWorld{}).writePlan(t, w.planFile, p)
	return w
}

func (w *hzWorld) entry() probe.Config {
	sw := w.plan.Swaps[0]
	return probe.Config{URL: sw.Probe.URL, Rate: 50, Resolver: sw.Probe.Resolver}
}

// serving returns the IDs of the servers the cutover's entry point leads
// to, as the Hetzner API reports it.
func (w *hzWorld) serving(t *testing.T) []int64 {
	ctx := context.Background()
	var out []int64
	switch w.cutover {
	case "loadbalancer":
		lb, _, err := w.c.LoadBalancer.GetByID(ctx, w.lbID)
		if err != nil {
			t.Fatal(err)
		}
		for _, tg := range lb.Targets {
			if tg.Server != nil && tg.Server.Server != nil {
				out = append(out, tg.Server.Server.ID)
			}
		}
	case "floating_ip":
		fips, err := w.c.FloatingIP.All(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range fips {
			if f.IP.String() == w.fip && f.Server != nil {
				out = append(out, f.Server.ID)
			}
		}
	case "dns":
		ips, _, err := authority.Lookup(ctx, w.l.Endpoints().DNS, "www.shop.test", "A")
		if err != nil {
			t.Fatal(err)
		}
		servers, err := w.c.Server.All(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range servers {
			if slices.Contains(ips, s.PublicNet.IPv4.IP.String()) {
				out = append(out, s.ID)
			}
		}
	}
	return out
}

// check asserts what a finished swap leaves in the Hetzner project: one
// new server, from one snapshot, serving the entry point as web-1, the old
// one off and renamed, no claim left, nothing failed.
func (w *hzWorld) check(t *testing.T, when string, sum probe.Summary) {
	t.Helper()
	ctx := context.Background()
	servers, err := w.c.Server.All(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ops := map[string]int{} // calls the lab carried out: a 429 made nothing
	for _, q := range w.l.Requests() {
		if q.API == "hetzner" && q.Status < 300 {
			ops[q.Operation]++
		}
	}
	var nw *hcloud.Server
	for _, s := range servers {
		if s.ID != w.srcID {
			if nw != nil {
				t.Fatalf("%s: two new servers: %s and %s", when, nw.Name, s.Name)
			}
			nw = s
		}
		for k := range s.Labels {
			if strings.HasPrefix(k, "vmswap-claim") {
				t.Fatalf("%s: server %s still carries the claim %s", when, s.Name, k)
			}
		}
	}
	if creates := ops["create_server"] - hetznerSeedServers; nw == nil || creates != 1 || ops["create_image_from_server"] != 1 {
		t.Fatalf("%s: create_server %d times, create_image %d times, new server %v", when, creates, ops["create_image_from_server"], nw)
	}
	if nw.Name != "web-1" || nw.ServerType.Name != "cx32" || nw.Status != hcloud.ServerStatusRunning {
		t.Fatalf("%s: new server %s %s %s", when, nw.Name, nw.ServerType.Name, nw.Status)
	}
	if got := w.serving(t); len(got) != 1 || got[0] != nw.ID {
		t.Fatalf("%s: the entry point leads to %v, want the new server %d", when, got, nw.ID)
	}
	old, _, err := w.c.Server.GetByID(ctx, w.srcID)
	if err != nil || old.Status != hcloud.ServerStatusOff || !strings.HasPrefix(old.Name, "web-1-retired-") {
		t.Fatalf("%s: old server %+v %v", when, old, err)
	}
	if sum.Failed != 0 || sum.Requests < 50 {
		t.Fatalf("%s: %d of %d requests failed: %v", when, sum.Failed, sum.Requests, sum.Errors)
	}
}

// hetznerSeedServers is how many create_server calls newHetznerWorld's
// seeding makes.
const hetznerSeedServers = 1

// TestHetznerSwaps upgrades web-1 from cx22 to cx32 through each Hetzner
// cutover with a probe on the entry point: every swap succeeds, the entry
// point leads to the new server, and no request fails.
func TestHetznerSwaps(t *testing.T) {
	t.Parallel()
	for _, cutover := range []string{"loadbalancer", "floating_ip", "dns"} {
		t.Run(cutover, func(t *testing.T) {
			t.Parallel()
			w := newHetznerWorld(t, cutover)
			pb, err := probe.Start(w.entry())
			if err != nil {
				t.Fatal(err)
			}
			r := vmswap(t, w.env, "apply", "--poll", "50ms", w.planFile)
			sum := pb.Stop()
			if r.code != 0 {
				t.Fatalf("exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
			}
			fmt.Printf("hetzner %-12s swap: %d requests, %d failed\n", cutover, sum.Requests, sum.Failed)
			w.check(t, cutover, sum)
		})
	}
}

// TestHetznerKillMatrix kills `vmswap apply` of the Hetzner load-balancer
// plan with SIGKILL after each of its Hetzner API mutations in turn, then
// applies again: every time the swap completes with one new server from
// one snapshot, the load balancer targets only it, no claim is left, and
// no request through the load balancer failed.
func TestHetznerKillMatrix(t *testing.T) {
	t.Parallel()
	w := newHetznerWorld(t, "loadbalancer")
	before := len(w.l.Requests())
	if r := vmswap(t, w.env, "apply", "--poll", "50ms", w.planFile); r.code != 0 {
		t.Fatalf("clean run: exit %d: %s", r.code, r.stderr)
	}
	var muts []string
	for _, q := range w.l.Requests()[before:] {
		if q.Mutating() && q.API == "hetzner" && q.Status < 300 {
			muts = append(muts, q.Operation)
		}
	}
	if len(muts) < 6 {
		t.Fatalf("the clean run made %d Hetzner mutations: %v", len(muts), muts)
	}
	t.Logf("kill points: %d API mutations: %s", len(muts), strings.Join(muts, " "))
	for i := 1; i <= len(muts); i++ {
		pt := "api:" + strconv.Itoa(i)
		t.Run(pt+"-"+muts[i-1], func(t *testing.T) {
			t.Parallel()
			w := newHetznerWorld(t, "loadbalancer")
			ext, err := probe.Start(w.entry())
			if err != nil {
				t.Fatal(err)
			}
			first := vmswap(t, append(w.env, "VMSWAP_CRASH_AT="+pt), "apply", "--poll", "50ms", w.planFile)
			if first.code != -1 {
				t.Fatalf("run with crash at %s was not killed: exit %d\n%s", pt, first.code, first.stderr)
			}
			second := vmswap(t, w.env, "apply", "--poll", "50ms", w.planFile)
			sum := ext.Stop()
			fmt.Printf("kill hetzner loadbalancer at %-8s (%s) -> resumed: exit %d; failed requests %d of %d\n", pt, muts[i-1], second.code, sum.Failed, sum.Requests)
			if second.code != 0 {
				t.Fatalf("resume after kill at %s: exit %d\n%s", pt, second.code, second.stderr)
			}
			w.check(t, "after kill at "+pt, sum)
		})
	}
}

// TestHetznerUnhealthyTarget: the load balancer never finds the new server
// healthy, so web-1 never leaves the pool: the swap rolls back, the new
// server is gone, the pool is web-1 alone, and no request failed.
func TestHetznerUnhealthyTarget(t *testing.T) {
	t.Parallel()
	w := newHetznerWorld(t, "loadbalancer")
	w.plan.Swaps[0].ReadyTimeout = plans.Duration(5 * time.Second)
	(&killWorld{}).writePlan(t, w.planFile, w.plan)
	if err := w.l.Inject(lab.Fault{Kind: lab.FaultLBIgnoreNew}); err != nil {
		t.Fatal(err)
	}
	pb, err := probe.Start(w.entry())
	if err != nil {
		t.Fatal(err)
	}
	r := vmswap(t, w.env, "apply", "--poll", "50ms", w.planFile)
	sum := pb.Stop()
	if r.code == 0 || !strings.Contains(r.stderr+r.stdout, "rolled back") {
		t.Fatalf("exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	if got := w.serving(t); len(got) != 1 || got[0] != w.srcID {
		t.Fatalf("after the rollback the load balancer targets %v, want web-1 (%d) alone", got, w.srcID)
	}
	servers, err := w.c.Server.All(context.Background())
	if err != nil || len(servers) != 1 || servers[0].Status != hcloud.ServerStatusRunning {
		t.Fatalf("after the rollback: %d servers (%v)", len(servers), err)
	}
	if sum.Failed != 0 || sum.Requests == 0 {
		t.Fatalf("%d of %d requests failed: %v", sum.Failed, sum.Requests, sum.Errors)
	}
	fmt.Printf("hetzner unhealthy new target: rolled back, %d requests, %d failed\n", sum.Requests, sum.Failed)
}

// TestHetznerFaults runs the lab's faults against the Hetzner plan: each
// that stops the swap rolls it back with web-1 serving as before, nothing
// the run made left behind and no failed request; a rate limit is waited
// out and the swap succeeds.
func TestHetznerFaults(t *testing.T) {
	t.Parallel()
	tests := []struct {
		desc    string
		cutover string
		fault   lab.Fault
		timeout time.Duration
		cause   string // "" for a swap that succeeds
	}{
		{desc: "snapshot action fails", cutover: "loadbalancer", fault: lab.Fault{Kind: lab.FaultActionErrored, Operation: "create_image"}, cause: "snapshot failed"},
		{desc: "new server never runs", cutover: "floating_ip", fault: lab.Fault{Kind: lab.FaultNeverActive}, timeout: 3 * time.Second, cause: "ready failed"},
		{desc: "new server answers 500", cutover: "floating_ip", fault: lab.Fault{Kind: lab.FaultServe500}, cause: "verify failed"},
		{desc: "add_target refused", cutover: "loadbalancer", fault: lab.Fault{Kind: lab.FaultHTTPError, Operation: "add_target", Status: 503, Count: 10}, cause: "cutover failed"},
		{desc: "set_records refused", cutover: "dns", fault: lab.Fault{Kind: lab.FaultHTTPError, Operation: "set_records_of_rrset", Status: 422, Count: 10}, cause: "cutover failed"},
		{desc: "remove_target answered 500 once", cutover: "loadbalancer", fault: lab.Fault{Kind: lab.FaultHTTPError, Operation: "remove_target", Status: 500}},
		{desc: "assign answered 500 after doing it", cutover: "floating_ip", fault: lab.Fault{Kind: lab.FaultDropAfterCommit, Operation: "assign_floating_ip_to_server"}},
		{desc: "rate limited", cutover: "loadbalancer", fault: lab.Fault{Kind: lab.FaultRateLimit, Operation: "create_server", RetryAfter: time.Second, Count: 2}},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			t.Parallel()
			w := newHetznerWorld(t, tt.cutover)
			if tt.timeout > 0 {
				w.plan.Swaps[0].ReadyTimeout = plans.Duration(tt.timeout)
				(&killWorld{}).writePlan(t, w.planFile, w.plan)
			}
			if err := w.l.Inject(tt.fault); err != nil {
				t.Fatal(err)
			}
			pb, err := probe.Start(w.entry())
			if err != nil {
				t.Fatal(err)
			}
			r := vmswap(t, w.env, "apply", "--poll", "50ms", w.planFile)
			sum := pb.Stop()
			fmt.Printf("hetzner fault %-22s -> exit %d; %d requests, %d failed\n", tt.desc, r.code, sum.Requests, sum.Failed)
			if tt.cause == "" {
				if r.code != 0 {
					t.Fatalf("exit %d\n%s", r.code, r.stderr)
				}
				w.check(t, tt.desc, sum)
				return
			}
			if r.code != int(runner.ExitRolledBack) || !strings.Contains(r.stderr, tt.cause) || !strings.Contains(r.stderr, "rolled back") {
				t.Fatalf("exit %d, want %d naming %q\n%s", r.code, runner.ExitRolledBack, tt.cause, r.stderr)
			}
			if got := w.serving(t); len(got) != 1 || got[0] != w.srcID {
				t.Fatalf("after the rollback the entry point leads to %v, want web-1 (%d)", got, w.srcID)
			}
			ctx := context.Background()
			servers, err := w.c.Server.All(ctx)
			if err != nil {
				t.Fatal(err)
			}
			imgs, err := w.c.Image.AllWithOpts(ctx, hcloud.ImageListOpts{Type: []hcloud.ImageType{hcloud.ImageTypeSnapshot}})
			if err != nil {
				t.Fatal(err)
			}
			if len(servers) != 1 || servers[0].Status != hcloud.ServerStatusRunning || servers[0].Name != "web-1" || len(imgs) != 0 {
				t.Fatalf("after the rollback: %d servers (%s %s), %d snapshots", len(servers), servers[0].Name, servers[0].Status, len(imgs))
			}
			for k := range servers[0].Labels {
				if strings.HasPrefix(k, "vmswap-claim") {
					t.Fatalf("web-1 still carries the claim %s", k)
				}
			}
			if sum.Failed != 0 || sum.Requests == 0 {
				t.Fatalf("%d of %d requests failed: %v", sum.Failed, sum.Requests, sum.Errors)
			}
		})
	}
}

// TestHetznerFleetByLabel upgrades the three servers labelled role=web
// behind a Hetzner load balancer whose target is that label selector:
// `vmswap plan --provider hetzner --tag role=web` writes one swap for
// each, and apply runs them in waves (a canary, then two at once). Each
// new server joins the pool by getting the label, each old one leaves by
// losing it, and no request through the load balancer fails.
func TestHetznerFleetByLabel(t *testing.T) {
	t.Parallel()
	l := labtest.Start(t, lab.Config{})
	ctx := context.Background()
	ep := l.Endpoints()
	c := hcloud.NewClient(hcloud.WithEndpoint(ep.HetznerAPI), hcloud.WithToken(ep.Token), hcloud.WithPollOpts(hcloud.PollOpts{BackoffFunc: hcloud.ConstantBackoff(50 * time.Millisecond)}))
	var old []int64
	for i := 1; i <= 3; i++ {
		id, _, err := l.Seeder().HetznerServer(ctx, fmt.Sprintf("web-%d", i), "cx22", map[string]string{"role": "web"}, map[string]string{"index.html": "<h1>shop</h1>\n"})
		if err != nil {
			t.Fatal(err)
		}
		old = append(old, id)
	}
	res, _, err := c.LoadBalancer.Create(ctx, hcloud.LoadBalancerCreateOpts{
		Name: "web", LoadBalancerType: &hcloud.LoadBalancerType{Name: "lb11"}, Location: &hcloud.Location{Name: "fsn1"},
		Services: []hcloud.LoadBalancerCreateOptsService{{
			Protocol: hcloud.LoadBalancerServiceProtocolHTTP, ListenPort: hcloud.Ptr(ep.HTTPPort), DestinationPort: hcloud.Ptr(ep.HTTPPort), Proxyprotocol: hcloud.Ptr(false),
			HealthCheck: &hcloud.LoadBalancerCreateOptsServiceHealthCheck{Protocol: hcloud.LoadBalancerServiceProtocolHTTP, Port: hcloud.Ptr(ep.HTTPPort),
				Interval: hcloud.Ptr(time.Second), Timeout: hcloud.Ptr(time.Second), Retries: hcloud.Ptr(2),
				HTTP: &hcloud.LoadBalancerCreateOptsServiceHealthCheckHTTP{Path: hcloud.Ptr("/health"), Domain: hcloud.Ptr("")}},
		}},
		Targets: []hcloud.LoadBalancerCreateOptsTarget{{Type: hcloud.LoadBalancerTargetTypeLabelSelector, LabelSelector: hcloud.LoadBalancerCreateOptsTargetLabelSelector{Selector: "role=web"}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Action.WaitFor(ctx, res.Action); err != nil {
		t.Fatal(err)
	}
	lbIP := res.LoadBalancer.PublicNet.IPv4.IP.String()
	routed := func() (ids []int64, types []string) {
		lb, _, err := c.LoadBalancer.GetByID(ctx, res.LoadBalancer.ID)
		if err != nil {
			t.Fatal(err)
		}
		for _, tg := range lb.Targets {
			for _, x := range tg.Targets {
				if x.Server != nil && x.Server.Server != nil {
					s, _, err := c.Server.GetByID(ctx, x.Server.Server.ID)
					if err != nil {
						t.Fatal(err)
					}
					ids, types = append(ids, s.ID), append(types, s.ServerType.Name)
				}
			}
		}
		return ids, types
	}
	for start := time.Now(); ; time.Sleep(50 * time.Millisecond) {
		if len(l.HetznerHealthy(res.LoadBalancer.ID, ep.HTTPPort)) == 3 {
			break
		}
		if time.Since(start) > 20*time.Second {
			t.Fatal("the load balancer never found the three servers healthy")
		}
	}
	env := []string{"HCLOUD_TOKEN=" + ep.Token}
	file := filepath.Join(t.TempDir(), "fleet.yaml")
	must(t, vmswap(t, env, "plan", "--provider", "hetzner", "--endpoint", ep.HetznerAPI, "--tag", "role=web", "--size", "cx32",
		"--lb", strconv.FormatInt(res.LoadBalancer.ID, 10), "--drain", "300ms", "--observe", "1s", "--http", fmt.Sprintf("http://shop.test:%d/health", ep.HTTPPort),
		"--probe-url", fmt.Sprintf("http://%s:%d/", lbIP, ep.HTTPPort), "--probe-rate", "30", "--max-parallel", "2", "--canary", "1", "-o", file), 0)
	doc, err := plans.Load(file)
	if err != nil || len(doc.Plan.Swaps) != 3 {
		t.Fatalf("the plan has %d swaps (%v)", len(doc.Plan.Swaps), err)
	}
	pb, err := probe.Start(probe.Config{URL: fmt.Sprintf("http://%s:%d/", lbIP, ep.HTTPPort), Rate: 50})
	if err != nil {
		t.Fatal(err)
	}
	r := vmswap(t, env, "apply", "--poll", "50ms", file)
	sum := pb.Stop()
	fmt.Printf("hetzner fleet by label: exit %d; %d requests through the load balancer, %d failed\n", r.code, sum.Requests, sum.Failed)
	if r.code != 0 {
		t.Fatalf("exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	ids, types := routed()
	if len(ids) != 3 || slices.ContainsFunc(ids, func(id int64) bool { return slices.Contains(old, id) }) || slices.ContainsFunc(types, func(s string) bool { return s != "cx32" }) {
		t.Fatalf("the pool is %v (%v); the old servers were %v", ids, types, old)
	}
	for _, id := range old {
		s, _, err := c.Server.GetByID(ctx, id)
		if err != nil || s.Status != hcloud.ServerStatusOff || s.Labels["role"] != "" {
			t.Fatalf("old server %d: %+v %v", id, s, err)
		}
	}
	if sum.Failed != 0 || sum.Requests == 0 {
		t.Fatalf("%d of %d requests failed: %v", sum.Failed, sum.Requests, sum.Errors)
	}
}

// TestSomeoneElsesChangeIsLeftAlone: what someone else changes on the
// entry point while a run waits at its gate, or after it finished, is
// never undone by vmswap. Moved while paused before the cutover: apply
// --continue refuses and rolls back without touching it. Moved after the
// swap: rollback leaves it and says so (exit 3).
func TestSomeoneElsesChangeIsLeftAlone(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	other := func(t *testing.T, w *hzWorld) int64 {
		id, _, err := w.l.Seeder().HetznerServer(ctx, "web-9", "cx22", nil, map[string]string{"index.html": "<h1>other</h1>\n"})
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	moveIP := func(t *testing.T, w *hzWorld, to int64) {
		fips, err := w.c.FloatingIP.All(ctx)
		if err != nil || len(fips) != 1 {
			t.Fatalf("floating IPs %v %v", fips, err)
		}
		a, _, err := w.c.FloatingIP.Assign(ctx, fips[0], &hcloud.Server{ID: to})
		if err == nil {
			err = w.c.Action.WaitFor(ctx, a)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	gated := func(t *testing.T, w *hzWorld) {
		w.plan.Swaps[0].Gates = []string{"before_cutover"}
		(&killWorld{}).writePlan(t, w.planFile, w.plan)
		must(t, vmswap(t, w.env, "apply", "--poll", "50ms", w.planFile), 4)
	}
	t.Run("floating IP moved at the gate", func(t *testing.T) {
		t.Parallel()
		w := newHetznerWorld(t, "floating_ip")
		o := other(t, w)
		gated(t, w)
		moveIP(t, w, o)
		must(t, vmswap(t, w.env, "apply", "--continue", "--poll", "50ms", w.planFile), 1, "someone moved it", "rolled back")
		if got := w.serving(t); len(got) != 1 || got[0] != o {
			t.Fatalf("the floating IP points at %v, want web-9 (%d) where it was moved", got, o)
		}
	})
	t.Run("source taken out of the load balancer at the gate", func(t *testing.T) {
		t.Parallel()
		w := newHetznerWorld(t, "loadbalancer")
		o := other(t, w)
		gated(t, w)
		lb := &hcloud.LoadBalancer{ID: w.lbID}
		a, _, err := w.c.LoadBalancer.AddServerTarget(ctx, lb, hcloud.LoadBalancerAddServerTargetOpts{Server: &hcloud.Server{ID: o}})
		if err == nil {
			err = w.c.Action.WaitFor(ctx, a)
		}
		if err == nil {
			a, _, err = w.c.LoadBalancer.RemoveServerTarget(ctx, lb, &hcloud.Server{ID: w.srcID})
		}
		if err == nil {
			err = w.c.Action.WaitFor(ctx, a)
		}
		if err != nil {
			t.Fatal(err)
		}
		must(t, vmswap(t, w.env, "apply", "--continue", "--poll", "50ms", w.planFile), 1, "no longer routes to web-1", "rolled back")
		if got := w.serving(t); len(got) != 1 || got[0] != o {
			t.Fatalf("the load balancer targets %v, want web-9 (%d) alone, as it was left", got, o)
		}
	})
	t.Run("floating IP moved after the swap", func(t *testing.T) {
		t.Parallel()
		w := newHetznerWorld(t, "floating_ip")
		o := other(t, w)
		must(t, vmswap(t, w.env, "apply", "--poll", "50ms", w.planFile), 0)
		moveIP(t, w, o)
		must(t, vmswap(t, w.env, "rollback", "--yes", "--poll", "50ms", w.planFile), runner.ExitBadInput, "nothing was changed", "someone moved it")
		if got := w.serving(t); len(got) != 1 || got[0] != o {
			t.Fatalf("the floating IP points at %v, want web-9 (%d) where it was moved", got, o)
		}
	})
	t.Run("record rewritten after the swap", func(t *testing.T) {
		t.Parallel()
		w := newHetznerWorld(t, "dns")
		must(t, vmswap(t, w.env, "apply", "--poll", "50ms", w.planFile), 0)
		if err := w.l.Seeder().HetznerRecord(ctx, "shop.test", "www", "A", []string{"127.0.0.99"}, 60); err != nil {
			t.Fatal(err)
		}
		must(t, vmswap(t, w.env, "rollback", "--yes", "--poll", "50ms", w.planFile), runner.ExitBadInput, "nothing was changed", "someone changed it")
		ips, _, err := authority.Lookup(ctx, w.l.Endpoints().DNS, "www.shop.test", "A")
		if err != nil || len(ips) != 1 || ips[0] != "127.0.0.99" {
			t.Fatalf("www.shop.test A is %v (%v), want the other person's 127.0.0.99 alone", ips, err)
		}
	})
}

// TestAAAAOfTheSourcesNetwork: a dual-stack name whose AAAA is an address
// of the source's /64 other than ::1 (the address vmswap moves) is refused
// before anything is made: it would go on pointing at the old server.
func TestAAAAOfTheSourcesNetwork(t *testing.T) {
	t.Parallel()
	w := newHetznerWorld(t, "dns")
	ctx := context.Background()
	src, _, err := w.c.Server.GetByID(ctx, w.srcID)
	if err != nil || src.PublicNet.IPv6.Network == nil {
		t.Fatalf("source %+v %v", src, err)
	}
	beef := slices.Clone(src.PublicNet.IPv6.Network.IP.To16())
	beef[14], beef[15] = 0xbe, 0xef
	if err := w.l.Seeder().HetznerRecord(ctx, "shop.test", "www", "AAAA", []string{beef.String()}, 60); err != nil {
		t.Fatal(err)
	}
	must(t, vmswap(t, w.env, "apply", "--poll", "50ms", w.planFile), 2, "AAAA holds "+beef.String(), "other than")
	if n := len(w.serving(t)); n != 1 {
		t.Fatalf("the record leads to %d servers", n)
	}
	if servers, _ := w.c.Server.All(ctx); len(servers) != 1 {
		t.Fatalf("%d servers after a refused apply", len(servers))
	}
}

// TestTrafficPutBackIsRespected: more of what someone else does to the
// entry point, caught before it costs traffic. The source put back into
// the pool while it drains is not powered off; a dual-stack record edited
// at the gate is refused before either family moves; a pool that lost the
// new server after the swap is not refilled with the old one by rollback;
// a load balancer selecting the source by a selector vmswap cannot keep a
// new server out of refuses the swap before anything is made.
func TestTrafficPutBackIsRespected(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	targets := func(t *testing.T, w *hzWorld) []int64 { return w.serving(t) }
	lbChange := func(t *testing.T, w *hzWorld, add bool, id int64) {
		lb := &hcloud.LoadBalancer{ID: w.lbID}
		var a *hcloud.Action
		var err error
		if add {
			a, _, err = w.c.LoadBalancer.AddServerTarget(ctx, lb, hcloud.LoadBalancerAddServerTargetOpts{Server: &hcloud.Server{ID: id}})
		} else {
			a, _, err = w.c.LoadBalancer.RemoveServerTarget(ctx, lb, &hcloud.Server{ID: id})
		}
		if err == nil {
			err = w.c.Action.WaitFor(ctx, a)
		}
		if err != nil {
			t.Error(err)
		}
	}
	t.Run("source put back while it drains", func(t *testing.T) {
		t.Parallel()
		w := newHetznerWorld(t, "loadbalancer")
		w.plan.Swaps[0].Cutover.LoadBalancer.Drain = plans.Duration(4 * time.Second)
		(&killWorld{}).writePlan(t, w.planFile, w.plan)
		done := make(chan struct{})
		go func() {
			defer close(done)
			for start := time.Now(); time.Since(start) < time.Minute; time.Sleep(50 * time.Millisecond) {
				if got := targets(t, w); len(got) == 1 && got[0] != w.srcID {
					lbChange(t, w, true, w.srcID) // the source is out: put it back
					return
				}
			}
		}()
		r := vmswap(t, w.env, "apply", "--poll", "50ms", w.planFile)
		<-done
		if r.code == 0 {
			t.Fatalf("apply succeeded although web-1 was put back into the pool while it drained\n%s", r.stderr)
		}
		src, _, err := w.c.Server.GetByID(ctx, w.srcID)
		if err != nil || src.Status != hcloud.ServerStatusRunning {
			t.Fatalf("web-1 is %v (%v): powered off under the traffic put back on it", src.Status, err)
		}
	})
	t.Run("AAAA edited at the gate", func(t *testing.T) {
		t.Parallel()
		w := newHetznerWorld(t, "dns")
		src, _, err := w.c.Server.GetByID(ctx, w.srcID)
		if err != nil {
			t.Fatal(err)
		}
		one := slices.Clone(src.PublicNet.IPv6.Network.IP.To16())
		one[15] |= 1
		if err := w.l.Seeder().HetznerRecord(ctx, "shop.test", "www", "AAAA", []string{one.String()}, 60); err != nil {
			t.Fatal(err)
		}
		w.plan.Swaps[0].Gates = []string{"before_cutover"}
		(&killWorld{}).writePlan(t, w.planFile, w.plan)
		must(t, vmswap(t, w.env, "apply", "--poll", "50ms", w.planFile), 4)
		if err := w.l.Seeder().HetznerRecord(ctx, "shop.test", "www", "AAAA", []string{"2001:db8:ffff::5"}, 60); err != nil {
			t.Fatal(err)
		}
		r := vmswap(t, w.env, "apply", "--continue", "--poll", "50ms", w.planFile)
		must(t, r, 1, "someone else changed www.shop.test AAAA", "rolled back")
		if strings.Contains(r.stderr+r.stdout, "pointing www.shop.test A at") {
			t.Fatalf("the A set was moved before the edited AAAA set was seen\n%s", r.stderr)
		}
		if got := w.serving(t); len(got) != 1 || got[0] != w.srcID {
			t.Fatalf("www.shop.test A leads to %v, want web-1", got)
		}
		if servers, _ := w.c.Server.All(ctx); len(servers) != 1 {
			t.Fatalf("%d servers after the rollback", len(servers))
		}
	})
	t.Run("new server taken out after the swap", func(t *testing.T) {
		t.Parallel()
		w := newHetznerWorld(t, "loadbalancer")
		o, _, err := w.l.Seeder().HetznerServer(ctx, "web-9", "cx22", nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		must(t, vmswap(t, w.env, "apply", "--poll", "50ms", w.planFile), 0)
		nw := targets(t, w)
		lbChange(t, w, true, o)
		lbChange(t, w, false, nw[0])
		must(t, vmswap(t, w.env, "rollback", "--yes", "--poll", "50ms", w.planFile), runner.ExitBadInput, "nothing was changed", "someone changed it")
		if got := targets(t, w); len(got) != 1 || got[0] != o {
			t.Fatalf("the pool is %v, want web-9 (%d) alone, as it was left", got, o)
		}
	})
	t.Run("another load balancer selects by a negation", func(t *testing.T) {
		t.Parallel()
		w := newHetznerWorld(t, "floating_ip")
		ep := w.l.Endpoints()
		res, _, err := w.c.LoadBalancer.Create(ctx, hcloud.LoadBalancerCreateOpts{
			Name: "neg", LoadBalancerType: &hcloud.LoadBalancerType{Name: "lb11"}, Location: &hcloud.Location{Name: "fsn1"},
			Services: []hcloud.LoadBalancerCreateOptsService{{
				Protocol: hcloud.LoadBalancerServiceProtocolHTTP, ListenPort: hcloud.Ptr(ep.HTTPPort), DestinationPort: hcloud.Ptr(ep.HTTPPort), Proxyprotocol: hcloud.Ptr(false),
				HealthCheck: &hcloud.LoadBalancerCreateOptsServiceHealthCheck{Protocol: hcloud.LoadBalancerServiceProtocolHTTP, Port: hcloud.Ptr(ep.HTTPPort),
					Interval: hcloud.Ptr(time.Second), Timeout: hcloud.Ptr(time.Second), Retries: hcloud.Ptr(1),
					HTTP: &hcloud.LoadBalancerCreateOptsServiceHealthCheckHTTP{Path: hcloud.Ptr("/health"), Domain: hcloud.Ptr("")}},
			}},
			Targets: []hcloud.LoadBalancerCreateOptsTarget{{Type: hcloud.LoadBalancerTargetTypeLabelSelector, LabelSelector: hcloud.LoadBalancerCreateOptsTargetLabelSelector{Selector: "env!=staging"}}},
		})
		if err == nil {
			err = w.c.Action.WaitFor(ctx, res.Action)
		}
		if err != nil {
			t.Fatal(err)
		}
		must(t, vmswap(t, w.env, "apply", "--poll", "50ms", w.planFile), 2, "env!=staging", "cannot keep a new server out")
		if servers, _ := w.c.Server.All(ctx); len(servers) != 1 {
			t.Fatalf("%d servers after a refused apply", len(servers))
		}
	})
}

// TestStatusOfAStoppedRollback: `vmswap status -o json` of a finished swap
// whose rollback was killed part-way says so (rollback_owed, interrupted),
// not that the run succeeded; rollback then finishes it.
func TestStatusOfAStoppedRollback(t *testing.T) {
	t.Parallel()
	w := newHetznerWorld(t, "floating_ip")
	must(t, vmswap(t, w.env, "apply", "--poll", "50ms", w.planFile), 0)
	if r := vmswap(t, append(w.env, "VMSWAP_CRASH_AT=api:1"), "rollback", "--yes", "--poll", "50ms", w.planFile); r.code != -1 {
		t.Fatalf("rollback was not killed: exit %d\n%s", r.code, r.stderr)
	}
	st := vmswap(t, w.env, "status", "-o", "json", w.planFile)
	var got struct {
		Status       string `json:"status"`
		RollbackOwed bool   `json:"rollback_owed"`
	}
	if err := json.Unmarshal([]byte(st.stdout), &got); err != nil || got.Status != "interrupted" || !got.RollbackOwed {
		t.Fatalf("status -o json after a killed rollback: %+v (%v)\n%s", got, err, st.stdout)
	}
	must(t, vmswap(t, w.env, "rollback", "--yes", "--poll", "50ms", w.planFile), 0)
	if got := w.serving(t); len(got) != 1 || got[0] != w.srcID {
		t.Fatalf("after the rollback the floating IP leads to %v, want web-1", got)
	}
}

// TestHetznerSourceWithAVolume: a volume cannot follow a snapshot, so a
// source with one attached is refused by `vmswap plan`, and by apply's
// preflight when it was attached after the plan was written, before
// anything is made (exit 2, no image, no server).
func TestHetznerSourceWithAVolume(t *testing.T) {
	t.Parallel()
	w := newHetznerWorld(t, "loadbalancer")
	ctx := context.Background()
	vol, err := w.l.Seeder().HetznerVolume(ctx, "uploads", 20, w.srcID)
	if err != nil {
		t.Fatal(err)
	}
	ep := w.l.Endpoints()
	file := filepath.Join(t.TempDir(), "plan.yaml")
	r := vmswap(t, w.env, "plan", "--provider", "hetzner", "--endpoint", ep.HetznerAPI, "--source", "web-1", "--size", "cx32",
		"--lb", strconv.FormatInt(w.lbID, 10), "-o", file)
	want := fmt.Sprintf("volume(s) %d attached", vol)
	if r.code != runner.ExitBadInput || !strings.Contains(r.stderr, want) || !strings.Contains(r.stderr, "a snapshot does not carry") {
		t.Fatalf("plan of a source with a volume: exit %d, want %d with %q\n%s", r.code, runner.ExitBadInput, want, r.stderr)
	}
	if _, err := os.Stat(file); !os.IsNotExist(err) {
		t.Fatalf("the refused plan was written: %v", err)
	}
	r = vmswap(t, w.env, "apply", "--poll", "50ms", w.planFile)
	if r.code != runner.ExitBadInput || !strings.Contains(r.stderr, want) {
		t.Fatalf("apply of a source with a volume: exit %d, want %d with %q\n%s", r.code, runner.ExitBadInput, want, r.stderr)
	}
	servers, err := w.c.Server.All(ctx)
	if err != nil {
		t.Fatal(err)
	}
	images, err := w.c.Image.AllWithOpts(ctx, hcloud.ImageListOpts{Type: []hcloud.ImageType{hcloud.ImageTypeSnapshot}})
	if err != nil {
		t.Fatal(err)
	}
	if len(servers) != 1 || len(images) != 0 {
		t.Fatalf("after the refusals: %d servers, %d snapshots; want the source alone", len(servers), len(images))
	}
	if s, _, err := w.c.Server.GetByID(ctx, w.srcID); err != nil || len(s.Labels) != 1 {
		t.Fatalf("the source after the refusals: %v, labels %v", err, s.Labels)
	}
}

// TestHetznerVolumeAttachedDuringTheRun: a volume someone attaches to the
// source after preflight is seen before traffic moves: the swap rolls
// back (the new server would serve without the volume's data), the source
// serves as before, nothing made is left.
func TestHetznerVolumeAttachedDuringTheRun(t *testing.T) {
	t.Parallel()
	w := newHetznerWorld(t, "loadbalancer")
	cmd, out := startApply(t, w.env, w.planFile)
	waitJournal(t, w.planFile, func(st *runner.SwapState) bool {
		return st.Steps["launch"] != nil && st.Steps["launch"].Status == "ok"
	}, out)
	vol, err := w.l.Seeder().HetznerVolume(context.Background(), "uploads", 20, w.srcID)
	if err != nil {
		t.Fatal(err)
	}
	if code := exitCode(cmd.Wait()); code != runner.ExitRolledBack || !strings.Contains(out.String(), fmt.Sprintf("since the swap began, web-1 has volume(s) %d attached", vol)) {
		t.Fatalf("exit %d, want %d (rolled back, naming the volume)\n%s", code, runner.ExitRolledBack, out.String())
	}
	if got := w.serving(t); len(got) != 1 || got[0] != w.srcID {
		t.Fatalf("the load balancer serves %v, want the source %d alone", got, w.srcID)
	}
	servers, err := w.c.Server.All(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(servers) != 1 || servers[0].ID != w.srcID || servers[0].Status != hcloud.ServerStatusRunning {
		t.Fatalf("servers after the rollback: %d, want the source alone, running", len(servers))
	}
}
