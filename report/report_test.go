package report

import (
	"bytes"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/vmswap/vmswap/plans"
	"github.com/vmswap/vmswap/plans/runner"
	"github.com/vmswap/vmswap/verify/carry"
	"github.com/vmswap/vmswap/verify/probe"
)

// TestReportIsSelfContained renders a run with a probe timeline and a
// comparison, and checks what a reader needs is there and nothing is
// fetched from the network.
func TestReportIsSelfContained(t *testing.T) {
	t0 := time.Date(2026, 11, 22, 3, 0, 0, 0, time.UTC)
	step := func(s, e float64) *runner.StepLog {
		return &runner.StepLog{Start: t0.Add(time.Duration(s * float64(time.Second))), End: t0.Add(time.Duration(e * float64(time.Second))), Status: "ok"}
	}
	var buckets []probe.Bucket
	for i := 0; i < 40; i++ {
		b := probe.Bucket{Offset: time.Duration(i) * probe.BucketWidth, Requests: 20, P50: time.Millisecond, P99: 3 * time.Millisecond}
		if i == 17 {
			b.Failed = 2
		}
		buckets = append(buckets, b)
	}
	pr := &probe.Summary{Start: t0.Add(2 * time.Second), End: t0.Add(6 * time.Second), Requests: 800, Failed: 2, Buckets: buckets}
	st := &runner.SwapState{Status: "succeeded", Steps: map[string]*runner.StepLog{
		"preflight": step(0, 0.1), "snapshot": step(0.1, 1), "launch": step(1, 1.1), "ready": step(1.1, 1.8),
		"verify": step(1.8, 2), "cutover": step(2, 2.5), "observe": step(2.5, 5.5), "retire": step(5.5, 6)},
		Checks: []runner.CheckResult{{Name: "memory", OK: true, Detail: "3.88GiB (want >= 3.5GiB)"}, {Name: "compare", OK: false, Detail: "bodies differ"}},
		Probe:  pr,
		Passes: []runner.PassRecord{{Name: "catch-up", From: "web-1", To: "web-1-abc", Start: t0.Add(1900 * time.Millisecond), End: t0.Add(2 * time.Second), Res: carry.Result{Copied: 12, Bytes: 4096,
			Conflicts: []carry.Conflict{{Path: "/srv/uploads/a.png", Reason: "changed on both sides"}}}}},
		Divergence: &carry.Divergence{Count: 1, Files: []carry.ChangedFile{{Path: "/etc/app.conf", Size: 12, Mtime: t0}}},
		Hooks:      []runner.HookRun{{Phase: "before_cutover", On: "new", Run: "systemctl reload app", OK: true}}}
	p := &plans.Plan{Swaps: []plans.Swap{{Target: plans.Target{Size: "s-2vcpu-4gb"}, Cutover: plans.Cutover{LoadBalancer: &plans.LBCutover{}}}}}
	j := &runner.Journal{RunID: "abc123", Swaps: []*runner.SwapState{st}}
	res := &runner.Result{Status: "succeeded", Swaps: []runner.SwapResult{{Source: "web-1", New: "web-1-abc", Requests: 800, Failed: 2, P50ms: 1, P99ms: 3, DurationS: 6, Status: "succeeded",
		Writes: &probe.Writes{Uploads: 30, Sessions: 30}}}}
	cmp := Comparison{Title: "classic", Result: runner.SwapResult{Failed: 200}, Probe: pr, Outage: 1100 * time.Millisecond,
		Steps: map[string]*runner.StepLog{"shutdown": step(2, 2.3), "resize": step(2.3, 2.8), "power_on": step(2.8, 3.3)}}
	var b bytes.Buffer
	if err := Write(&b, p, j, res, cmp); err != nil {
		t.Fatal(err)
	}
	html := b.String()
	for _, want := range []string{"vmswap: succeeded", "web-1 → web-1-abc", "<svg", ">snapshot<", ">observe<", ">shutdown<", "requests/s", "p99 ms",
		"2 failed", "Outage: 1.1 s", "3.88GiB (want &gt;= 3.5GiB)", "FAILED",
		"carry catch-up pass: 12 files", "conflict: /srv/uploads/a.png", "30 uploads and 30 sessions made during the swap, 0 lost", "/etc/app.conf", "systemctl reload app"} {
		if !strings.Contains(html, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	if n := strings.Count(html, "<polyline"); n != 6 {
		t.Errorf("%d series, want 6 (rps, p50, p99 for each chart)", n)
	}
	// Self-contained: no scripts, nothing loaded from anywhere.
	if regexp.MustCompile(`(?i)<script|<link|\bsrc=|@import|url\(`).MatchString(html) {
		t.Error("report loads something from outside itself")
	}
}

// TestFleetTimeline: a fleet run gets one row per server with its steps
// as bars, and each wave's span shaded and named, above the swaps.
func TestFleetTimeline(t *testing.T) {
	t0 := time.Date(2026, 12, 2, 3, 0, 0, 0, time.UTC)
	at := func(s, e float64) *runner.StepLog {
		return &runner.StepLog{Start: t0.Add(time.Duration(s * float64(time.Second))), End: t0.Add(time.Duration(e * float64(time.Second))), Status: "ok"}
	}
	p := &plans.Plan{Strategy: &plans.Strategy{Canary: 1, MaxParallel: 2}}
	j := &runner.Journal{RunID: "fleet1"}
	res := &runner.Result{Status: "succeeded"}
	for i, start := range []float64{0, 10, 10} {
		name := []string{"web-1", "web-2", "web-3"}[i]
		p.Swaps = append(p.Swaps, plans.Swap{Name: name, Target: plans.Target{Size: "s-2vcpu-4gb"}, Cutover: plans.Cutover{LoadBalancer: &plans.LBCutover{}}})
		j.Swaps = append(j.Swaps, &runner.SwapState{Status: "succeeded", Steps: map[string]*runner.StepLog{"preflight": at(start, start+1), "cutover": at(start+4, start+5), "retire": at(start+8, start+9)}})
		res.Swaps = append(res.Swaps, runner.SwapResult{Name: name, Status: "succeeded"})
	}
	var b bytes.Buffer
	if err := Write(&b, p, j, res); err != nil {
		t.Fatal(err)
	}
	html := b.String()
	fleet := html[strings.Index(html, "<h2>Fleet</h2>"):strings.Index(html, "</svg>")]
	for _, want := range []string{"<title>wave 1</title>", "<title>wave 2</title>", ">web-3</text>", "<title>web-2 cutover 1.0s</title>"} {
		if !strings.Contains(fleet, want) {
			t.Errorf("the fleet timeline lacks %q", want)
		}
	}
	if n := strings.Count(fleet, "<title>web-"); n != 9 {
		t.Errorf("%d step bars, want 9 (3 servers x 3 steps)", n)
	}
}
