// Package plans is vmswap's plan file: the model, parsing with line:column
// errors, validation and the JSON Schema, from one set of rules.
//
// A plan (YAML, version 1) states every input of one or more swaps: the
// providers by type (never secrets), the source server, the target size, the
// checks, the cutover, the probe and what to do with the old server. `vmswap
// plan` writes one from what it observes, recording those observations so
// that apply can refuse a plan whose world has changed. The runner that
// applies plans is plans/runner; the drivers it runs with are built by
// plans/registry.
package plans

import (
	"fmt"
	"net"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/vmswap/vmswap/dns"
	"github.com/vmswap/vmswap/loadbalancer"
	"github.com/vmswap/vmswap/provider"
	"github.com/vmswap/vmswap/verify"
)

// Version is the plan format this vmswap reads and writes. Other versions
// are refused, never migrated silently.
const Version = 1

// Plan is a plan file.
type Plan struct {
	Version int `yaml:"version" json:"version" doc:"Plan format version; must be 1."`
	// ID names the plan in the tags of what it creates. `vmswap plan` sets it;
	// without one, the plan file's hash is used.
	ID        string              `yaml:"id,omitempty" json:"id,omitempty" doc:"Plan ID, carried in a tag on everything the plan creates."`
	Providers map[string]Provider `yaml:"providers" json:"providers" check:"nonempty,label=providers" doc:"Named provider blocks, referred to by swaps."`
	Swaps     []Swap              `yaml:"swaps" json:"swaps" check:"nonempty,label=swaps" doc:"The swaps, applied in order."`
	// Fleet says the swaps are every server of a group (a tag), as observed
	// when the plan was written.
	Fleet *Fleet `yaml:"fleet,omitempty" json:"fleet,omitempty" doc:"The group of servers the swaps upgrade (a tag); a server that joined or left it since the plan was written makes apply refuse the plan as stale."`
	// Strategy says how many swaps run at once, and where apply stops.
	Strategy *Strategy `yaml:"strategy,omitempty" json:"strategy,omitempty" doc:"How the swaps roll out: waves of max_parallel after a canary, gates, what a failure does. Default: one at a time."`
	// State keeps the journal and lock in object storage instead of beside
	// the plan file, so a run outlives the machine that started it.
	State *State `yaml:"state,omitempty" json:"state,omitempty" doc:"Where the run's journal and lock live: beside the plan file by default, or in S3-compatible storage."`
	// Observed is what `vmswap plan` saw; apply refuses the plan if the world
	// differs.
	Observed *Observed `yaml:"observed,omitempty" json:"observed,omitempty" doc:"What vmswap plan observed; apply refuses the plan if the world differs."`
	// Mutations lists, for a reader, every change apply will make.
	Mutations []string `yaml:"mutations,omitempty" json:"mutations,omitempty" doc:"Every change apply will make, for a reviewer."`
}

// Fleet is the group of servers a plan upgrades.
type Fleet struct {
	Provider string `yaml:"provider" json:"provider" doc:"A key of providers: where the servers are."`
	// Tag selects the servers: a DigitalOcean tag, or an AWS tag as key=value.
	Tag string `yaml:"tag" json:"tag" check:"nonempty,label=fleet.tag" doc:"The tag every server of the fleet carries (AWS: key=value)."`
}

