package runner_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmswap/vmswap/dns/authority"
	"github.com/vmswap/vmswap/dns/rfc2136/bindtest"
	"github.com/vmswap/vmswap/loadbalancer/haproxy/haproxytest"
	"github.com/vmswap/vmswap/loadbalancer/nginx/nginxtest"
	"github.com/vmswap/vmswap/plans"
	"github.com/vmswap/vmswap/plans/registry"
	"github.com/vmswap/vmswap/plans/runner"
)

// TestSwapThroughHAProxy: the DigitalOcean droplet behind a real haproxy,
// declared there by two server lines, is swapped through its runtime API
// with the probe on the frontend: the plan names both lines, both go, and
// no request fails, retire included.
func TestSwapThroughHAProxy(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	src := fmt.Sprintf("%s:%d", w.srcIP, w.l.HTTPPort())
	h := haproxytest.Start(t, src, src)
	sw := w.swap("loadbalancer")
	sw.Cutover.LoadBalancer = &plans.LBCutover{Provider: "hap", ID: "be"}
	sw.Probe = &plans.Probe{URL: "http://" + h.Entry + "/", Rate: 200}
	doc := w.planWith(sw, map[string]plans.Provider{"hap": {Type: "haproxy", Endpoint: h.Socket}})
	if err := runner.ObserveWorld(context.Background(), doc.Plan, registry.BuildOptions{Getenv: w.getenv}); err != nil {
		t.Fatal(err)
	}
	if m := strings.Join(doc.Plan.Mutations, "\n"); !strings.Contains(m, "every one of its server lines web1, web2") {
		t.Fatalf("the plan does not name the server lines: %s", m)
	}
	doc = w.reparse(doc.Plan)
	res, j := w.run(doc, nil)
	if res.ExitCode != 0 {
		t.Fatalf("exit %d: %s", res.ExitCode, res.Next)
	}
	sr := res.Swaps[0]
	t.Logf("haproxy swap: %d requests, %d failed, p99 %.1fms", sr.Requests, sr.Failed, sr.P99ms)
	if sr.Failed != 0 || sr.Requests < 200 {
		t.Fatalf("probe: %+v", sr)
	}
	d, _ := registry.Build(doc.Plan, registry.BuildOptions{Getenv: w.getenv})
	pool, err := d["hap"].LB.Pool(context.Background(), "be")
	if err != nil {
		t.Fatal(err)
	}
	if k := pool.Keys(); len(k) != 1 || k[0] != "addr:"+j.Swaps[0].NewIP {
		t.Fatalf("haproxy members after the swap: %v", k)
	}
}

// TestSwapThroughNginx: the droplet behind a real nginx, in an upstream
// whose server lines vmswap owns, is swapped with the probe at 500 req/s
// through nginx: the new server is added and proven by its X-Served-By
// through nginx, the old one marked down, drained and deleted, and no
// request fails.
func TestSwapThroughNginx(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	n := nginxtest.Start(t, fmt.Sprintf("%s:%d", w.srcIP, w.l.HTTPPort()))
	sw := w.swap("loadbalancer")
	sw.Cutover.LoadBalancer = &plans.LBCutover{Provider: "ngx", ID: "app", IdentifyHeader: "X-Served-By"}
	sw.Probe = &plans.Probe{URL: "http://" + n.Entry + "/", Rate: 500}
	doc := w.planWith(sw, map[string]plans.Provider{"ngx": {Type: "nginx", Endpoint: n.Dir, Command: strings.Join(n.Command, " "), Address: n.Entry}})
	res, j := w.run(doc, nil)
	if res.ExitCode != 0 {
		t.Fatalf("exit %d: %s", res.ExitCode, res.Next)
	}
	sr := res.Swaps[0]
	t.Logf("nginx swap: %d requests, %d failed, p99 %.1fms, %.1fs", sr.Requests, sr.Failed, sr.P99ms, sr.DurationS)
	if sr.Failed != 0 || sr.Requests < 500 {
		t.Fatalf("probe: %+v", sr)
	}
	b, err := os.ReadFile(filepath.Join(n.Dir, "app.conf"))
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("server %s:%d;", j.Swaps[0].NewIP, w.l.HTTPPort()); strings.TrimSpace(string(b)) != want {
		t.Fatalf("the upstream after the swap:\n%s\nwant %s", b, want)
	}
	var routed bool
	for _, e := range w.events {
		routed = routed || strings.Contains(e.Message, "load balancer app routes to")
	}
	if !routed {
		t.Fatal("the runner did not prove through nginx that the new server gets requests")
	}
}

