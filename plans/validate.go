package plans

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"net/url"
	"path"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/http/httpguts"
)

var planIDSyntax = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,31}$`)

// Validate checks everything that can be checked without touching a cloud:
// versions, references between blocks, capabilities of the referenced
// driver types, syntax of sizes, URLs and addresses. Every problem is
// reported at once, at its place in the file.
func (d *Document) Validate() error {
	p := d.Plan
	var errs Errors
	add := func(path, format string, args ...any) { errs = append(errs, d.at(path, format, args...)) }
	d.checkRules(reflect.ValueOf(p).Elem(), "", add)

	switch {
	case p.Version == 0:
		add("version", "missing version: the first line of a plan is `version: %d`", Version)
	case p.Version != Version:
		add("version", "plan format version %d is not supported by this vmswap (it reads version %d): use the vmswap release that wrote it, or write a new plan with `vmswap plan`", p.Version, Version)
	}
	if p.ID != "" && !planIDSyntax.MatchString(p.ID) {
		add("id", "plan id %q: use 1-32 lowercase letters, digits and dashes", p.ID)
	}
	for name, pb := range p.Providers {
		path := "providers." + name
		if pb.Type == "" {
			add(path, "missing type: one of %s", strings.Join(DriverTypes(), ", "))
		}
		switch {
		case pb.Type == "rfc2136":
			if _, _, err := net.SplitHostPort(pb.Endpoint); err != nil {
				add(path+".endpoint", "rfc2136 endpoint %q: the primary nameserver as host:port, like ns1.example.com:53", pb.Endpoint)
			}
			if pb.TSIGKey == "" {
				add(path, "rfc2136 updates are signed: set tsig_key (the secret comes from RFC2136_TSIG_SECRET)")
			}
		case pb.Type == "haproxy":
			if !strings.HasPrefix(pb.Endpoint, "unix://") && !strings.HasPrefix(pb.Endpoint, "tcp://") && !strings.HasPrefix(pb.Endpoint, "/") {
				add(path+".endpoint", "haproxy endpoint %q: the runtime API socket, unix:///run/haproxy/admin.sock or tcp://127.0.0.1:9999", pb.Endpoint)
			}
		case pb.Type == "nginx":
			validateNginx(path, pb, add)
		case pb.Endpoint != "":
			checkURL(path+".endpoint", "endpoint", pb.Endpoint, add)
			if pb.Type != "aws" && plainRemote(pb.Endpoint) {
				// AWS signs its requests; these APIs take the token itself.
				add(path+".endpoint", "endpoint %q is plain http to another machine: the API token would cross the network unencrypted; use https:// (plain http is for loopback, as the lab)", pb.Endpoint)
			}
		}
		if pb.Type != "nginx" && (pb.Command != "" || pb.Address != "" || pb.Port != 0 || pb.SSH != nil) {
			add(path, "command, address, port and ssh are settings of an nginx provider, not of %s", pb.Type)
		}
		if pb.Type != "aws" && pb.Type != "" && pb.Region != "" {
			add(path+".region", "region is a setting of an aws provider, not of %s", pb.Type)
		}
		if pb.Type != "rfc2136" && pb.Type != "" && (pb.TSIGKey != "" || pb.TSIGAlgorithm != "") {
			add(path, "tsig_key and tsig_algorithm are settings of an rfc2136 provider, not of %s", pb.Type)
		}
		if pb.Nameserver != "" && !(pb.Type == "aws" && pb.Nameserver == "none") {
			host, port, err := net.SplitHostPort(pb.Nameserver)
			if n, perr := strconv.Atoi(port); err != nil || perr != nil || n < 1 || n > 65535 || host == "" || strings.ContainsAny(pb.Nameserver, " \t") {
				add(path+".nameserver", "nameserver %q: want host:port with a port from 1 to 65535, like ns1.digitalocean.com:53", pb.Nameserver)
			}
		}
		if strings.Contains(strings.ToLower(name), "token=") {
			add(path, "provider blocks name credentials' environment variables, never hold them")
		}
		if pb.TokenEnv != "" && (!envName.MatchString(pb.TokenEnv) || LooksLikeSecret(pb.TokenEnv)) {
			// Never echo it: a value that is not a variable name may be a
			// pasted token.
			add(path+".token_env", "token_env must name an environment variable (letters, digits, _), like DO_TOKEN; it must not hold the token itself (its value is not shown here)")
		}
	}
	if st := p.State; st != nil {
		switch {
		case st.S3 == nil:
			add("state", "state needs an s3 block: {s3: {bucket: ..., prefix: ...}}")
		case st.S3.Bucket == "":
			add("state.s3", "missing bucket")
		case st.S3.Endpoint != "":
			checkURL("state.s3.endpoint", "endpoint", st.S3.Endpoint, add)
		}
		if st.S3 != nil && st.S3.Lease > 0 && st.S3.Lease.D() < 3*time.Second {
			add("state.s3.lease", "a lease under 3s cannot be renewed in time: use 3s or more (default 2m)")
		}
		if p.ID == "" {
			add("state", "a plan with remote state needs an id (its objects live under PREFIX/ID/): `vmswap plan` writes one")
		}
	}
	sources := map[string]int{}
	for i, sw := range p.Swaps {
		d.validateSwap(i, sw, add)
		key := sw.Source.Provider + "/" + sw.Source.Server
		if j, ok := sources[key]; ok {
			add(fmt.Sprintf("swaps[%d].source", i), "source %s is already swapped by swaps[%d]", sw.Source.Server, j)
		}
		sources[key] = i
	}
	d.validateRollout(add)
	if len(errs) > 0 {
		sortErrors(errs)
		return errs
	}
	return nil
}

// validateRollout checks the fleet and strategy blocks, and that the
// observations match the swaps: one per swap, no server swapped twice
// (by name in one swap and by ID in another), every server of the fleet
// swapped.
func (d *Document) validateRollout(add func(string, string, ...any)) {
	p := d.Plan
	if o := p.Observed; o != nil {
		if len(o.Swaps) != len(p.Swaps) {
			add("observed", "the plan has %d swaps but observed %d: swaps were added or removed by hand; write it again with vmswap plan --refresh", len(p.Swaps), len(o.Swaps))
		}
		seen := map[string]int{}
		for i, os := range o.Swaps {
			if i < len(p.Swaps) && os.Source.ID != "" {
				if ref := p.Swaps[i].Source.Server; ref != os.Source.ID && ref != os.Source.Name {
					add(fmt.Sprintf("swaps[%d].source.server", i), "source %q is not the server observed for this swap (%s, %s): the swap was edited by hand; write the plan again with vmswap plan --refresh", ref, os.Source.Name, os.Source.ID)
				}
			}
			if j, dup := seen[os.Source.ID]; dup && os.Source.ID != "" {
				add(fmt.Sprintf("swaps[%d].source", i), "swaps[%d] and swaps[%d] upgrade the same server %s (%s)", j, i, os.Source.Name, os.Source.ID)
			}
			seen[os.Source.ID] = i
		}
		if p.Fleet != nil {
			for _, m := range o.Fleet {
				if _, ok := seen[m.ID]; !ok {
					add("fleet", "%s (%s) carries the tag %s but no swap upgrades it: write the plan again with vmswap plan --refresh", m.Name, m.ID, p.Fleet.Tag)
				}
			}
		}
	}
	if f := p.Fleet; f != nil {
		d.providerRef("fleet.provider", f.Provider, CapCompute, add)
		if pb := p.Providers[f.Provider]; pb.Type == "aws" && !strings.Contains(f.Tag, "=") {
			add("fleet.tag", "an AWS fleet is selected by a tag as key=value, like role=web")
		}
		for i, sw := range p.Swaps {
			if sw.Source.Provider != f.Provider {
				add(fmt.Sprintf("swaps[%d].source.provider", i), "the fleet's servers are in provider %q; this swap's source is in %q", f.Provider, sw.Source.Provider)
			}
		}
	}
	st := p.Strategy
	if st == nil {
		return
	}
	if st.Canary > 0 && st.Canary >= len(p.Swaps) {
		add("strategy.canary", "canary %d leaves no swap for a later wave (the plan has %d): use a smaller canary", st.Canary, len(p.Swaps))
	}
	if st.MaxUnavailable > 0 && st.MaxParallel > 0 && st.MaxUnavailable > st.MaxParallel {
		add("strategy.max_unavailable", "max_unavailable %d is more than max_parallel %d: at most max_parallel swaps run at once", st.MaxUnavailable, st.MaxParallel)
	}
	if d := st.PauseBetweenWaves.D(); d > 24*time.Hour {
		add("strategy.pause_between_waves", "pause_between_waves %s is over a day: use a gate (after_each_wave) and apply --continue instead", d)
	}
	for i, g := range st.Gates {
		if slices.Index(st.Gates, g) != i {
			add(fmt.Sprintf("strategy.gates[%d]", i), "gate %s is listed twice", g)
		}
		switch g {
		case "after_canary":
			if st.Canary == 0 {
				add(fmt.Sprintf("strategy.gates[%d]", i), "gate after_canary needs a canary: set strategy.canary")
			}
		case "after_each_wave":
		default:
			add(fmt.Sprintf("strategy.gates[%d]", i), "unknown gate %q: after_canary or after_each_wave", g)
		}
	}
	if st.PauseBetweenWaves.D() < 0 {
		add("strategy.pause_between_waves", "pause_between_waves must not be negative")
	}
}

// providerRef checks that a block named in path exists and has capability c.
func (d *Document) providerRef(path, name string, c Capability, add func(string, string, ...any)) {
	if name == "" {
		add(path, "missing provider: name one of the providers blocks")
		return
	}
	pb, ok := d.Plan.Providers[name]
	if !ok {
		var known []string
		for k := range d.Plan.Providers {
			known = append(known, k)
		}
		add(path, "unknown provider %q%s", name, suggest(name, known))
		return
	}
	if _, ok := DriverTypeTable[pb.Type]; ok && !HasCap(pb.Type, c) {
		add(path, "provider %q (%s) cannot do %s", name, pb.Type, c)
	}
}

// secretShape is what API tokens look like and variable names do not:
// DigitalOcean's prefixes, long runs of hex, long unbroken base64.
var secretShape = regexp.MustCompile(`(?i)^(dop|doo|dor|dos)_v1_|^(ghp|gho|ghs|github_pat|glpat)[_-]|[0-9a-fA-F]{20,}|[A-Za-z0-9+/=]{40,}`)

// LooksLikeSecret reports whether s, where the name of an environment
// variable belongs, looks like a pasted token instead: a known token
// prefix, a long run of hex, or a long mix of upper and lower case letters
// and digits (variable names are upper case). It is never printed.
func LooksLikeSecret(s string) bool {
	if secretShape.MatchString(s) {
		return true
	}
	upper, lower, digit := strings.ContainsAny(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZ"), strings.ContainsAny(s, "abcdefghijklmnopqrstuvwxyz"), strings.ContainsAny(s, "0123456789")
	return len(s) >= 24 && upper && lower && digit
}

// envName is what an environment variable's name may be.
var envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

func (d *Document) validateSwap(i int, sw Swap, add func(string, string, ...any)) {
	at := func(s string) string { return fmt.Sprintf("swaps[%d].%s", i, s) }
	d.providerRef(at("source.provider"), sw.Source.Provider, CapCompute, add)
	if sw.Source.Server == "" {
		add(at("source"), "missing source.server: the name or ID of the server to upgrade")
	}
	switch pb, ok := d.Plan.Providers[sw.Source.Provider]; {
	case sw.Target.Size == "":
		add(at("target"), "missing target.size")
	case ok && DriverTypeTable[pb.Type].SizeSyntax != nil && !DriverTypeTable[pb.Type].SizeSyntax.MatchString(sw.Target.Size):
		add(at("target.size"), "size %q is not %s", sw.Target.Size, DriverTypeTable[pb.Type].SizeHint)
	}
	if t := sw.ReadyTimeout; t > 0 && t.D() < time.Second {
		// Each wait of the run and of its rollback is bounded by it: below
		// a second not even a provider's answer arrives, and a run could
		// never be rolled back.
		add(at("ready_timeout"), "ready_timeout %s is too short to wait for anything: at least 1s (default 15m)", t.D())
	}

	if c := sw.Cutover.LoadBalancer; c != nil {
		d.providerRef(at("cutover.loadbalancer.provider"), c.Provider, CapLB, add)
		if c.ID == "" {
			add(at("cutover.loadbalancer"), "missing id: the load balancer's ID")
		}
		if h := c.IdentifyHeader; h != "" && !httpguts.ValidHeaderFieldName(h) {
			add(at("cutover.loadbalancer.identify_header"), "identify_header %q is not an HTTP header name: a token of letters, digits and symbols such as - and _, with no space, colon or other separator, like X-Served-By", h)
		}
		if pb := d.Plan.Providers[c.Provider]; pb.Type == "nginx" && c.IdentifyHeader == "" {
			add(at("cutover.loadbalancer"), "nginx reports no member's health: set identify_header to a response header that names the server (X-Served-By), so vmswap proves requests through nginx reach the new one")
		}
	}
	if c := sw.Cutover.DNS; c != nil {
		d.providerRef(at("cutover.dns.provider"), c.Provider, CapDNS, add)
		if c.Record == "" || !strings.Contains(c.Record, ".") {
			add(at("cutover.dns.record"), "record %q: want a fully qualified name like www.example.com", c.Record)
		}
	}
	if c := sw.Cutover.ReservedIP; c != nil {
		d.providerRef(at("cutover.reserved_ip.provider"), c.Provider, CapReservedIP, add)
		if net.ParseIP(c.IP) == nil {
			add(at("cutover.reserved_ip.ip"), "ip %q is not an IP address", c.IP)
		}
	}

	if pr := sw.Probe; pr != nil {
		checkURL(at("probe.url"), "probe url", pr.URL, add)
		if pr.Resolver != "" {
			if _, _, err := net.SplitHostPort(pr.Resolver); err != nil {
				add(at("probe.resolver"), "resolver %q: want host:port", pr.Resolver)
			}
		}
	} else if sw.Cutover.DNS != nil {
		add(at("cutover.dns"), "a DNS cutover needs a probe url with the record's name, so that vmswap can watch traffic")
	}
	for j, h := range sw.Verify.HTTP {
		checkURL(at(fmt.Sprintf("verify.http[%d].url", j)), "url", h.URL, add)
	}
	if len(sw.Verify.Compare) > 0 && sw.Verify.CompareBase == "" && len(sw.Verify.HTTP) == 0 && sw.Probe == nil {
		add(at("verify.compare"), "compare needs a base URL: set verify.compare_base, an http check or a probe")
	}
	if s := sw.Verify.SSH; s != nil {
		if s.User == "" {
			add(at("verify.ssh"), "missing ssh user")
		}
	}
	if sw.Quiesce && sw.Verify.SSH == nil {
		add(at("quiesce"), "quiesce runs sync on the source over SSH: add verify.ssh")
	}
	if (sw.Verify.Memory != nil || sw.Verify.Disk != nil || sw.Verify.CPUs != nil) && sw.Verify.SSH == nil {
		add(at("verify"), "memory, disk and cpus are read over SSH: add verify.ssh")
	}
	if c := sw.Carry; c != nil {
		if sw.Verify.SSH == nil {
			add(at("carry"), "carried paths are copied over SSH: add verify.ssh")
		}
		for j, p := range c.Paths {
			if msg := absPathProblem(p); msg != "" {
				add(at(fmt.Sprintf("carry.paths[%d]", j)), "carry path %q: %s", p, msg)
			}
		}
		for j, pat := range c.Exclude {
			if _, err := path.Match(pat, ""); err != nil {
				add(at(fmt.Sprintf("carry.exclude[%d]", j)), "exclude pattern %q: %v", pat, err)
			}
		}
	}
	if dv := sw.Divergence; dv != nil {
		for j, pat := range dv.Ignore {
			if _, err := path.Match(pat, ""); err != nil {
				add(at(fmt.Sprintf("divergence.ignore[%d]", j)), "ignore pattern %q: %v", pat, err)
			}
		}
		if sw.Verify.SSH == nil && dv.OnFound != "off" {
			add(at("divergence"), "the divergence report looks over SSH: add verify.ssh, or set on_found: off")
		}
		for j, p := range dv.Watch {
			if msg := absPathProblem(p); msg != "" {
				add(at(fmt.Sprintf("divergence.watch[%d]", j)), "watch path %q: %s", p, msg)
			}
		}
	}
	for _, ph := range sw.Hooks.Phases() {
		for j, h := range ph.Hooks {
			where := at(fmt.Sprintf("hooks.%s[%d]", ph.Name, j))
			if strings.TrimSpace(h.Run) == "" {
				add(where, "a hook needs a command in run")
			} else if len(h.Run) > 8192 {
				add(where, "a hook's command is %d characters long; keep it under 8192 (put a longer one in a script on the server)", len(h.Run))
			}
			if h.On == "" {
				add(where, "say where the hook runs: on: source or on: new")
			}
			if h.On == "new" && (ph.Name == "before_snapshot" || ph.Name == "after_snapshot") {
				add(where, "there is no new server yet at %s: use on: source", ph.Name)
			}
			if sw.Verify.SSH == nil {
				add(where, "hooks run over SSH: add verify.ssh")
			}
		}
	}
	for j, c := range sw.Verify.Commands {
		if strings.TrimSpace(c.Run) == "" {
			add(at(fmt.Sprintf("verify.commands[%d]", j)), "a command needs run")
		}
	}
	if len(sw.Verify.Commands) > 0 && len(sw.PublicHosts()) == 0 {
		add(at("verify.commands"), "commands reach the new server through the site's hostnames: add an http check or a probe url with them")
	}
	for j, g := range sw.Gates {
		if g != "before_cutover" {
			add(at(fmt.Sprintf("gates[%d]", j)), "unknown gate %q (known: before_cutover)", g)
		}
	}
	if sw.Retire.Action == "delete" && sw.Retire.KeepFor > 0 {
		add(at("retire.keep_for"), "keep_for applies to power_off; a deleted server cannot be kept")
	}
}

// PlanID returns the plan's ID: its id field, or a hash of the file.
func (d *Document) PlanID() string {
	if d.Plan.ID != "" {
		return d.Plan.ID
	}
	return d.Hash()[:8]
}

// Hash identifies the plan file's content.
func (d *Document) Hash() string {
	h := sha256.Sum256(d.Raw)
	return hex.EncodeToString(h[:])
}

// absPathProblem says what is wrong with a path that must be absolute on
// a server, or "".
func absPathProblem(p string) string {
	switch {
	case strings.ContainsRune(p, 0):
		return "it contains a NUL byte"
	case !strings.HasPrefix(p, "/"):
		return "want an absolute path on the server, starting with /"
	case path.Clean(p) == "/":
		return "the whole disk cannot be carried: name the directories that hold what users write"
	case path.Clean(p) != strings.TrimSuffix(p, "/") || strings.Contains(p, "\x00"):
		return fmt.Sprintf("write it plainly, as %s", path.Clean(p))
	}
	return ""
}

// checkURL adds URLProblem's problem with raw, if any, at field.
func checkURL(field, what, raw string, add func(string, string, ...any)) {
	if p := URLProblem(what, raw); p != "" {
		add(field, "%s", p)
	}
}

// plainRemote reports whether raw is an http:// URL (no TLS) to a host
// other than this machine.
func plainRemote(raw string) bool {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "http" {
		return false
	}
	if h := u.Hostname(); h == "localhost" || strings.HasSuffix(h, ".localhost") {
		return false
	}
	ip := net.ParseIP(u.Hostname())
	return ip == nil || !ip.IsLoopback()
}

// URLProblem says what is wrong with raw as the URL named what, or "": it
// must be http:// or https:// with a host, and hold no user or password
// (a token often stands as the user), which would be copied into the
// plan, the journal, the output and the report. What comes before an @ is
// never shown.
func URLProblem(what, raw string) string {
	u, err := url.Parse(raw)
	shown := fmt.Sprintf("%q", raw)
	if i := strings.LastIndex(raw, "@"); i >= 0 {
		// Whatever comes before an @ may be a password or a token, in a
		// URL of any shape: only what follows it is shown.
		shown = fmt.Sprintf("%q", "…"+raw[i:])
	}
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Sprintf("%s %s: want an http:// or https:// URL", what, shown)
	}
	if u.User != nil {
		hint := "check a path that needs no login (a health endpoint)"
		if what == "endpoint" {
			hint = "credentials come from the environment (the provider's token_env; for S3 the AWS_* variables)"
		}
		return fmt.Sprintf("%s %s: no user or password in the URL: it would be copied into the plan, the journal, the output and the report; %s", what, shown, hint)
	}
	return ""
}

// validateNginx checks an nginx provider block: the upstream files'
// directory, here or on a host over SSH, and the address nginx listens on.
func validateNginx(path string, pb Provider, add func(string, string, ...any)) {
	dir := pb.Endpoint
	if strings.HasPrefix(dir, "ssh://") {
		u, err := url.Parse(dir)
		if err != nil || u.Hostname() == "" || u.User.Username() == "" || u.Path == "" || u.RawQuery != "" {
			add(path+".endpoint", "nginx endpoint %q: ssh://USER@HOST[:PORT]/DIR, the proxy host and the directory of the upstream files", pb.Endpoint)
		} else if _, set := u.User.Password(); set {
			add(path+".endpoint", "nginx endpoint: no password in the URL; vmswap logs in with a key (ssh.key) or ssh-agent")
		}
		if pb.SSH != nil && pb.SSH.KnownHosts == "accept-new" && pb.SSH.KnownHostsFile == "" {
			add(path+".ssh", "known_hosts: accept-new needs known_hosts_file: vmswap never writes ~/.ssh/known_hosts")
		}
		dir = u.Path
	} else if pb.SSH != nil {
		add(path+".ssh", "ssh is for an nginx on another host: write endpoint as ssh://USER@HOST/DIR")
	}
	if !strings.HasPrefix(dir, "/") && !filepath.IsAbs(dir) {
		add(path+".endpoint", "nginx endpoint %q: the absolute directory of the upstream files vmswap owns (/etc/nginx/vmswap), or ssh://USER@HOST/DIR on a proxy host", pb.Endpoint)
	}
	if _, _, err := net.SplitHostPort(pb.Address); err != nil {
		add(path+".address", "nginx address %q: the host:port nginx listens on for the site, like 10.0.0.2:80", pb.Address)
	}
	if strings.ContainsAny(pb.Command, "\"'$`;|&<>") {
		add(path+".command", "nginx command %q: words only (no quotes or shell syntax), like nginx -c /etc/nginx/nginx.conf", pb.Command)
	}
}