// Strategy is how a plan's swaps roll out. The zero value is one swap at
// a time, in order, as a plan without a strategy.
type Strategy struct {
	// MaxParallel is the most swaps in one wave. Zero: 1.
	MaxParallel int `yaml:"max_parallel,omitempty" json:"max_parallel,omitempty" check:"range=0..100,label=max_parallel" doc:"Swaps in one wave, run at once; default 1."`
	// MaxUnavailable is the most swaps moving traffic (the cutover step, when
	// an old member leaves the pool) at once. Zero: MaxParallel.
	MaxUnavailable int `yaml:"max_unavailable,omitempty" json:"max_unavailable,omitempty" check:"range=0..100,label=max_unavailable" doc:"Most swaps in their cutover (an original member leaving the pool, after its replacement joined) at once; default max_parallel."`
	// Canary is how many swaps run alone, as a first wave.
	Canary int `yaml:"canary,omitempty" json:"canary,omitempty" check:"range=0..100,label=canary" doc:"Swaps run first, alone, as wave 1; default 0."`
	// PauseBetweenWaves is waited after each wave but the last.
	PauseBetweenWaves Duration `yaml:"pause_between_waves,omitempty" json:"pause_between_waves,omitempty" doc:"Wait between waves, e.g. 1m."`
	// Gates are where apply stops for a person (exit 4) until apply --continue:
	// after_canary, after_each_wave.
	Gates []string `yaml:"gates,omitempty" json:"gates,omitempty" doc:"Where apply pauses (exit 4) for apply --continue: after_canary, after_each_wave."`
	// Prepare is when a wave's new servers are made: "ahead" (the
	// default), while the wave before it moves traffic and is observed,
	// once that wave is past verify; or "in_wave", when the wave starts.
	Prepare string `yaml:"prepare,omitempty" json:"prepare,omitempty" check:"enum=ahead|in_wave,label=prepare" doc:"When a wave's snapshots and new servers are made: ahead (default: while the wave before it moves traffic and is observed, never across a gate; a wave that fails rolls back what was prepared for the next) or in_wave (when the wave starts)."`
	// OnFailure is what the other swaps of a wave do when one fails.
	OnFailure string `yaml:"on_failure,omitempty" json:"on_failure,omitempty" check:"enum=rollback_wave|finish_wave,label=on_failure" doc:"When a swap of a wave fails: rollback_wave (default: the wave's unfinished swaps roll back) or finish_wave (they finish); no further wave starts either way."`
}

// Waves splits n swaps into the strategy's waves of indexes: the canary
// first, then waves of MaxParallel.
func (s *Strategy) Waves(n int) [][]int {
	per, canary := 1, 0
	if s != nil {
		per, canary = max(s.MaxParallel, 1), min(s.Canary, n)
	}
	var out [][]int
	next := 0
	if canary > 0 {
		out = append(out, seq(0, canary))
		next = canary
	}
	for next < n {
		end := min(next+per, n)
		out = append(out, seq(next, end))
		next = end
	}
	return out
}

func seq(from, to int) []int {
	out := make([]int, 0, to-from)
	for i := from; i < to; i++ {
		out = append(out, i)
	}
	return out
}

// Pause is the wait between waves.
func (s *Strategy) Pause() time.Duration {
	if s == nil {
		return 0
	}
	return s.PauseBetweenWaves.D()
}

// Unavailable is how many swaps may be in their cutover at once.
func (s *Strategy) Unavailable() int {
	if s == nil {
		return 1
	}
	if s.MaxUnavailable > 0 {
		return s.MaxUnavailable
	}
	return max(s.MaxParallel, 1)
}

// GateAfter reports whether apply stops after wave w (0-based) of n.
func (s *Strategy) GateAfter(w, n int) bool {
	if s == nil || w >= n-1 {
		return false
	}
	return slices.Contains(s.Gates, "after_each_wave") || (w == 0 && s.Canary > 0 && slices.Contains(s.Gates, "after_canary"))
}

// State says where a plan's run state lives.
type State struct {
	S3 *S3State `yaml:"s3" json:"s3" doc:"S3-compatible storage: AWS S3, DigitalOcean Spaces, Cloudflare R2, MinIO."`
}

// S3State is a bucket and prefix holding a plan's state. Credentials come
// from the environment: SPACES_ACCESS_KEY_ID / SPACES_SECRET_ACCESS_KEY, or
// the AWS chain.
type S3State struct {
	Bucket   string `yaml:"bucket" json:"bucket" doc:"The bucket."`
	Prefix   string `yaml:"prefix,omitempty" json:"prefix,omitempty" doc:"Key prefix; the plan's objects go under PREFIX/PLAN-ID/."`
	Region   string `yaml:"region,omitempty" json:"region,omitempty" doc:"Region; default AWS_REGION, else us-east-1."`
	Endpoint string `yaml:"endpoint,omitempty" json:"endpoint,omitempty" doc:"Endpoint URL for Spaces (https://nyc3.digitaloceanspaces.com), R2 or MinIO; empty: AWS S3."`
	// Lease is how long the lock stays taken without its holder renewing it.
	Lease Duration `yaml:"lease,omitempty" json:"lease,omitempty" doc:"How long the lock outlives a holder that stopped renewing it (killed); default 2m."`
}

