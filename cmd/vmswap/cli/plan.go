package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"gopkg.in/yaml.v3"

	"github.com/vmswap/vmswap/plans"
	"github.com/vmswap/vmswap/plans/registry"
	"github.com/vmswap/vmswap/plans/runner"
	"github.com/vmswap/vmswap/verify"
)

// PlanOptions are the inputs of `vmswap plan` (and the plan half of upgrade).
type PlanOptions struct {
	IO     *IOStreams
	Getenv func(string) string

	Out      string // plan file to write; "-" or empty: stdout
	Refresh  string // existing plan to re-observe
	Provider string // provider type
	Endpoint string
	NS       string
	Sources  []string
	Tag      string
	Size     string
	LB       string
	DNS      string
	IP       string
	Identify string
	ProbeURL string
	Resolver string
	Rate     int
	Observe  time.Duration
	Retire   string
	KeepFor  time.Duration
	KeepImg  bool
	SSHUser  string
	SSHKey   string
	SSHPort  int
	HostKeys string
	Memory   string
	Disk     string
	CPUs     string
	HTTP     []string
	Compare  []string
	Drain    time.Duration
	Grace    time.Duration
	Timeout  time.Duration
	Quiesce  bool
	Carry    []string
	CarryEx  []string
	OnDiverg string
	Names    string
	HostChk  string
	Gates    []string
	// The rollout of several swaps (strategy).
	MaxParallel    int
	MaxUnavailable int
	Canary         int
	PauseWaves     time.Duration
	WaveGates      []string
	OnFailure      string
	Prepare        string
	// Format is text (the plan's changes and cost on stderr) or json (one
	// "plan" event on stdout).
	Format string
}

