// Package registry builds a plan's drivers from its provider blocks: one
// builder per provider type of plans.DriverTypeTable, each reading its
// credentials from the environment it is given. SDK types stay here and in
// the driver packages; the runner sees vmswap's own interfaces.
package registry

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/smithy-go/middleware"

	"github.com/vmswap/vmswap/dns"
	cfdns "github.com/vmswap/vmswap/dns/cloudflare"
	dodns "github.com/vmswap/vmswap/dns/digitalocean"
	hzdns "github.com/vmswap/vmswap/dns/hetzner"
	"github.com/vmswap/vmswap/dns/rfc2136"
	"github.com/vmswap/vmswap/dns/route53"
	"github.com/vmswap/vmswap/loadbalancer"
	"github.com/vmswap/vmswap/loadbalancer/awselb"
	dolb "github.com/vmswap/vmswap/loadbalancer/digitalocean"
	"github.com/vmswap/vmswap/loadbalancer/haproxy"
	hzlb "github.com/vmswap/vmswap/loadbalancer/hetzner"
	"github.com/vmswap/vmswap/loadbalancer/nginx"
	"github.com/vmswap/vmswap/plans"
	"github.com/vmswap/vmswap/provider"
	awscompute "github.com/vmswap/vmswap/provider/aws"
	docompute "github.com/vmswap/vmswap/provider/digitalocean"
	hzcompute "github.com/vmswap/vmswap/provider/hetzner"
	"github.com/vmswap/vmswap/verify"
)

// Drivers are the drivers built from one provider block; a nil field is a
// capability the type lacks.
type Drivers struct {
	Compute provider.Compute
	DNS     dns.Provider
	LB      loadbalancer.Provider
	IP      provider.IPAssigner
}

// BuildOptions are what drivers are built with.
type BuildOptions struct {
	// Getenv reads credentials. Nil: no environment (every token missing).
	Getenv func(string) string
	// Progress receives what drivers wait on.
	Progress provider.Progress
	// PollInterval for provider operations. Zero: the driver's default.
	PollInterval time.Duration
	// AWSAPIOptions are added to the AWS clients' middleware stacks (the
	// tests record the operations called with one).
	AWSAPIOptions []func(*middleware.Stack) error
	// concurrent is how many swaps of the plan may run at once (its
	// strategy's max_parallel): above one, load-balancer drivers whose
	// provider takes a list gather a wave's changes into one call.
	concurrent int
	// HTTPClient is the transport under the drivers' own auth and retries.
	// Nil: the drivers' default.
	HTTPClient *http.Client
}

// builders builds the drivers of each provider type. Registration is
// explicit: one entry per type of plans.DriverTypeTable.
var builders = map[string]func(name string, p plans.Provider, o BuildOptions) (*Drivers, error){
	"aws":          buildAWS,
	"rfc2136":      buildRFC2136,
	"haproxy":      buildHAProxy,
	"nginx":        buildNginx,
	"cloudflare":   buildCloudflare,
	"digitalocean": buildDigitalOcean,
	"hetzner":      buildHetzner,
}

// tokenFor reads a provider block's token: its token_env, else the
// ecosystem's usual variables. The error names what to set, never a value.
func tokenFor(name string, p plans.Provider, vars []string, getenv func(string) string) (string, error) {
	if getenv == nil {
		getenv = func(string) string { return "" }
	}
	if p.TokenEnv != "" {
		if plans.LooksLikeSecret(p.TokenEnv) {
			// Never echo it: validate refuses such a plan, and an error must
			// not print a token either.
			return "", fmt.Errorf("provider %q (%s): token_env holds what looks like a token (not shown): name the environment variable that holds it", name, p.Type)
		}
		vars = []string{p.TokenEnv}
	}
	for _, v := range vars {
		if t := strings.TrimSpace(getenv(v)); t != "" {
			return t, nil
		}
	}
	return "", fmt.Errorf("provider %q (%s): no API token: set %s", name, p.Type, strings.Join(vars, " or "))
}

func buildDigitalOcean(name string, p plans.Provider, o BuildOptions) (*Drivers, error) {
	tok, err := tokenFor(name, p, docompute.TokenVars, o.Getenv)
	if err != nil {
		return nil, err
	}
	c, err := docompute.New(docompute.Config{Token: tok, BaseURL: p.Endpoint, PollInterval: o.PollInterval, Progress: o.Progress, HTTPClient: o.HTTPClient, BatchWindow: batchWindow(o)})
	if err != nil {
		return nil, err
	}
	return &Drivers{
		Compute: c,
		IP:      c,
		LB:      dolb.New(dolb.Config{Client: c.Client(), BatchWindow: batchWindow(o)}),
		DNS:     dodns.New(dodns.Config{Client: c.Client(), Nameserver: p.Nameserver, PollInterval: o.PollInterval, Progress: o.Progress}),
	}, nil
}

// batchWindow is how long a load-balancer change or a tag assignment waits
// for a wave's others: none when swaps run one at a time.
func batchWindow(o BuildOptions) time.Duration {
	if o.concurrent > 1 {
		return 500 * time.Millisecond
	}
	return 0
}

func buildHetzner(name string, p plans.Provider, o BuildOptions) (*Drivers, error) {
	tok, err := tokenFor(name, p, hzcompute.TokenVars, o.Getenv)
	if err != nil {
		return nil, err
	}
	c, err := hzcompute.New(hzcompute.Config{Token: tok, BaseURL: p.Endpoint, PollInterval: o.PollInterval, Progress: o.Progress, HTTPClient: o.HTTPClient})
	if err != nil {
		return nil, err
	}
	return &Drivers{
		Compute: c,
		IP:      c,
		LB:      hzlb.New(hzlb.Config{Client: c.Client(), Tagger: c, Progress: o.Progress}),
		DNS:     hzdns.New(hzdns.Config{Client: c.Client(), Nameserver: p.Nameserver, PollInterval: o.PollInterval, Progress: o.Progress}),
	}, nil
}