// Provider is a provider block. Credentials come from the environment.
type Provider struct {
	Type string `yaml:"type" json:"type" check:"enum=@drivers,label=provider type" doc:"Driver type: digitalocean, aws, hetzner, cloudflare, haproxy, nginx or rfc2136."`
	// Endpoint overrides the API base URL (the lab, a proxy).
	Endpoint string `yaml:"endpoint,omitempty" json:"endpoint,omitempty" doc:"API base URL override (the lab, a proxy)."`
	// Nameserver is the authoritative DNS server (host:port) asked whether a
	// record change is served.
	Nameserver string `yaml:"nameserver,omitempty" json:"nameserver,omitempty" doc:"Authoritative DNS server (host:port) asked whether a change is served."`
	// TokenEnv names the environment variable holding the token, when not the
	// ecosystem's usual one.
	TokenEnv string `yaml:"token_env,omitempty" json:"token_env,omitempty" doc:"Name of the environment variable that holds the API token."`
	// Region is the AWS region; empty: AWS_REGION or the profile's.
	Region string `yaml:"region,omitempty" json:"region,omitempty" doc:"aws: the region; default AWS_REGION or the profile's."`
	// TSIGKey and TSIGAlgorithm name the RFC 2136 key; its secret comes from
	// RFC2136_TSIG_SECRET (or token_env).
	TSIGKey       string `yaml:"tsig_key,omitempty" json:"tsig_key,omitempty" doc:"rfc2136: TSIG key name; the secret comes from RFC2136_TSIG_SECRET."`
	TSIGAlgorithm string `yaml:"tsig_algorithm,omitempty" json:"tsig_algorithm,omitempty" doc:"rfc2136: hmac-sha256 (default), hmac-sha384, hmac-sha512."`
	// Command, Address, Port and SSH are nginx's: how to run it, where it
	// listens, the port of new members, and how to reach its host.
	Command string   `yaml:"command,omitempty" json:"command,omitempty" doc:"nginx: its command line, without -t or -s, e.g. \"nginx -c /etc/nginx/nginx.conf\"; default nginx."`
	Address string   `yaml:"address,omitempty" json:"address,omitempty" doc:"nginx: the host:port it listens on, through which vmswap proves a new member gets requests."`
	Port    int      `yaml:"port,omitempty" json:"port,omitempty" check:"range=0..65535,label=port" doc:"nginx: the port new members are added with; default the first server line's."`
	SSH     *HostSSH `yaml:"ssh,omitempty" json:"ssh,omitempty" doc:"nginx: how to log in to its host when endpoint is ssh://HOST/DIR (known_hosts is strict against ~/.ssh/known_hosts unless known_hosts_file is set)."`
}

// Swap is one server upgrade.
type Swap struct {
	Name    string   `yaml:"name,omitempty" json:"name,omitempty" doc:"A name for output; defaults to the source."`
	Source  Source   `yaml:"source" json:"source"`
	Target  Target   `yaml:"target" json:"target"`
	Verify  Verify   `yaml:"verify,omitempty" json:"verify,omitempty"`
	Cutover Cutover  `yaml:"cutover" json:"cutover" check:"one,label=cutover"`
	Probe   *Probe   `yaml:"probe,omitempty" json:"probe,omitempty"`
	Observe Duration `yaml:"observe,omitempty" json:"observe,omitempty" doc:"Hold under live traffic before retiring the source, e.g. 2m."`
	// Quiesce runs `sync` on the source over SSH (verify.ssh) just before
	// the snapshot. The image is taken live either way, so it is
	// crash-consistent; this flushes the page cache to disk first.
	Quiesce bool   `yaml:"quiesce,omitempty" json:"quiesce,omitempty" doc:"Run sync on the source over SSH (verify.ssh) just before the live, crash-consistent snapshot."`
	Retire  Retire `yaml:"retire,omitempty" json:"retire,omitempty"`
	// Gates are points where apply stops for a person (exit 4) until
	// `vmswap apply --continue`: before_cutover, once the new server passed
	// verify, to look at it before it gets traffic.
	Gates []string `yaml:"gates,omitempty" json:"gates,omitempty" doc:"Points where apply pauses (exit 4) for apply --continue: before_cutover."`
	// Names is what happens to names when the old server is retired: keep
	// (the new server takes the source's name; the old one becomes
	// NAME-retired-RUN) or suffix (the new server keeps NAME-RUN).
	Names string `yaml:"names,omitempty" json:"names,omitempty" check:"enum=keep|suffix,label=names" doc:"keep (default): the new server takes the source's name once the source is retired, and the source becomes NAME-retired-RUN; suffix: the new server stays NAME-RUN."`
	// Carry lists what the source writes after its snapshot that must follow
	// the traffic (uploads, sessions), copied over SFTP.
	Carry *Carry `yaml:"carry,omitempty" json:"carry,omitempty"`
	// Divergence reports what the source wrote after its snapshot outside
	// the carried paths. On by default wherever verify.ssh is set.
	Divergence *Divergence `yaml:"divergence,omitempty" json:"divergence,omitempty"`
	// Hooks run commands over SSH around the snapshot, the cutover and the
	// retire (databases, caches, maintenance modes).
	Hooks *Hooks `yaml:"hooks,omitempty" json:"hooks,omitempty"`
	// ReadyTimeout bounds each wait on the provider. Zero: 15m.
	ReadyTimeout Duration `yaml:"ready_timeout,omitempty" json:"ready_timeout,omitempty" doc:"Bound on each wait for the provider (snapshot, boot, health). Default 15m."`
}

