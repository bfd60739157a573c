// Package report renders the HTML report of a swap: one self-contained file
// (inline SVG and CSS, no scripts, nothing fetched) with the steps as bands on
// a timeline, requests per second, errors, p50 and p99 latency from the
// probe, the carry passes, what the old server wrote that nothing carried,
// the hooks, the checks and their results, and the summary.
package report

import (
	"fmt"
	"html/template"
	"io"
	"math"
	"strings"
	"time"

	"github.com/vmswap/vmswap/plans"
	"github.com/vmswap/vmswap/plans/runner"
	"github.com/vmswap/vmswap/verify/carry"
	"github.com/vmswap/vmswap/verify/probe"
)

// Comparison is another way of doing the same change, drawn beside the
// swaps: `vmswap demo --compare` adds the classic in-place resize.
type Comparison struct {
	Title  string
	Result runner.SwapResult
	Probe  *probe.Summary
	Steps  map[string]*runner.StepLog
	// Outage is the time during which requests failed.
	Outage time.Duration
}

// Write renders the report of run j of plan p, with any comparisons.
func Write(w io.Writer, p *plans.Plan, j *runner.Journal, res *runner.Result, cmp ...Comparison) error {
	data := struct {
		Status string
		RunID  string
		Fleet  template.HTML
		Swaps  []swapView
	}{Status: string(res.Status), RunID: j.RunID}
	if p.Strategy != nil && len(j.Swaps) > 1 {
		data.Fleet = fleetTimeline(p, j)
	}
	for i, st := range j.Swaps {
		var sr runner.SwapResult
		if i < len(res.Swaps) {
			sr = res.Swaps[i]
		}
		data.Swaps = append(data.Swaps, view(p.Swaps[i], st, sr))
	}
	for _, c := range cmp {
		st := &runner.SwapState{Steps: c.Steps, Probe: c.Probe}
		v := swapView{Title: c.Title, Result: c.Result}
		var t0, t1 time.Time
		for _, name := range classicSteps {
			if l := c.Steps[name]; l != nil {
				v.Steps = append(v.Steps, stepView{name, l.Status, l.End.Sub(l.Start).Seconds()})
				if t0.IsZero() {
					t0 = l.Start
				}
				t1 = l.End
			}
		}
		if c.Probe != nil {
			t0, t1 = c.Probe.Start, c.Probe.End
		}
		v.Chart = chartSteps(st, classicSteps, c.Probe, t0, t1)
		v.Outage = c.Outage.Seconds()
		data.Swaps = append(data.Swaps, v)
	}
	return page.Execute(w, data)
}

var classicSteps = []string{"shutdown", "resize", "power_on"}

type swapView struct {
	Title   string
	Result  runner.SwapResult
	Checks  []runner.CheckResult
	Chart   template.HTML
	Steps   []stepView
	Outage  float64
	Windows []windowView
	Passes  []runner.PassRecord
	Diverge *carry.Divergence
	Hooks   []runner.HookRun
}

type windowView struct {
	Name             string
	Requests, Failed int
	P50, P99         float64
}

type stepView struct {
	Name, Status string
	Seconds      float64
}

var bandColors = map[string]string{"preflight": "#e8e8e8", "snapshot": "#cfe3ff", "launch": "#d7f0d2", "ready": "#fff2c4",
	"verify": "#ffd9c4", "catchup": "#f9e0b0", "cutover": "#f3c6ff", "observe": "#c4f2ef", "retire": "#e0e0f8", "rollback": "#ffc4c4",
	"shutdown": "#ffd0d0", "resize": "#ffb0b0", "power_on": "#ffe0c0"}