func buildAWS(name string, p plans.Provider, o BuildOptions) (*Drivers, error) {
	cfg := awscompute.Config{Region: p.Region, Endpoint: p.Endpoint, APIOptions: o.AWSAPIOptions, PollInterval: o.PollInterval, Progress: o.Progress}
	if o.Getenv != nil {
		// Credentials from the environment the CLI was given (the default
		// chain reads the process's own too, and profiles and roles).
		if id, secret := o.Getenv("AWS_ACCESS_KEY_ID"), o.Getenv("AWS_SECRET_ACCESS_KEY"); id != "" && secret != "" {
			cfg.Credentials = credentials.NewStaticCredentialsProvider(id, secret, o.Getenv("AWS_SESSION_TOKEN"))
		}
		if cfg.Region == "" {
			cfg.Region = o.Getenv("AWS_REGION")
		}
		if cfg.Endpoint == "" {
			cfg.Endpoint = o.Getenv("AWS_ENDPOINT_URL")
		}
	}
	sc, err := awscompute.LoadConfig(context.Background(), cfg)
	if err != nil {
		return nil, fmt.Errorf("provider %q: %w", name, err)
	}
	c := awscompute.New(sc, cfg)
	return &Drivers{Compute: c, IP: c, LB: awselb.New(sc, o.PollInterval, batchWindow(o), o.Progress), DNS: route53.New(sc, p.Nameserver, o.PollInterval, o.Progress)}, nil
}

func buildHAProxy(name string, p plans.Provider, o BuildOptions) (*Drivers, error) {
	lb, err := haproxy.New(haproxy.Config{Socket: p.Endpoint, PollInterval: o.PollInterval, Progress: o.Progress})
	if err != nil {
		return nil, fmt.Errorf("provider %q: %w", name, err)
	}
	return &Drivers{LB: lb}, nil
}

// buildNginx builds the nginx driver: the endpoint is the directory of the
// upstream files here, or ssh://USER@HOST[:PORT]/DIR on a proxy host, whose
// host key is checked strictly against ~/.ssh/known_hosts unless the block's
// ssh settings say otherwise.
func buildNginx(name string, p plans.Provider, o BuildOptions) (*Drivers, error) {
	cfg := nginx.Config{Dir: p.Endpoint, Command: strings.Fields(p.Command), Address: p.Address, Port: p.Port, PollInterval: o.PollInterval, Progress: o.Progress}
	if strings.HasPrefix(p.Endpoint, "ssh://") {
		u, err := url.Parse(p.Endpoint)
		if err != nil {
			return nil, fmt.Errorf("provider %q: endpoint: %w", name, err)
		}
		sc := verify.SSHConfig{User: u.User.Username()}
		if k := p.SSH; k != nil {
			sc.KeyFile, sc.Port, sc.KnownHosts, sc.HostKeyPolicy = k.Key, k.Port, k.KnownHostsFile, k.KnownHosts
		}
		if u.Port() != "" {
			sc.Port, _ = strconv.Atoi(u.Port())
		}
		cfg.Dir, cfg.Host = u.Path, nginx.NewSSH(u.Hostname(), sc)
	}
	lb, err := nginx.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("provider %q: %w", name, err)
	}
	return &Drivers{LB: lb}, nil
}

func buildRFC2136(name string, p plans.Provider, o BuildOptions) (*Drivers, error) {
	secret, err := tokenFor(name, p, []string{rfc2136.SecretVar}, o.Getenv)
	if err != nil {
		return nil, err
	}
	d, err := rfc2136.New(rfc2136.Config{Server: p.Endpoint, TSIGKey: p.TSIGKey, TSIGSecret: secret, TSIGAlgorithm: p.TSIGAlgorithm, PollInterval: o.PollInterval, Progress: o.Progress})
	if err != nil {
		return nil, fmt.Errorf("provider %q: %w", name, err)
	}
	return &Drivers{DNS: d}, nil
}

func buildCloudflare(name string, p plans.Provider, o BuildOptions) (*Drivers, error) {
	tok, err := tokenFor(name, p, []string{cfdns.TokenVar}, o.Getenv)
	if err != nil {
		return nil, err
	}
	d, err := cfdns.New(cfdns.Config{Token: tok, BaseURL: p.Endpoint, HTTPClient: o.HTTPClient, Nameserver: p.Nameserver, PollInterval: o.PollInterval, Progress: o.Progress})
	if err != nil {
		return nil, err
	}
	return &Drivers{DNS: d}, nil
}

// Build builds the drivers of every provider block. Every missing
// credential is reported at once.
func Build(p *plans.Plan, o BuildOptions) (map[string]*Drivers, error) {
	if p.Strategy != nil {
		o.concurrent = p.Strategy.MaxParallel
	}
	out := map[string]*Drivers{}
	var errs []string
	names := make([]string, 0, len(p.Providers))
	for n := range p.Providers {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		pb := p.Providers[n]
		build, ok := builders[pb.Type]
		if !ok {
			errs = append(errs, fmt.Sprintf("provider %q: unknown type %q", n, pb.Type))
			continue
		}
		d, err := build(n, pb, o)
		if err != nil {
			errs = append(errs, err.Error())
			continue
		}
		out[n] = d
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("%s", strings.Join(errs, "\n"))
	}
	return out, nil
}