// Source names the server to upgrade.
type Source struct {
	Provider string `yaml:"provider" json:"provider" doc:"A key of providers."`
	Server   string `yaml:"server" json:"server" doc:"Server name or ID."`
}

// Target says what to upgrade to.
type Target struct {
	Size string `yaml:"size" json:"size" doc:"Size slug (DigitalOcean) of the new server."`
}

// Verify lists the checks run against the new server before cutover.
type Verify struct {
	SSH    *SSH               `yaml:"ssh,omitempty" json:"ssh,omitempty"`
	Memory *verify.Threshold  `yaml:"memory,omitempty" json:"memory,omitempty" check:"unit=bytes" doc:"Memory seen inside the server, e.g. \">= 7.5GiB\"."`
	Disk   *verify.Threshold  `yaml:"disk,omitempty" json:"disk,omitempty" check:"unit=bytes" doc:"Root filesystem size, e.g. \">= 150GB\"."`
	CPUs   *verify.Threshold  `yaml:"cpus,omitempty" json:"cpus,omitempty" check:"unit=count" doc:"CPU count, e.g. \">= 4\"."`
	HTTP   []verify.HTTPCheck `yaml:"http,omitempty" json:"http,omitempty" doc:"Requests sent to the new server with the URL's Host header and SNI."`
	// Commands are the user's own tests, run on this machine before the
	// cutover with HTTP(S)_PROXY pointing at a proxy that sends the plan's
	// public hostnames to the new server.
	Commands []Command `yaml:"commands,omitempty" json:"commands,omitempty" doc:"Your own tests (curl, playwright, a shell suite), run here before the cutover through a proxy that sends the site's hostnames to the new server; a failure rolls back."`
	// Compare lists paths requested from old and new; status and body must match.
	Compare []string `yaml:"compare,omitempty" json:"compare,omitempty" doc:"Paths whose status and body must be the same on old and new."`
	// CompareBase is the URL the compare paths are resolved against. Empty:
	// the first HTTP check's URL, else the probe URL.
	CompareBase string `yaml:"compare_base,omitempty" json:"compare_base,omitempty" doc:"Base URL for compare paths; default the first http check's URL."`
	// HostnameCheck is what a new server whose OS hostname is the source's
	// (an image that carried it) gets: warn (default) or fail.
	HostnameCheck string `yaml:"hostname_check,omitempty" json:"hostname_check,omitempty" check:"enum=warn|fail,label=hostname_check" doc:"When the new server's OS hostname is the source's (the image carried it): warn (default) or fail verify."`
	// ConnectAddress sends HTTP checks to this host[:port] instead of the new
	// server's public IP (a bastion, a port-forward).
	ConnectAddress string `yaml:"connect_address,omitempty" json:"connect_address,omitempty" doc:"Send checks here instead of the new server's IP (bastion, port-forward)."`
	// CAFile adds a CA bundle for HTTPS checks.
	CAFile string `yaml:"ca_file,omitempty" json:"ca_file,omitempty" doc:"Extra CA bundle (PEM) for HTTPS checks."`
}

// Command is one of the user's own checks.
type Command struct {
	Run     string   `yaml:"run" json:"run" doc:"A shell command, run from the plan file's directory."`
	Timeout Duration `yaml:"timeout,omitempty" json:"timeout,omitempty" doc:"Default 5m."`
}