// TestSwapThroughRFC2136: the record lives on a real BIND 9, changed with a
// TSIG-signed dynamic update; the probe resolves through BIND, honouring TTL.
func TestSwapThroughRFC2136(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	b := bindtest.Start(t, "bind.test", map[string]string{"www": w.srcIP}, 5)
	sw := w.swap("dns")
	sw.Cutover.DNS = &plans.DNSCutover{Provider: "bind", Record: "www.bind.test", Grace: plans.Duration(time.Second)}
	sw.Probe = &plans.Probe{URL: w.url("www.bind.test"), Rate: 200, Resolver: b.Addr}
	doc := w.planWith(sw, map[string]plans.Provider{"bind": {Type: "rfc2136", Endpoint: b.Addr, TSIGKey: b.Key}})
	res, j := w.runEnv(doc, map[string]string{"RFC2136_TSIG_SECRET": b.Secret})
	if res.ExitCode != 0 {
		t.Fatalf("exit %d: %s", res.ExitCode, res.Next)
	}
	sr := res.Swaps[0]
	t.Logf("rfc2136 swap: %d requests, %d failed, p99 %.1fms, %.1fs", sr.Requests, sr.Failed, sr.P99ms, sr.DurationS)
	if sr.Failed != 0 || sr.Requests < 200 {
		t.Fatalf("probe: %+v", sr)
	}
	vals, _, err := authority.Lookup(context.Background(), b.Addr, "www.bind.test", "A")
	if err != nil || len(vals) != 1 || vals[0] != j.Swaps[0].NewIP {
		t.Fatalf("BIND answers %v, %v", vals, err)
	}
}

// TestSwapThroughCloudflare: the record is a proxied Cloudflare record
// (the lab's Cloudflare API), moved with PATCH; the old server is kept for
// the grace only, as no client caches a proxied record's origin.
func TestSwapThroughCloudflare(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	zid, err := w.l.AddZone("cf.test")
	if err != nil {
		t.Fatal(err)
	}
	cfRecord(t, w, zid, map[string]any{"type": "A", "name": "www.cf.test", "content": w.srcIP, "ttl": 1, "proxied": true, "comment": "shop"})
	// A proxied record resolves to the (lab's) Cloudflare edge, not the origin.
	time.Sleep(w.l.Durations().DNSApply + 100*time.Millisecond)
	if vals, _, err := authority.Lookup(context.Background(), w.l.Endpoints().DNS, "www.cf.test", "A"); err != nil || len(vals) != 1 || vals[0] == w.srcIP {
		t.Fatalf("proxied record resolves to %v, %v", vals, err)
	}
	sw := w.swap("dns")
	sw.Cutover.DNS = &plans.DNSCutover{Provider: "cf", Record: "www.cf.test", Grace: plans.Duration(2 * time.Second)}
	sw.Probe = &plans.Probe{URL: w.url("www.cf.test"), Rate: 200, Resolver: w.l.Endpoints().DNS}
	doc := w.planWith(sw, map[string]plans.Provider{"cf": {Type: "cloudflare", Endpoint: w.l.Endpoints().CloudflareAPI, Nameserver: w.l.Endpoints().DNS}})
	res, _ := w.runEnv(doc, map[string]string{"CLOUDFLARE_API_TOKEN": w.l.Token()})
	if res.ExitCode != 0 {
		t.Fatalf("exit %d: %s", res.ExitCode, res.Next)
	}
	sr := res.Swaps[0]
	t.Logf("cloudflare swap: %d requests, %d failed, p99 %.1fms, %.1fs", sr.Requests, sr.Failed, sr.P99ms, sr.DurationS)
	if sr.Failed != 0 || sr.Requests < 200 {
		t.Fatalf("probe: %+v", sr)
	}
	if n := w.l.OperationCounts()["dns-records-for-a-zone-patch-dns-record"]; n != 1 {
		t.Fatalf("%d PATCH calls", n)
	}
}

func cfRecord(t *testing.T, w *world, zoneID string, body map[string]any) {
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest("POST", w.l.Endpoints().CloudflareAPI+"/zones/"+zoneID+"/dns_records", bytes.NewReader(b))
	req.Header.Set("Authorization", "Bearer "+w.l.Token())
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("create record: %v %v", resp, err)
	}
	resp.Body.Close()
}
