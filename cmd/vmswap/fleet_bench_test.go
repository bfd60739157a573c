package main_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/vmswap/vmswap/lab"
	"github.com/vmswap/vmswap/lab/labtest"
	"github.com/vmswap/vmswap/plans/runner"
)

// BenchmarkFleet upgrades 50 droplets behind one load balancer with the
// built binary: `vmswap plan --tag web`, a canary of 1 then waves of 10,
// the probe at 2,000 req/s through the load balancer (shared by a wave's
// swaps), against a lab that enforces DigitalOcean's 250 requests a
// minute and takes as long as DigitalOcean does (the realistic profile:
// a snapshot 60 s, a boot 40 s, health checks every 10 s; with the fast
// profile's sub-second actions the rate limit alone would set the wall
// time). It reports failed requests, the run's wall time over the
// canary's (one swap alone, in the same run), DigitalOcean API calls per
// swap and the 429 answers. It takes about ten minutes.
func BenchmarkFleet(b *testing.B) {
	const n = 50
	for i := 0; i < b.N; i++ {
		l := labtest.Start(b, lab.Config{Durations: lab.RealisticDurations()})
		ctx := context.Background()
		sd := l.Seeder()
		// Booted at once: one at a time, 50 boots of 40 s would take half
		// an hour.
		ids := make([]int, n)
		var g errgroup.Group
		for k := range n {
			g.Go(func() error {
				id, _, err := sd.Droplet(ctx, fmt.Sprintf("web-%d", k+1), "s-1vcpu-1gb", nil, map[string]string{"index.html": "<h1>shop</h1>\n"})
				ids[k] = id
				return err
			})
		}
		if err := g.Wait(); err != nil {
			b.Fatal(err)
		}
		lbID, lbIP, err := sd.LoadBalancer(ctx, "lb", ids)
		if err != nil {
			b.Fatal(err)
		}
		ep := l.Endpoints()
		env := []string{"DIGITALOCEAN_TOKEN=" + ep.Token}
		planFile := filepath.Join(b.TempDir(), "fleet.yaml")
		// Seeded freely; from here on, DigitalOcean's limits.
		l.SetRateLimit(&lab.RateLimit{Requests: 250, Window: time.Minute, Hourly: 5000})
		before := len(l.Requests())
		plan := exec.Command(bin, "plan", "--endpoint", ep.DigitalOceanAPI, "--tag", "web", "--size", "s-2vcpu-4gb", "--lb", lbID,
			"--identify-header", "X-Served-By", "--drain", "500ms", "--observe", "10s", "--http", fmt.Sprintf("http://%s:%d/", lbIP, ep.HTTPPort),
			"--probe-url", fmt.Sprintf("http://%s:%d/", lbIP, ep.HTTPPort), "--probe-rate", "2000", "--canary", "1", "--max-parallel", "10", "-o", planFile)
		plan.Env = append(os.Environ(), env...)
		if out, err := plan.CombinedOutput(); err != nil {
			b.Fatalf("plan: %v\n%s", err, out)
		}
		planCalls := len(l.Requests()) - before
		apply := exec.Command(bin, "apply", "--poll", "200ms", planFile)
		apply.Env = append(os.Environ(), env...)
		var errb bytes.Buffer
		apply.Stderr = &errb
		start := time.Now()
		if err := apply.Run(); err != nil {
			b.Fatalf("apply: %v\n%s", err, tail(errb.String(), 3000))
		}
		wall := time.Since(start)
		calls, n429 := 0, 0
		byOp := map[string]int{}
		for _, q := range l.Requests()[before+planCalls:] {
			if q.API == "digitalocean" {
				byOp[q.Operation]++
			}
		}
		for _, q := range l.Requests()[before:] {
			if q.API == "digitalocean" {
				calls++
				if q.Status == 429 {
					n429++
				}
			}
		}
		fmt.Printf("fleet apply: API calls by operation: %v\n", byOp)
		calls -= planCalls
		j, err := runner.LoadJournal(runner.JournalPath(planFile))
		if err != nil {
			b.Fatal(err)
		}
		canary := j.Swaps[0].Steps["retire"].End.Sub(j.Swaps[0].Steps["preflight"].Start)
		// Calls inside the waves: from the first moment a swap after the
		// canary began (its preflight) to the end, over the swaps of the
		// waves. What the canary still did after that moment counts
		// against the waves, never the other way.
		waves := time.Time{}
		for _, st := range j.Swaps[1:] {
			if p := st.Steps["preflight"]; p != nil && (waves.IsZero() || p.Start.Before(waves)) {
				waves = p.Start
			}
		}
		inWaves := 0
		for _, q := range l.Requests()[before+planCalls:] {
			if q.API == "digitalocean" && !q.Time.Before(waves) {
				inWaves++
			}
		}
		failed, requests := 0, 0
		for _, st := range j.Swaps {
			if st.Probe != nil {
				failed, requests = failed+st.Probe.Failed, requests+st.Probe.Requests
			}
		}
		b.ReportMetric(float64(failed), "failed")
		b.ReportMetric(float64(requests), "requests")
		b.ReportMetric(wall.Seconds()/canary.Seconds(), "wall/one-swap")
		b.ReportMetric(float64(calls)/n, "api-calls/swap")
		b.ReportMetric(float64(inWaves)/(n-1), "api-calls/swap-in-waves")
		b.ReportMetric(float64(n429), "429s")
		fmt.Printf("fleet of %d (canary 1, waves of 10, probe 2,000 req/s shared): %d requests, %d failed; wall %.1fs, one swap (the canary) %.1fs: x%.2f; %d API calls for apply, %.1f per swap (plan: %d); inside the waves %d calls for %d swaps, %.1f per swap (the canary alone before them: %d); %d answered 429\n",
			n, requests, failed, wall.Seconds(), canary.Seconds(), wall.Seconds()/canary.Seconds(), calls, float64(calls)/n, planCalls, inWaves, int(n)-1, float64(inWaves)/(n-1), calls-inWaves, n429)
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