// SSH says how to reach the new server from inside.
type SSH struct {
	User string `yaml:"user" json:"user"`
	// Key is a private key file; empty uses ssh-agent.
	Key  string `yaml:"key,omitempty" json:"key,omitempty" doc:"Private key file; empty uses ssh-agent."`
	Port int    `yaml:"port,omitempty" json:"port,omitempty" check:"range=0..65535,label=ssh port" doc:"Default 22."`
	// KnownHosts is the host key policy: strict or accept-new.
	KnownHosts string `yaml:"known_hosts,omitempty" json:"known_hosts,omitempty" check:"enum=strict|accept-new,label=host key policy" doc:"Host key policy: strict (default) or accept-new."`
	// KnownHostsFile defaults to vmswap's own file beside the plan
	// (PLAN.known_hosts), never the user's ~/.ssh/known_hosts.
	KnownHostsFile string `yaml:"known_hosts_file,omitempty" json:"known_hosts_file,omitempty" doc:"Default: vmswap's own PLAN.known_hosts beside the plan."`
	// Address overrides the host SSH connects to.
	Address string `yaml:"address,omitempty" json:"address,omitempty" doc:"Connect here instead of the new server's IP."`
}

// HostSSH is how vmswap logs in to a host of its own drivers (nginx's
// proxy host); the user is in the endpoint URL.
type HostSSH struct {
	Key            string `yaml:"key,omitempty" json:"key,omitempty" doc:"Private key file; empty uses ssh-agent."`
	Port           int    `yaml:"port,omitempty" json:"port,omitempty" check:"range=0..65535,label=ssh port" doc:"Default 22, or the endpoint URL's port."`
	KnownHosts     string `yaml:"known_hosts,omitempty" json:"known_hosts,omitempty" check:"enum=strict|accept-new,label=host key policy" doc:"Host key policy: strict (default) or accept-new (needs known_hosts_file)."`
	KnownHostsFile string `yaml:"known_hosts_file,omitempty" json:"known_hosts_file,omitempty" doc:"Default: ~/.ssh/known_hosts, read only."`
}

// Carry is what follows the traffic from the old server to the new one.
type Carry struct {
	Paths []string `yaml:"paths" json:"paths" check:"nonempty,label=carry.paths" doc:"Absolute paths (directories or files) whose changes after the snapshot are copied to the new server, e.g. /var/www/html/uploads."`
	// Exclude are glob patterns: without a slash they match a base name,
	// with one the whole path.
	Exclude []string `yaml:"exclude,omitempty" json:"exclude,omitempty" doc:"Glob patterns not carried, e.g. \"*.tmp\"; with a slash they match the whole path."`
	// Checksum compares files by content as well as size and mtime.
	Checksum bool `yaml:"checksum,omitempty" json:"checksum,omitempty" doc:"Compare files by SHA-256 too (reads every carried file on both servers each pass)."`
}

// Divergence says where to look for what the source wrote after its
// snapshot, and what to do when something is found.
type Divergence struct {
	Watch   []string `yaml:"watch,omitempty" json:"watch,omitempty" doc:"Directories searched; default /etc /home /opt /root /srv /var."`
	Ignore  []string `yaml:"ignore,omitempty" json:"ignore,omitempty" doc:"Paths and glob patterns skipped, added to the defaults (logs, caches, tmp, package state)."`
	OnFound string   `yaml:"on_found,omitempty" json:"on_found,omitempty" check:"enum=warn|stop|off,label=divergence.on_found" doc:"warn (default): list and go on; stop: pause before retire (exit 4); off: do not look."`
}

// Hooks are commands run over SSH at points of a swap.
type Hooks struct {
	BeforeSnapshot []Hook `yaml:"before_snapshot,omitempty" json:"before_snapshot,omitempty" doc:"Before the image is taken (flush a database, pause writers)."`
	AfterSnapshot  []Hook `yaml:"after_snapshot,omitempty" json:"after_snapshot,omitempty" doc:"Once the image is taken (resume writers)."`
	BeforeCutover  []Hook `yaml:"before_cutover,omitempty" json:"before_cutover,omitempty" doc:"After verify, before the catch-up pass and the cutover; a failure rolls back."`
	AfterCutover   []Hook `yaml:"after_cutover,omitempty" json:"after_cutover,omitempty" doc:"Once traffic is on the new server; a failure stops the run (exit 3)."`
	BeforeRetire   []Hook `yaml:"before_retire,omitempty" json:"before_retire,omitempty" doc:"Once the old server is out of traffic, before the final pass and its power-off (stop its app here so nothing more is written); a failure stops the run (exit 3)."`
}

