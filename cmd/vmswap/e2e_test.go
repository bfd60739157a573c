package main_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vmswap/vmswap/lab"
	"github.com/vmswap/vmswap/plans/runner"
	"github.com/vmswap/vmswap/verify/probe"
)

var bin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "vmswap-e2e-")
	if err != nil {
		panic(err)
	}
	bin = filepath.Join(dir, "vmswap")
	// What runs learn of providers' durations is kept only where a test
	// asks for it (VMSWAP_CACHE_DIR in its own environment), never in the
	// user's cache directory.
	os.Setenv("VMSWAP_CACHE_DIR", "off")
	if out, err := exec.Command("go", "build", "-buildvcs=true", "-tags", "crashhook", "-o", bin, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

type result struct {
	code           int
	stdout, stderr string
}

func vmswap(t *testing.T, env []string, args ...string) result {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return result{code, out.String(), errb.String()}
}

// TestDemoJSON runs `vmswap demo --output json`: both swaps succeed with no
// failed request, and the last line is the summary.
func TestDemoJSON(t *testing.T) {
	t.Parallel()
	start := time.Now()
	r := vmswap(t, nil, "demo", "--output", "json")
	if r.code != 0 {
		t.Fatalf("exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	var sum struct {
		Event  string
		Status string
		Swaps  []runner.SwapResult
	}
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &sum); err != nil {
		t.Fatalf("last line %q: %v", lines[len(lines)-1], err)
	}
	if sum.Event != "summary" || sum.Status != "succeeded" || len(sum.Swaps) != 2 {
		t.Fatalf("summary: %+v", sum)
	}
	for _, s := range sum.Swaps {
		t.Logf("demo %s: %s, %d requests, %d failed, p50 %.2fms, p99 %.2fms, %.1fs", s.Cutover, s.Status, s.Requests, s.Failed, s.P50ms, s.P99ms, s.DurationS)
		if s.Status != "succeeded" || s.Failed != 0 || s.Requests < 500 {
			t.Fatalf("swap %+v", s)
		}
	}
	if !slices.Equal([]string{sum.Swaps[0].Cutover, sum.Swaps[1].Cutover}, []string{"loadbalancer", "dns"}) {
		t.Fatalf("cutovers %v", sum.Swaps)
	}
	driverEvents, swapEvents := 0, 0
	for _, l := range lines {
		var e map[string]any
		if err := json.Unmarshal([]byte(l), &e); err != nil || e["event"] == nil || e["time"] == nil {
			t.Fatalf("not a JSON event with a time: %q", l)
		}
		msg, _ := e["message"].(string)
		if strings.HasPrefix(msg, "digitalocean: ") {
			// A driver's progress is about the swap running.
			driverEvents++
			if e["swap"] == nil {
				t.Fatalf("driver progress without its swap: %q", l)
			}
		}
		if e["event"] == "swap" {
			swapEvents++
		}
	}
	if driverEvents == 0 || swapEvents != 2 || r.stderr != "" {
		t.Fatalf("%d driver events, %d swap events, stderr %q", driverEvents, swapEvents, r.stderr)
	}
	t.Logf("demo took %s", time.Since(start).Round(100*time.Millisecond))
}

// TestDemoFleet runs `vmswap demo --fleet 3 --output json`: a canary, then
// a wave of two, each swap's events carrying its wave, every swap
// succeeded with no failed request.
func TestDemoFleet(t *testing.T) {
	t.Parallel()
	r := vmswap(t, nil, "demo", "--fleet", "3", "--output", "json")
	if r.code != 0 {
		t.Fatalf("exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	var sum struct {
		Event, Status string
		Swaps         []runner.SwapResult
	}
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &sum); err != nil {
		t.Fatalf("last line %q: %v", lines[len(lines)-1], err)
	}
	if sum.Event != "summary" || sum.Status != "succeeded" || len(sum.Swaps) != 3 {
		t.Fatalf("summary: %+v", sum)
	}
	for _, s := range sum.Swaps {
		if s.Status != "succeeded" || s.Failed != 0 || s.Requests == 0 {
			t.Fatalf("swap %+v", s)
		}
	}
	waves := map[string]float64{}
	for _, l := range lines {
		var e map[string]any
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			t.Fatalf("not JSON: %q", l)
		}
		if sw, _ := e["swap"].(string); sw != "" && e["event"] == "step" {
			w, _ := e["wave"].(float64)
			if w == 0 || (waves[sw] != 0 && waves[sw] != w) {
				t.Fatalf("step of %s in wave %v (before: %v): %q", sw, w, waves[sw], l)
			}
			waves[sw] = w
		}
	}
	ones, twos := 0, 0
	for _, w := range waves {
		switch w {
		case 1:
			ones++
		case 2:
			twos++
		}
	}
	if len(waves) != 3 || ones != 1 || twos != 2 {
		t.Fatalf("waves of the swaps: %v (want a canary in wave 1, two in wave 2)", waves)
	}
}