// NewCmdPlan builds `vmswap plan`.
func NewCmdPlan(f *Factory, runF func(*PlanOptions) error) *cobra.Command {
	opts := &PlanOptions{IO: f.IO, Getenv: f.Getenv}
	cmd := &cobra.Command{
		Use:   "plan",
		Short: "Write a plan file from flags and what the provider reports",
		Long: `Plan reads the source server, the target size and the cutover target, and writes a
plan file that states every input, records what it observed, and lists every change
apply will make. Nothing is changed. Review it, commit it, then run vmswap apply.`,
		Example: `  vmswap plan --source web-1 --size s-4vcpu-8gb --lb 4de7ac8b-... -o web-1.yaml
  vmswap plan --source web-1 --size s-4vcpu-8gb --dns www.example.com --probe-url https://www.example.com/ -o web-1.yaml
  vmswap plan --refresh web-1.yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if runF != nil {
				return runF(opts)
			}
			return planRun(cmd.Context(), opts)
		},
	}
	addPlanFlags(cmd, opts)
	cmd.Flags().StringVarP(&opts.Out, "out", "o", "", "write the plan to this file (default: stdout)")
	cmd.Flags().StringVar(&opts.Refresh, "refresh", "", "re-observe the world for this plan file and rewrite it")
	cmd.Flags().StringVar(&opts.Format, "format", "text", "text, or json: the changes and the cost as one JSON event on stdout")
	return cmd
}

func addPlanFlags(cmd *cobra.Command, o *PlanOptions) {
	// An explicit 0 cannot be told from a flag left out (the plan file
	// omits it), and as a count it would let no swap run: refused.
	cmd.PreRunE = func(cmd *cobra.Command, _ []string) error {
		for flag, def := range map[string]string{"max-parallel": "1", "max-unavailable": "--max-parallel"} {
			if fl := cmd.Flags().Lookup(flag); fl != nil && fl.Changed && fl.Value.String() == "0" {
				return exitf(runner.ExitBadInput, "--%s 0: give 1 or more, or leave it out for the default (%s)", flag, def)
			}
		}
		return nil
	}
	fl := cmd.Flags()
	fl.StringVar(&o.Provider, "provider", "digitalocean", "provider type: digitalocean, aws or hetzner")
	fl.StringVar(&o.Endpoint, "endpoint", "", "API base `URL` override (the lab: see vmswap lab serve)")
	fl.StringVar(&o.NS, "nameserver", "", "authoritative DNS server host:port for DNS cutovers")
	fl.StringArrayVar(&o.Sources, "source", nil, "source server name or ID (repeatable: one swap each)")
	fl.StringVar(&o.Tag, "tag", "", "upgrade every server with this tag (AWS: key=value; Hetzner: a label, key=value or key), one swap each; apply refuses the plan if a server joins or leaves the tag")
	fl.IntVar(&o.MaxParallel, "max-parallel", 0, "swaps run at once in a wave (default 1)")
	fl.IntVar(&o.MaxUnavailable, "max-unavailable", 0, "most swaps moving traffic at once (default: --max-parallel)")
	fl.IntVar(&o.Canary, "canary", 0, "swaps run alone first, as wave 1")
	fl.DurationVar(&o.PauseWaves, "pause-between-waves", 0, "wait between waves")
	fl.StringArrayVar(&o.WaveGates, "wave-gate", nil, "pause apply (exit 4) until `vmswap apply --continue`: after_canary or after_each_wave (repeatable)")
	fl.StringVar(&o.OnFailure, "on-failure", "", "when a swap of a wave fails: rollback_wave (default) or finish_wave")
	fl.StringVar(&o.Prepare, "prepare", "", "when a wave's snapshots and new servers are made: ahead (default: while the wave before it moves traffic) or in_wave")
	fl.StringVar(&o.Size, "size", "", "target size slug (required)")
	fl.StringVar(&o.LB, "lb", "", "cut over through this load balancer ID")
	fl.StringVar(&o.DNS, "dns", "", "cut over by changing this name's A record (and its AAAA record, for a dual-stack server)")
	fl.StringVar(&o.IP, "reserved-ip", "", "cut over by moving this reserved IP")
	fl.StringVar(&o.Identify, "identify-header", "", "response header naming the server (proves LB routing)")
	fl.StringVar(&o.ProbeURL, "probe-url", "", "public URL the probe requests during cutover (default: the LB or reserved IP)")
	fl.StringVar(&o.Resolver, "probe-resolver", "", "DNS server host:port the probe resolves through")
	fl.IntVar(&o.Rate, "probe-rate", 50, "probe requests per second")
	fl.DurationVar(&o.Observe, "observe", 2*time.Minute, "hold under live traffic before retiring the source")
	fl.StringVar(&o.Retire, "retire", "power_off", "power_off or delete the source after success")
	fl.DurationVar(&o.KeepFor, "keep-for", 24*time.Hour, "keep a powered-off source this long for rollback")
	fl.BoolVar(&o.KeepImg, "keep-image", false, "keep the snapshot after success")
	fl.StringVar(&o.SSHUser, "ssh-user", "", "verify over SSH as this user")
	fl.StringVar(&o.SSHKey, "ssh-key", "", "SSH private key file (default: ssh-agent)")
	fl.IntVar(&o.SSHPort, "ssh-port", 0, "SSH port (default 22)")
	fl.StringVar(&o.HostKeys, "known-hosts", "accept-new", "host key policy: strict or accept-new")
	fl.StringVar(&o.Memory, "memory", "", "memory the new server must have, e.g. '>= 7.5GiB'")
	fl.StringVar(&o.Disk, "disk", "", "disk the new server must have, e.g. '>= 150GB'")
	fl.StringVar(&o.CPUs, "cpus", "", "CPUs the new server must have, e.g. '>= 4'")
	fl.StringArrayVar(&o.HTTP, "http", nil, "URL that must answer 200 on the new server (repeatable)")
	fl.StringArrayVar(&o.Compare, "compare", nil, "path that must answer the same on old and new (repeatable)")
	fl.DurationVar(&o.Drain, "drain", 0, "time for requests in flight on the old server after cutover (default 10s)")
	fl.DurationVar(&o.Grace, "grace", 0, "added to the old TTL before the old server stops (DNS; default 30s)")
	fl.DurationVar(&o.Timeout, "ready-timeout", 0, "bound on each provider wait (default 15m)")
	fl.BoolVar(&o.Quiesce, "quiesce", false, "run sync on the source over SSH (needs --ssh-user) just before its live, crash-consistent snapshot")
	fl.StringArrayVar(&o.Carry, "carry", nil, "absolute `PATH` on the server whose changes after the snapshot follow the traffic over SFTP, e.g. /var/www/html/uploads (repeatable; needs --ssh-user)")
	fl.StringArrayVar(&o.CarryEx, "carry-exclude", nil, "glob `PATTERN` not carried, e.g. '*.tmp' (repeatable)")
	fl.StringArrayVar(&o.Gates, "gate", nil, "pause apply (exit 4) at this point until `vmswap apply --continue`: before_cutover (repeatable)")
	fl.StringVar(&o.Names, "names", "keep", "keep: the new server takes the source's name once the source is retired (renamed NAME-retired-RUN); suffix: it stays NAME-RUN")
	fl.StringVar(&o.HostChk, "hostname-check", "warn", "when the new server's OS hostname is the source's (the image carried it): warn or fail")
	fl.StringVar(&o.OnDiverg, "on-divergence", "", "what to do when the source wrote files after its snapshot outside --carry: warn (default with --ssh-user), stop (pause before retire, exit 4) or off")
}

// buildPlan makes a plan from flags, reporting every missing or bad flag.
func buildPlan(o *PlanOptions) (*plans.Plan, error) {
	var errs []string
	if o.Format != "" && o.Format != "text" && o.Format != "json" {
		errs = append(errs, fmt.Sprintf("--format %q: want text or json", o.Format))
	}
	switch {
	case len(o.Sources) == 0 && o.Tag == "":
		errs = append(errs, "--source is required: the name or ID of the server to upgrade (or --tag TAG for every server with the tag)")
	case len(o.Sources) > 0 && o.Tag != "":
		errs = append(errs, "give --source or --tag, not both")
	}
	if o.IP != "" && (len(o.Sources) > 1 || o.Tag != "") {
		errs = append(errs, "a reserved IP points at one server: --reserved-ip upgrades one --source")
	}
	if o.Size == "" {
		errs = append(errs, "--size is required: the size slug to upgrade to, e.g. s-4vcpu-8gb")
	}
	n := 0
	for _, v := range []string{o.LB, o.DNS, o.IP} {
		if v != "" {
			n++
		}
	}
	if n != 1 {
		errs = append(errs, "give exactly one of --lb, --dns or --reserved-ip: where traffic reaches the server")
	}
	// URLs are checked before any API is asked: a password in one would
	// otherwise travel with the first request.
	for flag, v := range map[string][]string{"--endpoint": {o.Endpoint}, "--probe-url": {o.ProbeURL}, "--http": o.HTTP} {
		for _, raw := range v {
			if raw == "" {
				continue
			}
			what := map[string]string{"--endpoint": "endpoint", "--probe-url": "probe url", "--http": "url"}[flag]
			if p := plans.URLProblem(what, raw); p != "" {
				errs = append(errs, flag+": "+p)
			}
		}
	}
	if o.Rate < 1 || o.Rate > 20000 {
		errs = append(errs, fmt.Sprintf("--probe-rate %d: want 1 to 20000 requests per second", o.Rate))
	}
	if o.ProbeURL == "" && (o.Rate != 50 || o.Resolver != "") {
		// Without a URL the probe is the cutover's entry point at the default
		// rate; a setting for it would be dropped silently.
		errs = append(errs, "--probe-rate and --probe-resolver need --probe-url: the public URL to probe")
	}
	th := func(flag, v string) *verify.Threshold {
		if v == "" {
			return nil
		}
		t, err := verify.ParseThreshold(v)
		if err != nil {
			errs = append(errs, "--"+flag+": "+err.Error())
			return nil
		}
		return &t
	}
	sw := plans.Swap{
		Source:       plans.Source{Provider: "main"},
		Target:       plans.Target{Size: o.Size},
		Observe:      plans.Duration(o.Observe),
		Retire:       plans.Retire{Action: o.Retire, KeepImage: o.KeepImg},
		ReadyTimeout: plans.Duration(o.Timeout),
		Quiesce:      o.Quiesce,
		Verify: plans.Verify{Memory: th("memory", o.Memory), Disk: th("disk", o.Disk), CPUs: th("cpus", o.CPUs),
			Compare: o.Compare},
	}
	if o.Retire == "power_off" {
		sw.Retire.KeepFor = plans.Duration(o.KeepFor)
	}
	for _, u := range o.HTTP {
		sw.Verify.HTTP = append(sw.Verify.HTTP, verify.HTTPCheck{URL: u, Status: 200})
	}
	if o.SSHUser != "" {
		sw.Verify.SSH = &plans.SSH{User: o.SSHUser, Key: o.SSHKey, Port: o.SSHPort, KnownHosts: o.HostKeys}
	}
	if len(o.Carry) > 0 {
		sw.Carry = &plans.Carry{Paths: o.Carry, Exclude: o.CarryEx}
	} else if len(o.CarryEx) > 0 {
		errs = append(errs, "--carry-exclude needs --carry: the paths to carry")
	}
	if (len(o.Carry) > 0 || o.OnDiverg != "" && o.OnDiverg != "off") && o.SSHUser == "" {
		errs = append(errs, "--carry and --on-divergence work over SSH: add --ssh-user (and --ssh-key)")
	}
	if o.OnDiverg != "" {
		sw.Divergence = &plans.Divergence{OnFound: o.OnDiverg}
	}
	sw.Gates = o.Gates
	if o.Names == "suffix" {
		sw.Names = o.Names
	} else if o.Names != "keep" && o.Names != "" {
		errs = append(errs, fmt.Sprintf("--names %q: want keep or suffix", o.Names))
	}
	if o.HostChk == "fail" {
		sw.Verify.HostnameCheck = o.HostChk
	} else if o.HostChk != "warn" && o.HostChk != "" {
		errs = append(errs, fmt.Sprintf("--hostname-check %q: want warn or fail", o.HostChk))
	}
	switch {
	case o.LB != "":
		sw.Cutover.LoadBalancer = &plans.LBCutover{Provider: "main", ID: o.LB, IdentifyHeader: o.Identify, Drain: plans.Duration(o.Drain)}
	case o.DNS != "":
		sw.Cutover.DNS = &plans.DNSCutover{Provider: "main", Record: o.DNS, Grace: plans.Duration(o.Grace)}
	case o.IP != "":
		sw.Cutover.ReservedIP = &plans.IPCutover{Provider: "main", IP: o.IP, Drain: plans.Duration(o.Drain)}
	}
	if o.ProbeURL != "" {
		sw.Probe = &plans.Probe{URL: o.ProbeURL, Rate: o.Rate, Resolver: o.Resolver}
	}
	var st *plans.Strategy
	if o.MaxParallel != 0 || o.MaxUnavailable != 0 || o.Canary != 0 || o.PauseWaves != 0 || len(o.WaveGates) > 0 || o.OnFailure != "" || o.Prepare != "" {
		st = &plans.Strategy{MaxParallel: o.MaxParallel, MaxUnavailable: o.MaxUnavailable, Canary: o.Canary,
			PauseBetweenWaves: plans.Duration(o.PauseWaves), Gates: o.WaveGates, OnFailure: o.OnFailure, Prepare: o.Prepare}
	}
	if len(errs) > 0 {
		return nil, errors.New(strings.Join(errs, "\n"))
	}
	p := &plans.Plan{
		Version:   plans.Version,
		ID:        newRunID()[:8],
		Providers: map[string]plans.Provider{"main": {Type: o.Provider, Endpoint: o.Endpoint, Nameserver: o.NS}},
		Strategy:  st,
	}
	for _, src := range o.Sources {
		s := sw
		s.Source.Server = src
		if len(o.Sources) > 1 {
			s.Name = src
		}
		p.Swaps = append(p.Swaps, s)
	}
	if o.Tag != "" {
		p.Fleet = &plans.Fleet{Provider: "main", Tag: o.Tag}
		p.Swaps = []plans.Swap{sw} // the template, one per server once the tag is read
	}
	return p, nil
}

// expandFleet replaces a fleet plan's template swap with one swap per
// server carrying the tag, by name.
func expandFleet(ctx context.Context, p *plans.Plan, getenv func(string) string) error {
	if p.Fleet == nil || len(p.Swaps) != 1 || p.Swaps[0].Source.Server != "" {
		return nil
	}
	servers, err := runner.FleetServers(ctx, p, registry.BuildOptions{Getenv: getenv})
	if err != nil {
		return err
	}
	if len(servers) == 0 {
		return fmt.Errorf("no server carries the tag %s", p.Fleet.Tag)
	}
	tmpl := p.Swaps[0]
	p.Swaps = nil
	seen := map[string]int{}
	for _, srv := range servers {
		seen[srv.Name]++
	}
	for _, srv := range servers {
		s := tmpl
		s.Name, s.Source.Server = srv.Name, srv.Name
		if seen[srv.Name] > 1 {
			// Two servers with one name: each is named by its ID.
			s.Name, s.Source.Server = srv.Name+"-"+srv.ID, srv.ID
		}
		p.Swaps = append(p.Swaps, s)
	}
	return nil
}

// encodePlan renders a plan with a header a reader understands.
func encodePlan(p *plans.Plan) ([]byte, error) {
	var b bytes.Buffer
	fmt.Fprintf(&b, "# vmswap plan, written %s.\n# Review it, then: vmswap apply <this file>. Credentials come from the environment.\n", time.Now().UTC().Format(time.RFC3339))
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(p); err != nil {
		return nil, err
	}
	return b.Bytes(), enc.Close()
}

func planRun(ctx context.Context, o *PlanOptions) error {
	if ctx == nil {
		ctx = context.Background()
	}
	var p *plans.Plan
	out := o.Out
	if o.Refresh != "" {
		doc, err := plans.Load(o.Refresh)
		if err != nil {
			return planErrors(err)
		}
		p = doc.Plan
		if out == "" {
			out = o.Refresh
		}
	} else {
		var err error
		if p, err = buildPlan(o); err != nil {
			return exitf(runner.ExitBadInput, "%v", err)
		}
		if err := expandFleet(ctx, p, o.Getenv); err != nil {
			return exitf(runner.ExitBadInput, "%v", err)
		}
	}
	if out != "" && out != "-" {
		// Never write over a plan whose run is not finished: finishing or
		// undoing it is the next step, and the file is what the user knows.
		if err := runner.CheckReplan(out); err != nil {
			return exitf(runner.ExitBadInput, "%v", err)
		}
	}
	if err := runner.ObserveWorld(ctx, p, registry.BuildOptions{Getenv: o.Getenv, Progress: func(f string, a ...any) {
		fmt.Fprintf(o.IO.ErrOut, f+"\n", a...)
	}}); err != nil {
		return exitf(runner.ExitBadInput, "%v", err)
	}
	b, err := encodePlan(p)
	if err != nil {
		return err
	}
	// The plan must parse back: it is what apply will read.
	if _, err := plans.Check(orStdout(out), b); err != nil {
		// Positions in a file that was never written help nobody: the
		// messages name the fields, which the flags set.
		msg := regexp.MustCompile(regexp.QuoteMeta(orStdout(out))+`:\d+:\d+: `).ReplaceAllString(err.Error(), "")
		return exitf(runner.ExitBadInput, "the plan from these flags is not valid (nothing was written):\n%s", msg)
	}
	toStdout := out == "" || out == "-"
	if !toStdout {
		if err := os.WriteFile(out, b, 0o644); err != nil {
			return err
		}
	}
	if o.Format == "json" {
		return planEvent(o.IO, p, out, toStdout)
	}
	if toStdout {
		_, err = o.IO.Out.Write(b)
	} else {
		fmt.Fprintf(o.IO.ErrOut, "wrote %s; apply will:\n", out)
	}
	for _, m := range p.Mutations {
		if !toStdout {
			fmt.Fprintf(o.IO.ErrOut, "  - %s\n", m)
		}
	}
	printCost(o.IO, p)
	return err
}

// printCost says what the plan's swaps cost, on stderr.
func printCost(io *IOStreams, p *plans.Plan) {
	if p.Observed == nil {
		return
	}
	var lines []string
	for i, seen := range p.Observed.Swaps {
		lines = append(lines, runner.CostLines(p.Swaps[i].Source.Server, seen.Cost)...)
	}
	if len(lines) == 0 {
		return
	}
	fmt.Fprintln(io.ErrOut, "cost, from the provider's prices:")
	for _, l := range lines {
		fmt.Fprintf(io.ErrOut, "  %s\n", l)
	}
}

// planEvent prints the plan's changes and cost as one JSON event, with the
// plan itself when it was not written to a file.
func planEvent(io *IOStreams, p *plans.Plan, file string, withPlan bool) error {
	type swapCost struct {
		Source string      `json:"source"`
		Cost   *plans.Cost `json:"cost,omitempty"`
	}
	ev := struct {
		Event     string      `json:"event"`
		Time      time.Time   `json:"time"`
		File      string      `json:"file,omitempty"`
		Mutations []string    `json:"mutations"`
		Swaps     []swapCost  `json:"swaps"`
		Plan      *plans.Plan `json:"plan,omitempty"`
	}{Event: "plan", Time: time.Now().UTC(), Mutations: p.Mutations}
	if withPlan {
		ev.Plan = p
	} else {
		ev.File = file
	}
	if p.Observed != nil {
		for i, seen := range p.Observed.Swaps {
			ev.Swaps = append(ev.Swaps, swapCost{p.Swaps[i].Source.Server, seen.Cost})
		}
	}
	b, err := json.Marshal(ev)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(io.Out, string(b))
	return err
}

func orStdout(s string) string {
	if s == "" || s == "-" {
		return "<stdout>"
	}
	return s
}