// Hook is one command run over SSH.
type Hook struct {
	On      string   `yaml:"on" json:"on" check:"enum=source|new,label=hook on" doc:"source (the old server) or new."`
	Run     string   `yaml:"run" json:"run" doc:"Shell command run over SSH (verify.ssh's user and key)."`
	Timeout Duration `yaml:"timeout,omitempty" json:"timeout,omitempty" doc:"Default 60s."`
}

// Phases lists the hook lists by name, in the order a swap reaches them.
func (h *Hooks) Phases() []HookPhase {
	if h == nil {
		return nil
	}
	return []HookPhase{{"before_snapshot", h.BeforeSnapshot}, {"after_snapshot", h.AfterSnapshot}, {"before_cutover", h.BeforeCutover}, {"after_cutover", h.AfterCutover}, {"before_retire", h.BeforeRetire}}
}

// HookPhase is a named list of hooks.
type HookPhase struct {
	Name  string
	Hooks []Hook
}

// Of returns the hooks of the named phase.
func (h *Hooks) Of(phase string) []Hook {
	for _, p := range h.Phases() {
		if p.Name == phase {
			return p.Hooks
		}
	}
	return nil
}

// PublicHosts are the site's hostnames the swap knows: those of its HTTP
// checks, its probe and its DNS record (lowercase, no port, no IPs).
func (sw *Swap) PublicHosts() []string {
	var out []string
	add := func(h string) {
		h = strings.ToLower(strings.TrimSuffix(h, "."))
		if h != "" && net.ParseIP(h) == nil && !slices.Contains(out, h) {
			out = append(out, h)
		}
	}
	for _, h := range sw.Verify.HTTP {
		if u, err := url.Parse(h.URL); err == nil {
			add(u.Hostname())
		}
	}
	if sw.Probe != nil {
		if u, err := url.Parse(sw.Probe.URL); err == nil {
			add(u.Hostname())
		}
	}
	if sw.Cutover.DNS != nil {
		add(sw.Cutover.DNS.Record)
	}
	return out
}

// KeepsNames reports whether the new server takes the source's name.
func (sw *Swap) KeepsNames() bool { return sw.Names != "suffix" }

// DivergenceMode is what the swap does about writes outside its carried
// paths: "off" without SSH to look with.
func (sw *Swap) DivergenceMode() string {
	if sw.Verify.SSH == nil {
		return "off"
	}
	if sw.Divergence == nil || sw.Divergence.OnFound == "" {
		return "warn"
	}
	return sw.Divergence.OnFound
}

// Cutover says where traffic lives; exactly one field is set.
type Cutover struct {
	LoadBalancer *LBCutover  `yaml:"loadbalancer,omitempty" json:"loadbalancer,omitempty"`
	DNS          *DNSCutover `yaml:"dns,omitempty" json:"dns,omitempty"`
	ReservedIP   *IPCutover  `yaml:"reserved_ip,omitempty" json:"reserved_ip,omitempty"`
}

// Kind returns "loadbalancer", "dns" or "reserved_ip".
func (c Cutover) Kind() string {
	switch {
	case c.LoadBalancer != nil:
		return "loadbalancer"
	case c.DNS != nil:
		return "dns"
	case c.ReservedIP != nil:
		return "reserved_ip"
	}
	return ""
}

// LBCutover moves traffic through a load-balancer pool.
type LBCutover struct {
	Provider string `yaml:"provider" json:"provider"`
	ID       string `yaml:"id" json:"id" doc:"Load balancer ID."`
	// Drain is how long the old member keeps serving requests in flight after
	// removal. Zero: 10s.
	Drain Duration `yaml:"drain,omitempty" json:"drain,omitempty" doc:"Time for requests in flight on the old member after removal. Default 10s."`
	// IdentifyHeader is a response header whose value differs per server
	// (e.g. X-Served-By). With it, vmswap proves the new member receives
	// traffic through the load balancer before removing the old one; without
	// it, and without per-member health from the provider, it waits the
	// load balancer's health-check time.
	IdentifyHeader string `yaml:"identify_header,omitempty" json:"identify_header,omitempty" doc:"Response header naming the server that answered, to prove the new member gets traffic."`
}

