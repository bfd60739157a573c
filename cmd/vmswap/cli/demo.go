package cli

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/crypto/ssh"

	"github.com/vmswap/vmswap/lab"
	"github.com/vmswap/vmswap/plans"
	"github.com/vmswap/vmswap/plans/registry"
	"github.com/vmswap/vmswap/plans/runner"
	"github.com/vmswap/vmswap/report"
	"github.com/vmswap/vmswap/verify"
	"github.com/vmswap/vmswap/verify/probe"
)

// DemoOptions are the inputs of `vmswap demo`.
type DemoOptions struct {
	IO      *IOStreams
	Output  string
	Report  string
	Specs   string
	NoSpecs bool
	Dir     string
	Compare bool
	// Fleet, when set, is how many servers behind one load balancer the
	// demo upgrades in waves.
	Fleet int
	// Provider is the lab API the demo runs on: digitalocean or hetzner.
	Provider string
}

// NewCmdDemo builds `vmswap demo`.
func NewCmdDemo(f *Factory, runF func(*DemoOptions) error) *cobra.Command {
	opts := &DemoOptions{IO: f.IO}
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Upgrade two live servers on the embedded lab cloud, with traffic flowing",
		Long: `Demo starts the lab (a local DigitalOcean-compatible cloud on loopback), creates two small
droplets serving a site, a load balancer in front of one and a DNS record for the
other, and upgrades both with a probe sending requests the whole time: once through the
load balancer, once through DNS. It runs the same plan, runner and DigitalOcean drivers
as a real swap, and ends with the summary. Nothing leaves this machine.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if runF != nil {
				return runF(opts)
			}
			return demoRun(cmd.Context(), opts)
		},
	}
	cmd.Flags().StringVarP(&opts.Output, "output", "o", "text", "text or json")
	cmd.Flags().StringVar(&opts.Report, "report", "", "write an HTML report of the swaps to this file")
	cmd.Flags().StringVar(&opts.Specs, "specs", "", "validate the lab against these OpenAPI specs (default: shared/specs if found)")
	cmd.Flags().BoolVar(&opts.NoSpecs, "no-specs", false, "do not validate the lab's API traffic")
	cmd.Flags().StringVar(&opts.Dir, "dir", "", "keep the demo's plan, journal and key here (default: a temporary directory)")
	cmd.Flags().IntVar(&opts.Fleet, "fleet", 0, "upgrade this many servers behind one load balancer instead, in waves of 4 after a canary of 1, under DigitalOcean's rate limit (250 requests a minute)")
	cmd.Flags().StringVar(&opts.Provider, "provider", "digitalocean", "the lab API to run on: digitalocean, or hetzner (a load balancer, a DNS zone and a floating IP on the lab's Hetzner Cloud API)")
	cmd.Flags().BoolVar(&opts.Compare, "compare", false, "also resize an identical droplet the classic way (shutdown, resize, power on) under the same probe, and show both")
	return cmd
}

// demoSite is what the demo droplets serve.
var demoSite = map[string]string{
	"index.html": "<!doctype html>\n<title>Shop</title>\n<h1>The vmswap demo shop</h1>\n<p>Served without a single failed request.</p>\n",
	"about.html": "<!doctype html>\n<title>About</title>\n<p>About the shop.</p>\n",
}

func demoRun(ctx context.Context, o *DemoOptions) error {
	if ctx == nil {
		ctx = context.Background()
	}
	pr, err := newPrinter(o.IO, o.Output)
	if err != nil {
		return err
	}
	dir := o.Dir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "vmswap-demo-"); err != nil {
			return err
		}
	} else if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	cfg, err := labConfig(filepath.Join(dir, "lab"), o.Specs, o.NoSpecs, "fast")
	if err != nil {
		return err
	}
	cfg.Logf = func(format string, args ...any) { pr.progress(format, args...) }
	if o.Fleet < 0 || o.Fleet == 1 || o.Fleet > 50 {
		return exitf(runner.ExitBadInput, "--fleet %d: want 2 to 50 servers", o.Fleet)
	}
	if o.Fleet > 0 && o.Compare {
		return exitf(runner.ExitBadInput, "--fleet and --compare are separate demos: use one")
	}
	switch o.Provider {
	case "", "digitalocean":
	case "hetzner":
		if o.Fleet > 0 || o.Compare {
			return exitf(runner.ExitBadInput, "--provider hetzner runs the three-cutover demo: drop --fleet and --compare")
		}
	default:
		return exitf(runner.ExitBadInput, "--provider %q: want digitalocean or hetzner", o.Provider)
	}
	l, err := lab.Start(cfg)
	if err != nil {
		return exitf(runner.ExitAttention, "%v", err)
	}
	defer l.Close()
	if cfg.SpecsDir != "" {
		pr.progress("lab: started; every API call is validated against %s", cfg.SpecsDir)
	} else {
		pr.progress("lab: started (no specs found: API calls are not validated)")
	}

	var planFile, classicIP string
	switch {
	case o.Provider == "hetzner":
		planFile, err = demoHetznerWorld(ctx, l, dir, pr)
	case o.Fleet > 0:
		planFile, err = demoFleet(ctx, l, dir, pr, o.Fleet)
	default:
		planFile, classicIP, err = demoWorld(ctx, l, dir, pr, o.Compare)
	}
	if err != nil {
		return exitf(runner.ExitAttention, "demo setup: %v", err)
	}
	getenv := demoGetenv(l.Endpoints())
	ao := &ApplyOptions{IO: o.IO, PlanFile: planFile, Output: o.Output, Report: o.Report, Poll: 100 * time.Millisecond, Getenv: getenv, printer: pr}
	var classic *report.Comparison
	if o.Compare {
		if classic, err = classicResize(ctx, l, getenv, classicIP, pr); err != nil {
			return exitf(runner.ExitAttention, "classic resize: %v", err)
		}
		ao.Comparisons = []report.Comparison{*classic}
		if pr.json {
			b, _ := json.Marshal(map[string]any{"event": "compare", "method": "classic_resize", "requests": classic.Result.Requests,
				"failed": classic.Result.Failed, "outage_s": classic.Outage.Seconds(), "p99_ms": classic.Result.P99ms, "duration_s": classic.Result.DurationS})
			fmt.Fprintln(o.IO.Out, string(b))
		}
	}
	var res *runner.Result
	ao.Summary = func(r *runner.Result) { res = r }
	if o.Dir == "" {
		pr.progress("plan written to %s (a temporary directory, removed at the end; keep it with --dir DIR); applying it", planFile)
	} else {
		pr.progress("plan written to %s; applying it", planFile)
	}
	seeded := len(l.Requests()) // the lab's seeding and the plan's reads: not the swaps'
	err = applyRun(ctx, ao)
	if classic != nil && res != nil && len(res.Swaps) > 0 && !pr.json {
		printComparison(o.IO, res.Swaps[0], classic)
	}
	if res != nil && res.Status == runner.StatusSucceeded && !pr.json {
		total, failed := 0, 0
		for _, s := range res.Swaps {
			total, failed = total+s.Requests, failed+s.Failed
		}
		via := "the load balancer and DNS"
		if o.Provider == "hetzner" {
			via = "the load balancer, DNS and a floating IP"
		}
		if o.Fleet > 0 {
			via = "the load balancer"
			calls, n429 := 0, 0
			for _, r := range l.Requests()[min(seeded, len(l.Requests())):] {
				if r.API != "digitalocean" {
					continue
				}
				calls++
				if r.Status == 429 {
					n429++
				}
			}
			fmt.Fprintf(o.IO.ErrOut, "\ndemo: apply made %d DigitalOcean API calls, %.1f per server; the lab's 250-a-minute limit answered 429 %d times (each waited out).", calls, float64(calls)/float64(len(res.Swaps)), n429)
		}
		fmt.Fprintf(o.IO.ErrOut, "\ndemo: %d server(s) upgraded while a probe sent %d requests through %s; %d failed.\n", len(res.Swaps), total, via, failed)
		if !o.Compare && o.Fleet == 0 && o.Provider != "hetzner" {
			fmt.Fprintln(o.IO.ErrOut, "      See the old way beside it: vmswap demo --compare --report swap.html")
		}
	}
	if v := l.Violations(); len(v) > 0 {
		pr.emit(runner.Event{Event: "warning", Message: fmt.Sprintf("lab saw %d spec violation(s), first: %s", len(v), v[0])})
	}
	if o.Dir == "" && err == nil {
		os.RemoveAll(dir)
	}
	return err
}

// demoWorld builds the demo's servers and writes its plan. With compare it
// also makes web-3, served at its own IP, for the classic resize, and the
// plan holds only the load-balancer swap.
func demoWorld(ctx context.Context, l *lab.Lab, dir string, pr *printer, compare bool) (string, string, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return "", "", err
	}
	blk, err := ssh.MarshalPrivateKey(priv, "vmswap demo")
	if err != nil {
		return "", "", err
	}
	keyFile := filepath.Join(dir, "id_ed25519")
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(blk), 0o600); err != nil {
		return "", "", err
	}
	signer, _ := ssh.NewSignerFromKey(priv)
	sd := l.Seeder()
	keyID, err := sd.AddKey(ctx, "demo", string(ssh.MarshalAuthorizedKey(signer.PublicKey())))
	if err != nil {
		return "", "", err
	}
	pr.progress("lab: creating web-1 and web-2 (s-1vcpu-1gb) serving the demo shop, a load balancer and www.demo.test")
	id1, _, err := sd.Droplet(ctx, "web-1", "s-1vcpu-1gb", []int{keyID}, demoSite)
	if err != nil {
		return "", "", err
	}
	_, ip2, err := sd.Droplet(ctx, "web-2", "s-1vcpu-1gb", []int{keyID}, demoSite)
	if err != nil {
		return "", "", err
	}
	var ip3 string
	if compare {
		if _, ip3, err = sd.Droplet(ctx, "web-3", "s-1vcpu-1gb", []int{keyID}, demoSite); err != nil {
			return "", "", err
		}
	}
	lbID, lbIP, err := sd.LoadBalancer(ctx, "shop-lb", []int{id1})
	if err != nil {
		return "", "", err
	}
	if err := sd.Record(ctx, "demo.test", "www", ip2, 30); err != nil {
		return "", "", err
	}
	ep := l.Endpoints()
	port := l.HTTPPort()
	sshCfg := &plans.SSH{User: "root", Key: keyFile, Port: l.SSHPort(), KnownHosts: verify.HostKeyAcceptNew, KnownHostsFile: filepath.Join(dir, "known_hosts")}
	th := func(s string) *verify.Threshold { t, _ := verify.ParseThreshold(s); return &t }
	v := plans.Verify{SSH: sshCfg, Memory: th(">= 3.5GiB"), Disk: th(">= 70GB"), CPUs: th(">= 2"),
		HTTP:    []verify.HTTPCheck{{URL: fmt.Sprintf("http://www.demo.test:%d/health", port), Status: 200, BodyContains: "ok"}},
		Compare: []string{"/", "/about.html"}}
	// The demo app's users upload files and log in during the swaps: their
	// uploads and sessions follow the traffic.
	carry := &plans.Carry{Paths: []string{"/var/www/html/uploads", "/var/lib/app/sessions"}}
	p := &plans.Plan{
		Version:   plans.Version,
		ID:        "demo",
		Providers: map[string]plans.Provider{"lab": {Type: "digitalocean", Endpoint: ep.DigitalOceanAPI, Nameserver: ep.DNS}},
		Swaps: []plans.Swap{
			{
				Name: "web-1 via load balancer", Source: plans.Source{Provider: "lab", Server: "web-1"}, Target: plans.Target{Size: "s-2vcpu-4gb"},
				Verify:  v,
				Cutover: plans.Cutover{LoadBalancer: &plans.LBCutover{Provider: "lab", ID: lbID, IdentifyHeader: "X-Served-By", Drain: plans.Duration(time.Second)}},
				Probe:   &plans.Probe{URL: fmt.Sprintf("http://%s:%d/", lbIP, port), Rate: 200, Writes: true},
				Carry:   carry,
				Observe: plans.Duration(3 * time.Second),
				Retire:  plans.Retire{Action: "power_off", KeepFor: plans.Duration(24 * time.Hour), ShutdownTimeout: plans.Duration(10 * time.Second)},
			},
			{
				Name: "web-2 via DNS", Source: plans.Source{Provider: "lab", Server: "web-2"}, Target: plans.Target{Size: "s-2vcpu-4gb"},
				Verify:  v,
				Cutover: plans.Cutover{DNS: &plans.DNSCutover{Provider: "lab", Record: "www.demo.test", Grace: plans.Duration(2 * time.Second)}},
				Probe:   &plans.Probe{URL: fmt.Sprintf("http://www.demo.test:%d/", port), Rate: 200, Resolver: ep.DNS, Writes: true},
				Carry:   carry,
				Observe: plans.Duration(3 * time.Second),
				Retire:  plans.Retire{Action: "power_off", KeepFor: plans.Duration(24 * time.Hour), ShutdownTimeout: plans.Duration(10 * time.Second)},
			},
		},
	}
	if compare {
		p.Swaps = p.Swaps[:1]
	}
	if err := runner.ObserveWorld(ctx, p, registry.BuildOptions{Getenv: func(k string) string {
		if k == "DIGITALOCEAN_TOKEN" {
			return ep.Token
		}
		return ""
	}}); err != nil {
		return "", "", err
	}
	b, err := encodePlan(p)
	if err != nil {
		return "", "", err
	}
	planFile := filepath.Join(dir, "demo-plan.yaml")
	return planFile, ip3, os.WriteFile(planFile, b, 0o644)
}

// demoFleet builds n servers web-1..web-n tagged web behind one load
// balancer and writes the plan `vmswap plan --tag web` would: a canary,
// then waves of 4.
func demoFleet(ctx context.Context, l *lab.Lab, dir string, pr *printer, n int) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	sd := l.Seeder()
	ep := l.Endpoints()
	port := l.HTTPPort()
	pr.progress("lab: creating web-1 … web-%d (s-1vcpu-1gb, tagged web) serving the demo shop behind one load balancer", n)
	var ids []int
	for i := 1; i <= n; i++ {
		id, _, err := sd.Droplet(ctx, fmt.Sprintf("web-%d", i), "s-1vcpu-1gb", nil, demoSite)
		if err != nil {
			return "", err
		}
		ids = append(ids, id)
	}
	lbID, lbIP, err := sd.LoadBalancer(ctx, "shop-lb", ids)
	if err != nil {
		return "", err
	}
	// DigitalOcean's own limit, enforced as DigitalOcean does, from here
	// on: the plan's reads and the fleet's swaps share it; the lab's
	// seeding (what the user's account had before) does not count.
	l.SetRateLimit(&lab.RateLimit{Requests: 250, Window: time.Minute, Hourly: 5000})
	getenv := func(k string) string {
		if k == "DIGITALOCEAN_TOKEN" {
			return ep.Token
		}
		return ""
	}
	po := &PlanOptions{Getenv: getenv, Provider: "digitalocean", Endpoint: ep.DigitalOceanAPI, NS: ep.DNS, Tag: "web", Size: "s-2vcpu-4gb",
		LB: lbID, Identify: "X-Served-By", ProbeURL: fmt.Sprintf("http://%s:%d/", lbIP, port), Rate: 200, Observe: 2 * time.Second,
		Retire: "power_off", KeepFor: 24 * time.Hour, Drain: time.Second, HTTP: []string{fmt.Sprintf("http://www.demo.test:%d/health", port)},
		Compare: []string{"/", "/about.html"}, Names: "keep", HostChk: "warn", MaxParallel: 4, Canary: 1}
	p, err := buildPlan(po)
	if err != nil {
		return "", err
	}
	p.ID = "fleetdemo"
	if err := expandFleet(ctx, p, getenv); err != nil {
		return "", err
	}
	if err := runner.ObserveWorld(ctx, p, registry.BuildOptions{Getenv: getenv}); err != nil {
		return "", err
	}
	b, err := encodePlan(p)
	if err != nil {
		return "", err
	}
	planFile := filepath.Join(dir, "demo-fleet.yaml")
	return planFile, os.WriteFile(planFile, b, 0o644)
}

// classicResize resizes web-3 the classic way under a probe like vmswap's.
func classicResize(ctx context.Context, l *lab.Lab, getenv func(string) string, ip string, pr *printer) (*report.Comparison, error) {
	p := &plans.Plan{Version: 1, Providers: map[string]plans.Provider{"lab": {Type: "digitalocean", Endpoint: l.Endpoints().DigitalOceanAPI}}}
	drivers, err := registry.Build(p, registry.BuildOptions{Getenv: getenv, PollInterval: 100 * time.Millisecond})
	if err != nil {
		return nil, err
	}
	r, ok := drivers["lab"].Compute.(interface {
		ResizeInPlace(ctx context.Context, id, size string, step func(string, time.Time, time.Time)) error
	})
	if !ok {
		return nil, fmt.Errorf("the driver cannot resize in place")
	}
	srv, err := drivers["lab"].Compute.GetServer(ctx, "web-3")
	if err != nil {
		return nil, err
	}
	pr.progress("classic: resizing web-3 in place (shutdown, resize, power on) with a probe at 200 req/s on %s", ip)
	pb, err := probe.Start(probe.Config{URL: fmt.Sprintf("http://%s:%d/", ip, l.HTTPPort()), Rate: 200})
	if err != nil {
		return nil, err
	}
	time.Sleep(500 * time.Millisecond)
	steps := map[string]*runner.StepLog{}
	start := time.Now()
	err = r.ResizeInPlace(ctx, srv.ID, "s-2vcpu-4gb", func(name string, s, e time.Time) {
		steps[name] = &runner.StepLog{Start: s, End: e, Status: "ok"}
		pr.progress("classic: %s took %.1fs", name, e.Sub(s).Seconds())
	})
	// Until the droplet answers again, then a moment more.
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if c, derr := net.DialTimeout("tcp", net.JoinHostPort(ip, strconv.Itoa(l.HTTPPort())), time.Second); derr == nil {
			c.Close()
			break
		}
	}
	time.Sleep(500 * time.Millisecond)
	sum := pb.Stop()
	if err != nil {
		return nil, err
	}
	var outage time.Duration
	for _, b := range sum.Buckets {
		if b.Failed > 0 {
			outage += probe.BucketWidth
		}
	}
	res := runner.SwapResult{Name: "classic resize", Source: "web-3", New: "web-3", Cutover: "in place", Status: "succeeded",
		Requests: sum.Requests, Failed: sum.Failed, P50ms: float64(sum.P50.Microseconds()) / 1000, P99ms: float64(sum.P99.Microseconds()) / 1000,
		DurationS: time.Since(start).Seconds()}
	pr.progress("classic: %d of %d requests failed; %.1fs of outage", sum.Failed, sum.Requests, outage.Seconds())
	return &report.Comparison{Title: "web-3 → s-2vcpu-4gb, classic resize (shutdown, resize, power on)", Result: res, Probe: &sum, Steps: steps, Outage: outage}, nil
}

func printComparison(io *IOStreams, v runner.SwapResult, c *report.Comparison) {
	w := io.Out
	outage := "0.0"
	if v.Failed > 0 {
		outage = "see the report"
	}
	fmt.Fprintf(w, "\n%-22s %-26s %-26s\n", "", "vmswap ("+v.Cutover+")", "classic resize")
	fmt.Fprintf(w, "%-22s %-26d %-26d\n", "failed requests", v.Failed, c.Result.Failed)
	fmt.Fprintf(w, "%-22s %-26s %-26s\n", "seconds of outage", outage, fmt.Sprintf("%.1f", c.Outage.Seconds()))
	fmt.Fprintf(w, "%-22s %-26s %-26s\n", "p99", fmt.Sprintf("%.1fms", v.P99ms), fmt.Sprintf("%.1fms", c.Result.P99ms))
	fmt.Fprintf(w, "%-22s %-26d %-26d\n", "requests", v.Requests, c.Result.Requests)
}