// labServe starts `vmswap lab serve` and returns its endpoints.
func labServe(t *testing.T) (lab.Endpoints, time.Duration) {
	t.Helper()
	state := t.TempDir()
	cmd := exec.Command(bin, "lab", "serve", "--state", state)
	var errb bytes.Buffer
	cmd.Stderr = &errb
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Signal(os.Interrupt); cmd.Wait() })
	for {
		b, err := os.ReadFile(filepath.Join(state, "endpoints.json"))
		if err == nil {
			var ep lab.Endpoints
			if json.Unmarshal(b, &ep) == nil && ep.Token != "" {
				return ep, time.Since(start)
			}
		}
		if time.Since(start) > 20*time.Second {
			t.Fatalf("lab serve not ready: %s", errb.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestLabPlanApplyInterruptResume: a plan written against `vmswap lab serve`
// is applied in a separate run, interrupted with Ctrl-C after the cutover,
// and applied again: the swap finishes, no second droplet or snapshot is
// made, and traffic through the load balancer never fails.
func TestLabPlanApplyInterruptResume(t *testing.T) {
	t.Parallel()
	ep, ready := labServe(t)
	t.Logf("lab serve ready in %s", ready.Round(time.Millisecond))
	ctx := context.Background()
	sd := lab.NewSeeder(ep)
	srcID, _, err := sd.Droplet(ctx, "web-1", "s-1vcpu-1gb", nil, map[string]string{"index.html": "<h1>shop</h1>\n"})
	if err != nil {
		t.Fatal(err)
	}
	lbID, lbIP, err := sd.LoadBalancer(ctx, "lb", []int{srcID})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	planFile := filepath.Join(dir, "web-1.yaml")
	env := []string{"DIGITALOCEAN_TOKEN=" + ep.Token}
	r := vmswap(t, env, "plan", "--endpoint", ep.DigitalOceanAPI, "--source", "web-1", "--size", "s-2vcpu-4gb",
		"--lb", lbID, "--identify-header", "X-Served-By", "--drain", "500ms", "--observe", "6s", "--retire", "delete",
		"--http", fmt.Sprintf("http://www.shop.test:%d/health", ep.HTTPPort), "--compare", "/", "-o", planFile)
	if r.code != 0 {
		t.Fatalf("plan: exit %d: %s", r.code, r.stderr)
	}
	b, _ := os.ReadFile(planFile)
	for _, want := range []string{"observed:", "mutations:", "members:", "add the new server to load balancer"} {
		if !strings.Contains(string(b), want) {
			t.Fatalf("plan lacks %q:\n%s", want, b)
		}
	}
	if strings.Contains(string(b), ep.Token) {
		t.Fatal("the plan contains the token")
	}

	ext, err := probe.Start(probe.Config{URL: fmt.Sprintf("http://%s:%d/", lbIP, ep.HTTPPort), Rate: 100})
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "apply", "--poll", "100ms", planFile)
	cmd.Env = append(os.Environ(), env...)
	var errb bytes.Buffer
	cmd.Stderr, cmd.Stdout = &errb, &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Interrupt once traffic has moved: during observe.
	deadline := time.Now().Add(60 * time.Second)
	for {
		j, _ := runner.LoadJournal(runner.JournalPath(planFile))
		if j != nil && slices.Contains(j.Swaps[0].Done, "cutover") {
			break
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatalf("apply never reached observe: %s", errb.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	// SIGHUP, as when the operator's terminal or SSH session closes: it
	// stops at a safe point as Ctrl-C does (the other interrupt tests
	// send SIGINT).
	cmd.Process.Signal(syscall.SIGHUP)
	err = cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != runner.ExitAttention || !strings.Contains(errb.String(), "vmswap apply "+planFile) {
		t.Fatalf("interrupted apply: %v\n%s", err, errb.String())
	}
	t.Logf("interrupted: %s", lastLine(errb.String()))

	r = vmswap(t, env, "apply", "--poll", "100ms", planFile)
	if r.code != 0 || !strings.Contains(r.stdout, "vmswap: succeeded") || !strings.Contains(r.stderr, "resuming run") {
		t.Fatalf("resumed apply: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	sum := ext.Stop()
	t.Logf("outside probe across both runs: %d requests, %d failed", sum.Requests, sum.Failed)
	if sum.Failed != 0 || sum.Requests < 500 {
		t.Fatalf("outside probe: %d requests, %d failed: %v", sum.Requests, sum.Failed, sum.Errors)
	}
	reqs, err := sd.Requests(ctx)
	if err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	for _, q := range reqs {
		count[q.Operation]++
	}
	// web-1's seeding made one droplet; the swap one more. Its droplet
	// actions: one snapshot, and the rename that gives the new droplet
	// web-1's name (retire deletes web-1, so it needs no rename).
	if count["droplets_create"] != 2 || count["dropletActions_post"] != 2 {
		t.Fatalf("creates %d, droplet actions %d: a step ran twice", count["droplets_create"], count["dropletActions_post"])
	}
	inv, err := lab.FetchInventory(ctx, ep)
	if err != nil {
		t.Fatal(err)
	}
	if len(inv.Droplets) != 1 || inv.Droplets[0].Size != "s-2vcpu-4gb" || inv.Droplets[0].Name != "web-1" || len(inv.Snapshots) != 0 || inv.LBs[0].Droplets[0] != inv.Droplets[0].ID {
		t.Fatalf("inventory after the swap: %+v", inv)
	}
	st := vmswap(t, nil, "status", planFile)
	if st.code != 0 || !strings.Contains(st.stdout, "succeeded") {
		t.Fatalf("status: %+v", st)
	}
	again := vmswap(t, env, "apply", planFile)
	if again.code != 0 || !strings.Contains(again.stderr, "already applied") {
		t.Fatalf("third apply: %+v", again)
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// TestBrokenPlanTouchesNothing: a plan with several mistakes is refused with
// every problem as file:line:col, exit 2, and no request reaches the API.
func TestBrokenPlanTouchesNothing(t *testing.T) {
	t.Parallel()
	ep, _ := labServe(t)
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte(fmt.Sprintf(`version: 1
providers:
  lab: {type: digitalocean, endpoint: "%s"}
swaps:
  - source: {provider: lab, server: web-1}
    target: {size: s-4vcpu-8gb}
    verify: {memory: "lots"}
    cutover:
      loadbalancer: {provider: lb, id: x}
    observe: forever
`, ep.DigitalOceanAPI)), 0o644)
	env := []string{"DIGITALOCEAN_TOKEN=" + ep.Token}
	for _, args := range [][]string{{"validate", bad}, {"apply", bad}} {
		r := vmswap(t, env, args...)
		errs := regexp.MustCompile(`(?m)^`+regexp.QuoteMeta(bad)+`:\d+:\d+: .+$`).FindAllString(r.stderr, -1)
		if r.code != runner.ExitBadInput || len(errs) != 3 {
			t.Fatalf("%s: exit %d, %d located errors:\n%s", args[0], r.code, len(errs), r.stderr)
		}
		if args[0] == "validate" {
			t.Logf("validate:\n%s", strings.Join(errs, "\n"))
		}
	}
	reqs, err := lab.NewSeeder(ep).Requests(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range reqs {
		if q.API != "lab" {
			t.Fatalf("a broken plan reached the API: %+v", q)
		}
	}
}

// TestControlCharactersNeverReachTheTerminal: a server name holding an
// escape sequence (retitle the terminal) is shown escaped in the progress,
// the error and the summary, in text and in JSON.
func TestControlCharactersNeverReachTheTerminal(t *testing.T) {
	t.Parallel()
	ep, _ := labServe(t)
	plan := filepath.Join(t.TempDir(), "esc.yaml")
	os.WriteFile(plan, []byte(fmt.Sprintf(`version: 1
providers:
  lab: {type: digitalocean, endpoint: "%s"}
swaps:
  - source: {provider: lab, server: "web-\e]0;pwned\a1"}
    target: {size: s-2vcpu-4gb}
    cutover:
      reserved_ip: {provider: lab, ip: 127.100.76.4}
`, ep.DigitalOceanAPI)), 0o644)
	env := []string{"DIGITALOCEAN_TOKEN=" + ep.Token}
	for _, args := range [][]string{{"apply", plan}, {"apply", "-o", "json", plan}} {
		r := vmswap(t, env, args...)
		if r.code != runner.ExitBadInput || !strings.Contains(r.stdout+r.stderr, `web-\u001b]0;pwned\u00071`) {
			t.Fatalf("%v: exit %d\n%s\n%s", args, r.code, r.stdout, r.stderr)
		}
		if i := strings.IndexAny(r.stdout+r.stderr, "\x1b\x07"); i >= 0 {
			t.Fatalf("%v: a raw control character reached the output at %d:\n%q", args, i, r.stdout+r.stderr)
		}
	}
}

// TestLabServeErrors: a port in use and a bad token each give a clear error.
func TestLabServeErrors(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	r := vmswap(t, nil, "lab", "serve", "--state", t.TempDir(), "--listen", ln.Addr().String())
	if r.code != runner.ExitBadInput || !strings.Contains(r.stderr, "address already in use") || !strings.Contains(r.stderr, "--listen") {
		t.Fatalf("port in use: %+v", r)
	}
	ep, _ := labServe(t)
	r = vmswap(t, []string{"DIGITALOCEAN_TOKEN=wrong-token"}, "plan", "--endpoint", ep.DigitalOceanAPI, "--source", "web-1", "--size", "s-2vcpu-4gb", "--lb", "x")
	if r.code != runner.ExitBadInput || !strings.Contains(r.stderr, "the API refused the token (401 Unable to authenticate you): check DIGITALOCEAN_TOKEN") || strings.Contains(r.stderr, "wrong-token") {
		t.Fatalf("bad token: %+v", r)
	}
	r = vmswap(t, []string{"DIGITALOCEAN_TOKEN=", "DIGITALOCEAN_ACCESS_TOKEN="}, "plan", "--source", "web-1", "--size", "s-2vcpu-4gb", "--lb", "x")
	if r.code != runner.ExitBadInput || !strings.Contains(r.stderr, "set DIGITALOCEAN_TOKEN or DIGITALOCEAN_ACCESS_TOKEN") {
		t.Fatalf("no token: %+v", r)
	}
}

// TestVersion: the binary says which commit it was built from.
func TestVersion(t *testing.T) {
	head, err := exec.Command("git", "rev-parse", "HEAD").Output()
	if err != nil {
		t.Fatalf("git rev-parse HEAD: %v", err)
	}
	r := vmswap(t, nil, "version")
	want := "commit " + strings.TrimSpace(string(head))[:12]
	if r.code != 0 || !strings.Contains(r.stdout, want) || !strings.Contains(r.stdout, "plan format 1") {
		t.Fatalf("version: exit %d %q, want it to contain %q", r.code, r.stdout, want)
	}
}