// DNSCutover moves traffic by changing a record.
type DNSCutover struct {
	Provider string `yaml:"provider" json:"provider"`
	Record   string `yaml:"record" json:"record" doc:"Fully qualified record name."`
	Type     string `yaml:"type,omitempty" json:"type,omitempty" check:"enum=A|AAAA|a|aaaa,label=record type" doc:"A (default) or AAAA."`
	// Grace is added to the old TTL before the old server stops. Zero: 30s.
	Grace Duration `yaml:"grace,omitempty" json:"grace,omitempty" doc:"Added to the old TTL before the old server stops. Default 30s."`
}

// IPCutover moves a reserved IP.
type IPCutover struct {
	Provider string `yaml:"provider" json:"provider"`
	IP       string `yaml:"ip" json:"ip"`
	// Drain is how long connections to the old server may finish. Zero: 10s.
	Drain Duration `yaml:"drain,omitempty" json:"drain,omitempty"`
}

// Probe is the live traffic sent through the public entry point from cutover
// to the end of observe.
type Probe struct {
	URL  string `yaml:"url" json:"url"`
	Rate int    `yaml:"rate,omitempty" json:"rate,omitempty" check:"range=1..20000,label=probe rate" doc:"Requests per second; default 50."`
	// Resolver is a DNS server (host:port) the probe resolves through.
	Resolver string `yaml:"resolver,omitempty" json:"resolver,omitempty" doc:"DNS server (host:port) to resolve the URL through, honouring TTL."`
	// ConnectTo sends probe connections here (a port-forward).
	ConnectTo string `yaml:"connect_to,omitempty" json:"connect_to,omitempty"`
	// Baseline is how long the probe measures before the first change of
	// the cutover, to compare latency before and during. Zero: 1s.
	Baseline Duration `yaml:"baseline,omitempty" json:"baseline,omitempty" doc:"Probe time before the first cutover change, as a latency baseline. Default 1s."`
	// Writes also logs in and uploads through the entry point once a
	// second and checks at the end that nothing was lost.
	Writes      bool   `yaml:"writes,omitempty" json:"writes,omitempty" doc:"Also log in (POST /login, GET /me) and upload (PUT /uploads/NAME) once a second through the entry point, and check at the end that nothing was lost. For apps with those routes, as the lab's."`
	ErrorBudget Budget `yaml:"error_budget,omitempty" json:"error_budget,omitempty" doc:"Failures allowed during observe before rollback: a count (0) or a ratio (\"0.1%\")."`
}

// Retire says what happens to the old server.
type Retire struct {
	Action string `yaml:"action,omitempty" json:"action,omitempty" check:"enum=power_off|delete,label=retire action" doc:"power_off (default) or delete."`
	// KeepFor is how long a powered-off source is kept for rollback.
	KeepFor   Duration `yaml:"keep_for,omitempty" json:"keep_for,omitempty" doc:"How long a powered-off source is kept for vmswap rollback (its end rounded up to ten minutes, or a tenth of keep_for if less, so that a wave's retired servers share one keep-until tag)."`
	KeepImage bool     `yaml:"keep_image,omitempty" json:"keep_image,omitempty" doc:"Keep the snapshot after success."`
	// ShutdownTimeout bounds a graceful shutdown before a forced power off.
	ShutdownTimeout Duration `yaml:"shutdown_timeout,omitempty" json:"shutdown_timeout,omitempty" doc:"Graceful shutdown time before forcing power off. Default 2m."`
}

// Observed is what `vmswap plan` saw.
type Observed struct {
	At    time.Time      `yaml:"at" json:"at"`
	Swaps []ObservedSwap `yaml:"swaps" json:"swaps"`
	// Fleet lists the servers carrying the fleet's tag (ID and name).
	Fleet []FleetMember `yaml:"fleet,omitempty" json:"fleet,omitempty"`
}

// FleetMember is a server of a fleet as observed.
type FleetMember struct {
	ID   string `yaml:"id" json:"id"`
	Name string `yaml:"name" json:"name"`
}

// ObservedSwap is what was seen for one swap.
type ObservedSwap struct {
	Source     provider.Server    `yaml:"source" json:"source"`
	TargetSize provider.Size      `yaml:"target_size" json:"target_size"`
	Pool       *loadbalancer.Pool `yaml:"pool,omitempty" json:"pool,omitempty"`
	Record     *dns.Record        `yaml:"record,omitempty" json:"record,omitempty"`
	// RecordOther is a dual-stack name's set of the other type (AAAA for an
	// A cutover, A for an AAAA one) when it points at the source: the
	// cutover moves it too.
	RecordOther *dns.Record `yaml:"record_other,omitempty" json:"record_other,omitempty"`
	IPTarget    string      `yaml:"ip_assigned_to,omitempty" json:"ip_assigned_to,omitempty"`
	// Cost is what the swap costs, from the provider's own prices: for the
	// reviewer, never compared at apply.
	Cost *Cost `yaml:"cost,omitempty" json:"cost,omitempty"`
}