func view(sw plans.Swap, st *runner.SwapState, sr runner.SwapResult) swapView {
	v := swapView{Title: fmt.Sprintf("%s → %s (%s, %s)", sr.Source, dash(sr.New), sw.Target.Size, sw.Cutover.Kind()), Result: sr, Checks: st.Checks,
		Passes: st.Passes, Diverge: st.Divergence, Hooks: st.Hooks}
	var t0, t1 time.Time
	for _, name := range append(append([]string{}, runner.Steps...), "rollback") {
		l := st.Steps[name]
		if l == nil {
			continue
		}
		end := l.End
		if end.IsZero() {
			end = l.Start
		}
		v.Steps = append(v.Steps, stepView{name, l.Status, end.Sub(l.Start).Seconds()})
		if t0.IsZero() || l.Start.Before(t0) {
			t0 = l.Start
		}
		if end.After(t1) {
			t1 = end
		}
	}
	v.Chart = chartSteps(st, append(append([]string{}, runner.Steps...), "rollback"), st.Probe, t0, t1)
	if st.Probe != nil {
		for _, w := range st.Probe.Windows {
			v.Windows = append(v.Windows, windowView{w.Name, w.Requests, w.Failed, float64(w.P50.Microseconds()) / 1000, float64(w.P99.Microseconds()) / 1000})
		}
	}
	return v
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// chart draws the step bands and, over them, the probe's requests per
// second, failures and latency percentiles, on one time axis.
func chartSteps(st *runner.SwapState, steps []string, pr *probe.Summary, t0, t1 time.Time) template.HTML {
	const W, H, left, right, top, bottom = 960.0, 370.0, 60.0, 60.0, 20.0, 50.0
	if t0.IsZero() || !t1.After(t0) {
		return ""
	}
	span := t1.Sub(t0).Seconds()
	x := func(t time.Time) float64 { return left + (W-left-right)*t.Sub(t0).Seconds()/span }
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 %.0f %.0f" width="100%%" role="img">`, W, H)
	lastLabel, row := -1e9, 0
	for _, name := range steps {
		l := st.Steps[name]
		if l == nil || l.End.IsZero() {
			continue
		}
		x0, x1 := x(l.Start), x(l.End)
		fmt.Fprintf(&b, `<rect x="%.1f" y="%.0f" width="%.1f" height="%.0f" fill="%s"><title>%s %.1fs</title></rect>`, x0, top, math.Max(x1-x0, 1), H-top-bottom, bandColors[name], name, l.End.Sub(l.Start).Seconds())
		// Labels of short steps would overlap: put them on alternate rows.
		if x0-lastLabel < 60 {
			row = 1 - row
		} else {
			row = 0
		}
		lastLabel = x0
		fmt.Fprintf(&b, `<text x="%.1f" y="%.0f" font-size="11" fill="#333">%s</text>`, x0+2, H-bottom+13+float64(row)*12, name)
	}
	// Carry passes: a dark mark at the top of the timeline each.
	for _, p := range st.Passes {
		x0, x1 := x(p.Start), x(p.End)
		fmt.Fprintf(&b, `<rect x="%.1f" y="%.0f" width="%.1f" height="8" fill="#5a3e00"><title>carry %s pass: %d files, %d bytes, %d conflicts, %s</title></rect>`,
			x0, top, math.Max(x1-x0, 2), p.Name, p.Res.Copied, p.Res.Bytes, len(p.Res.Conflicts), p.Res.Duration.Round(time.Millisecond))
		fmt.Fprintf(&b, `<text x="%.1f" y="%.0f" font-size="10" fill="#5a3e00">%s pass</text>`, x0+2, top+18, p.Name)
	}
	fmt.Fprintf(&b, `<line x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f" stroke="#444"/>`, left, H-bottom, W-right, H-bottom)
	fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" font-size="11">0s</text><text x="%.0f" y="%.0f" font-size="11" text-anchor="end">%.1fs</text>`, left, H-3, W-right, H-3, span)
	if pr != nil && len(pr.Buckets) > 0 {
		maxRPS, maxLat := 1.0, 1.0
		for _, bk := range pr.Buckets {
			maxRPS = math.Max(maxRPS, float64(bk.Requests)*10)
			maxLat = math.Max(maxLat, float64(bk.P99.Microseconds())/1000)
		}
		y := func(v, maxV float64) float64 { return H - bottom - (H-top-bottom)*v/maxV }
		var rps, p50, p99 []string
		for _, bk := range pr.Buckets {
			xx := x(pr.Start.Add(bk.Offset))
			rps = append(rps, fmt.Sprintf("%.1f,%.1f", xx, y(float64(bk.Requests)*10, maxRPS*1.1)))
			if bk.Requests > 0 {
				p50 = append(p50, fmt.Sprintf("%.1f,%.1f", xx, y(float64(bk.P50.Microseconds())/1000, maxLat*1.1)))
				p99 = append(p99, fmt.Sprintf("%.1f,%.1f", xx, y(float64(bk.P99.Microseconds())/1000, maxLat*1.1)))
			}
			if bk.Failed > 0 {
				bw := math.Max(x(pr.Start.Add(bk.Offset+probe.BucketWidth))-xx, 2)
				fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="#d00" fill-opacity="0.8"><title>%d failed</title></rect>`, xx, y(float64(bk.Failed)*10, maxRPS*1.1), bw, float64(bk.Failed)*10/(maxRPS*1.1)*(H-top-bottom), bk.Failed)
			}
		}
		fmt.Fprintf(&b, `<polyline points="%s" fill="none" stroke="#1f5fbf" stroke-width="1.5"><title>requests/s</title></polyline>`, strings.Join(rps, " "))
		fmt.Fprintf(&b, `<polyline points="%s" fill="none" stroke="#2a9d3a" stroke-width="1"><title>p50 ms</title></polyline>`, strings.Join(p50, " "))
		fmt.Fprintf(&b, `<polyline points="%s" fill="none" stroke="#e07b00" stroke-width="1"><title>p99 ms</title></polyline>`, strings.Join(p99, " "))
		fmt.Fprintf(&b, `<text x="4" y="%.0f" font-size="11" fill="#1f5fbf">%.0f req/s</text>`, top+10, maxRPS*1.1)
		fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" font-size="11" fill="#e07b00" text-anchor="end">%.1f ms</text>`, W-2, top+10, maxLat*1.1)
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String())
}

// fleetTimeline draws a fleet's run: one row per server, its steps as
// bars on the run's time axis, each wave's span shaded.
func fleetTimeline(p *plans.Plan, j *runner.Journal) template.HTML {
	steps := append(append([]string{}, runner.Steps...), "rollback")
	var t0, t1 time.Time
	for _, st := range j.Swaps {
		for _, l := range st.Steps {
			if t0.IsZero() || l.Start.Before(t0) {
				t0 = l.Start
			}
			if l.End.After(t1) {
				t1 = l.End
			}
		}
	}
	if t0.IsZero() || !t1.After(t0) {
		return ""
	}
	const W, row, left, right, top = 960.0, 18.0, 120.0, 20.0, 20.0
	H := top + row*float64(len(j.Swaps)) + 30
	span := t1.Sub(t0).Seconds()
	x := func(t time.Time) float64 { return left + (W-left-right)*t.Sub(t0).Seconds()/span }
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 %.0f %.0f" width="100%%" role="img">`, W, H)
	for w, idx := range p.Strategy.Waves(len(p.Swaps)) {
		var ws, we time.Time
		for _, i := range idx {
			for _, l := range j.Swaps[i].Steps {
				if ws.IsZero() || l.Start.Before(ws) {
					ws = l.Start
				}
				if l.End.After(we) {
					we = l.End
				}
			}
		}
		if ws.IsZero() {
			continue
		}
		fill := "#f4f4fb"
		if w%2 == 1 {
			fill = "#fbf7ee"
		}
		fmt.Fprintf(&b, `<rect x="%.1f" y="%.0f" width="%.1f" height="%.0f" fill="%s"><title>wave %d</title></rect>`, x(ws), top-14, math.Max(x(we)-x(ws), 1), H-top-16, fill, w+1)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.0f" font-size="11" fill="#555">wave %d</text>`, x(ws)+2, top-4, w+1)
	}
	for i, st := range j.Swaps {
		y := top + row*float64(i)
		name := p.Swaps[i].Name
		if name == "" {
			name = p.Swaps[i].Source.Server
		}
		fmt.Fprintf(&b, `<text x="4" y="%.0f" font-size="11">%s</text>`, y+12, template.HTMLEscapeString(name))
		for _, sn := range steps {
			l := st.Steps[sn]
			if l == nil || l.End.IsZero() {
				continue
			}
			fmt.Fprintf(&b, `<rect x="%.1f" y="%.0f" width="%.1f" height="%.0f" fill="%s"><title>%s %s %.1fs</title></rect>`,
				x(l.Start), y+2, math.Max(x(l.End)-x(l.Start), 1), row-4, bandColors[sn], template.HTMLEscapeString(name), sn, l.End.Sub(l.Start).Seconds())
		}
	}
	fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" font-size="11">0s</text><text x="%.0f" y="%.0f" font-size="11" text-anchor="end">%.1fs</text>`, left, H-3, W-right, H-3, span)
	b.WriteString(`</svg>`)
	return template.HTML(b.String())
}

var page = template.Must(template.New("report").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>vmswap report {{.RunID}}</title>
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;max-width:1000px}
h1{font-size:20px} h2{font-size:16px;margin-top:28px}
table{border-collapse:collapse;margin:8px 0} td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}
.ok{color:#1a7f2a}.failed{color:#c00} .num{text-align:right}
.legend span{display:inline-block;margin-right:14px}
</style></head><body>
<h1>vmswap: {{.Status}} <small>(run {{.RunID}})</small></h1>
{{if .Fleet}}<h2>Fleet</h2>
{{.Fleet}}{{end}}
{{range .Swaps}}
<h2>{{.Title}}</h2>
<table><tr><th>status</th><th>requests</th><th>failed</th><th>p50</th><th>p99</th><th>duration</th></tr>
<tr><td class="{{.Result.Status}}">{{.Result.Status}}</td><td class="num">{{.Result.Requests}}</td><td class="num">{{.Result.Failed}}</td>
<td class="num">{{printf "%.1f" .Result.P50ms}} ms</td><td class="num">{{printf "%.1f" .Result.P99ms}} ms</td><td class="num">{{printf "%.1f" .Result.DurationS}} s</td></tr></table>
{{if .Outage}}<p class="failed">Outage: {{printf "%.1f" .Outage}} s during which requests failed.</p>{{end}}
{{if .Result.Error}}<p class="failed">{{.Result.Error}}</p>{{end}}
<div class="legend"><span style="color:#1f5fbf">— requests/s</span><span style="color:#2a9d3a">— p50</span><span style="color:#e07b00">— p99</span><span style="color:#d00">▮ failed</span></div>
{{.Chart}}
{{if .Windows}}<table><tr><th>traffic during</th><th>requests</th><th>failed</th><th>p50</th><th>p99</th></tr>
{{range .Windows}}<tr><td>{{.Name}}</td><td class="num">{{.Requests}}</td><td class="num">{{.Failed}}</td><td class="num">{{printf "%.2f" .P50}} ms</td><td class="num">{{printf "%.2f" .P99}} ms</td></tr>{{end}}</table>{{end}}
<table><tr><th>step</th><th>status</th><th>seconds</th></tr>
{{range .Steps}}<tr><td>{{.Name}}</td><td class="{{.Status}}">{{.Status}}</td><td class="num">{{printf "%.1f" .Seconds}}</td></tr>{{end}}</table>
{{with .Result.Writes}}<p class="{{if or .LostUploads .LostSessions}}failed{{else}}ok{{end}}">Users' writes: {{.}}.</p>{{end}}
{{if .Passes}}<table><tr><th>carry pass</th><th>from → to</th><th>files copied</th><th>bytes</th><th>deleted</th><th>conflicts</th><th>time</th></tr>
{{range .Passes}}<tr><td>{{.Name}}</td><td>{{.From}} → {{.To}}</td><td class="num">{{.Res.Copied}}</td><td class="num">{{.Res.Bytes}}</td><td class="num">{{.Res.Deleted}}</td><td class="num">{{len .Res.Conflicts}}</td><td class="num">{{.Res.Duration}}</td></tr>
{{range .Res.Conflicts}}<tr><td colspan="7" class="failed">conflict: {{.Path}}: {{.Reason}}</td></tr>{{end}}{{end}}</table>{{end}}
{{with .Diverge}}<p>Written on the old server after its snapshot, outside the carried paths: {{.Count}} file(s){{if .Cut}} ({{.Cut}}){{end}}.</p>
{{if .Files}}<table><tr><th>path</th><th>size</th><th>modified</th></tr>{{range .Files}}<tr><td>{{.Path}}</td><td class="num">{{.Size}}</td><td>{{.Mtime}}</td></tr>{{end}}</table>{{end}}{{end}}
{{if .Hooks}}<table><tr><th>hook</th><th>on</th><th>command</th><th>result</th></tr>
{{range .Hooks}}<tr><td>{{.Phase}}</td><td>{{.On}}</td><td><code>{{.Run}}</code></td><td class="{{if .OK}}ok{{else}}failed{{end}}">{{if .OK}}ok{{else}}FAILED{{end}}</td></tr>{{end}}</table>{{end}}
{{if .Checks}}<table><tr><th>check</th><th>result</th><th>detail</th></tr>
{{range .Checks}}<tr><td>{{.Name}}</td><td class="{{if .OK}}ok{{else}}failed{{end}}">{{if .OK}}ok{{else}}FAILED{{end}}</td><td>{{.Detail}}</td></tr>{{end}}</table>{{end}}
{{end}}
</body></html>
`))
