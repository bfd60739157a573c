package plans_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/vmswap/vmswap/loadbalancer/haproxy/haproxytest"
	"github.com/vmswap/vmswap/plans"
)

// TestSwapThroughHAProxy: the DigitalOcean droplet behind a real haproxy
// is swapped through its runtime API, with the probe on the frontend.
func TestSwapThroughHAProxy(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	h := haproxytest.Start(t, fmt.Sprintf("%s:%d", w.srcIP, w.l.HTTPPort()))
	sw := w.swap("loadbalancer")
	sw.Cutover.LoadBalancer = &plans.LBCutover{Provider: "hap", ID: "be"}
	sw.Probe = &plans.Probe{URL: "http://" + h.Entry + "/", Rate: 200}
	doc := w.planWith(sw, map[string]plans.Provider{"hap": {Type: "haproxy", Endpoint: h.Socket}})
	res, j := w.run(doc, nil)
	if res.ExitCode != 0 {
		t.Fatalf("exit %d: %s", res.ExitCode, res.Next)
	}
	sr := res.Swaps[0]
	t.Logf("haproxy swap: %d requests, %d failed, p99 %.1fms", sr.Requests, sr.Failed, sr.P99ms)
	if sr.Failed != 0 || sr.Requests < 200 {
		t.Fatalf("probe: %+v", sr)
	}
	d, _ := plans.Build(doc.Plan, plans.BuildOptions{Getenv: w.getenv})
	pool, err := d["hap"].LB.Pool(context.Background(), "be")
	if err != nil {
		t.Fatal(err)
	}
	if k := pool.Keys(); len(k) != 1 || k[0] != "addr:"+j.Swaps[0].NewIP {
		t.Fatalf("haproxy members after the swap: %v", k)
	}
}