// Cost is what a swap costs and changes in cost, in the currency the
// provider's API reports. A nil figure is one the API does not report.
type Cost struct {
	Currency          string   `yaml:"currency,omitempty" json:"currency,omitempty"`
	SourceMonthly     *float64 `yaml:"source_monthly,omitempty" json:"source_monthly,omitempty"`
	TargetMonthly     *float64 `yaml:"target_monthly,omitempty" json:"target_monthly,omitempty"`
	MonthlyDifference *float64 `yaml:"monthly_difference,omitempty" json:"monthly_difference,omitempty"`
	// OverlapHours is how long both servers run (launch to retire, as
	// expected), and Overlap the new server's price for it.
	OverlapHours float64  `yaml:"overlap_hours" json:"overlap_hours"`
	Overlap      *float64 `yaml:"overlap,omitempty" json:"overlap,omitempty"`
	// KeepHours is how long the retired server is kept powered off, and
	// Kept what that costs.
	KeepHours float64  `yaml:"keep_hours" json:"keep_hours"`
	Kept      *float64 `yaml:"kept,omitempty" json:"kept,omitempty"`
	// SnapshotGB bounds the snapshot's size (the source's disk); its price
	// is not reported by the APIs vmswap reads.
	SnapshotGB int      `yaml:"snapshot_gb" json:"snapshot_gb"`
	Notes      []string `yaml:"notes,omitempty" json:"notes,omitempty"`
}

// durationSyntax is what a duration looks like, whatever its size.
var durationSyntax = regexp.MustCompile(`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`)

// Duration is a time.Duration written as "90s", "2m" or "1h30m".
type Duration time.Duration

// D returns the duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// UnmarshalYAML implements yaml.Unmarshaler.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(strings.TrimSpace(n.Value))
	if err != nil && n.Kind == yaml.ScalarNode && durationSyntax.MatchString(strings.TrimSpace(n.Value)) {
		return fmt.Errorf("duration %q is too large: the most vmswap can wait is about 2562047h (292 years)", n.Value)
	}
	if err != nil || n.Kind != yaml.ScalarNode {
		return fmt.Errorf("bad duration %q: write a number and a unit, like 90s, 2m or 1h30m", n.Value)
	}
	if v < 0 {
		return fmt.Errorf("bad duration %q: must not be negative", n.Value)
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML implements yaml.Marshaler.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// Budget is an error budget: a count of failed requests, or a ratio.
type Budget struct {
	Count int
	Ratio float64 // used when > 0
	Text  string
}

// UnmarshalYAML implements yaml.Unmarshaler.
func (b *Budget) UnmarshalYAML(n *yaml.Node) error {
	s := strings.TrimSpace(n.Value)
	if strings.HasSuffix(s, "%") {
		v, err := strconv.ParseFloat(strings.TrimSuffix(s, "%"), 64)
		if err != nil || v < 0 || v > 100 {
			return fmt.Errorf("bad error budget %q: write a count like 0 or 5, or a percentage like 0.1%%", s)
		}
		*b = Budget{Ratio: v / 100, Text: s}
		return nil
	}
	v, err := strconv.Atoi(s)
	if err != nil || v < 0 {
		return fmt.Errorf("bad error budget %q: write a count like 0 or 5, or a percentage like 0.1%%", s)
	}
	*b = Budget{Count: v, Text: s}
	return nil
}

// MarshalYAML implements yaml.Marshaler.
func (b Budget) MarshalYAML() (any, error) {
	if b.Text != "" {
		return b.Text, nil
	}
	return b.Count, nil
}

// Breached reports whether failed of total requests exceed the budget.
func (b Budget) Breached(failed, total int64) bool {
	if b.Ratio > 0 {
		return total > 0 && float64(failed)/float64(total) > b.Ratio
	}
	return failed > int64(b.Count)
}

func (b Budget) String() string {
	if b.Text != "" {
		return b.Text
	}
	return strconv.Itoa(b.Count)
}
