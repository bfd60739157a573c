package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/vmswap/vmswap/lab"
	"github.com/vmswap/vmswap/plans/runner"
)

// LabServeOptions are the inputs of `vmswap lab serve`.
type LabServeOptions struct {
	IO       *IOStreams
	State    string
	Listen   string
	DNS      string
	HTTPPort int
	SSHPort  int
	Specs    string
	NoSpecs  bool
	Profile  string
	Ready    func(*lab.Lab) // called once serving (tests)
}

// NewCmdLab builds `vmswap lab`.
func NewCmdLab(f *Factory) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "lab",
		Short: "A local DigitalOcean-, Cloudflare- and Hetzner-compatible cloud on loopback, for rehearsals",
	}
	cmd.AddCommand(NewCmdLabServe(f, nil), newCmdLabInventory(f), newCmdLabSeed(f))
	return cmd
}

// NewCmdLabServe builds `vmswap lab serve`.
func NewCmdLabServe(f *Factory, runF func(*LabServeOptions) error) *cobra.Command {
	opts := &LabServeOptions{IO: f.IO}
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the lab until interrupted; its endpoints go to STATE/endpoints.json",
		Long: `Serve runs the lab: the DigitalOcean API, the Cloudflare DNS API, the Hetzner Cloud API, a DNS
server, and real servers, load balancers and reserved and floating IPs on 127.x addresses.
State persists in --state.
Point vmswap at it with the printed endpoint and token:

  export DIGITALOCEAN_TOKEN=$(jq -r .token STATE/endpoints.json)
  vmswap plan --endpoint $(jq -r .digitalocean_api STATE/endpoints.json) ...`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if runF != nil {
				return runF(opts)
			}
			return labServeRun(cmd.Context(), opts)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&opts.State, "state", ".vmswap-lab", "directory for the lab's state and droplet disks")
	fl.StringVar(&opts.Listen, "listen", "127.0.0.1:0", "API address")
	fl.StringVar(&opts.DNS, "dns-listen", "127.0.0.1:0", "DNS server address")
	fl.IntVar(&opts.HTTPPort, "http-port", 8080, "port droplets, load balancers and reserved IPs serve HTTP on")
	fl.IntVar(&opts.SSHPort, "ssh-port", 2222, "port droplets serve SSH on")
	fl.StringVar(&opts.Specs, "specs", "", "vendored OpenAPI specs directory (default: shared/specs beside the checkout)")
	fl.BoolVar(&opts.NoSpecs, "no-specs", false, "do not validate requests and responses against the specs")
	fl.StringVar(&opts.Profile, "profile", "fast", "operation durations: fast, or realistic (like the real cloud)")
	return cmd
}

func labConfig(state, specs string, noSpecs bool, profile string) (lab.Config, error) {
	cfg := lab.Config{StateDir: state}
	switch profile {
	case "", "fast":
		cfg.Durations = lab.FastDurations()
	case "realistic":
		cfg.Durations = lab.RealisticDurations()
	default:
		return cfg, exitf(runner.ExitBadInput, "--profile %q: use fast or realistic", profile)
	}
	if !noSpecs {
		cfg.SpecsDir = specs
		if cfg.SpecsDir == "" {
			cfg.SpecsDir = lab.FindSpecs()
		}
	}
	return cfg, nil
}

func labServeRun(ctx context.Context, o *LabServeOptions) error {
	start := time.Now()
	cfg, err := labConfig(o.State, o.Specs, o.NoSpecs, o.Profile)
	if err != nil {
		return err
	}
	cfg.Listen, cfg.DNSListen, cfg.HTTPPort, cfg.SSHPort = o.Listen, o.DNS, o.HTTPPort, o.SSHPort
	cfg.Logf = func(format string, args ...any) { fmt.Fprintf(o.IO.ErrOut, format+"\n", args...) }
	if err := os.MkdirAll(o.State, 0o755); err != nil {
		return exitf(runner.ExitBadInput, "lab: --state: %v", err)
	}
	l, err := lab.Start(cfg)
	if err != nil {
		return exitf(runner.ExitBadInput, "%v", err)
	}
	defer l.Close()
	epFile := filepath.Join(o.State, "endpoints.json")
	if err := l.WriteEndpoints(epFile); err != nil {
		return err
	}
	ep := l.Endpoints()
	validation := "validating against " + cfg.SpecsDir
	if cfg.SpecsDir == "" {
		validation = "NOT validating (no specs found; pass --specs)"
	}
	fmt.Fprintf(o.IO.ErrOut, "lab ready in %s (%s)\n", time.Since(start).Round(time.Millisecond), validation)
	b, _ := json.MarshalIndent(struct {
		DigitalOceanAPI string `json:"digitalocean_api"`
		CloudflareAPI   string `json:"cloudflare_api"`
		HetznerAPI      string `json:"hetzner_api"`
		DNS             string `json:"dns"`
		Endpoints       string `json:"endpoints_file"`
	}{ep.DigitalOceanAPI, ep.CloudflareAPI, ep.HetznerAPI, ep.DNS, epFile}, "", "  ")
	fmt.Fprintln(o.IO.Out, string(b))
	fmt.Fprintf(o.IO.ErrOut, "token: in %s (not printed)\n", epFile)
	if o.Ready != nil {
		o.Ready(l)
	}
	<-ctx.Done()
	fmt.Fprintln(o.IO.ErrOut, "lab: stopping; state kept in", o.State)
	return nil
}

func newCmdLabInventory(f *Factory) *cobra.Command {
	var state string
	cmd := &cobra.Command{
		Use:   "inventory",
		Short: "Print what exists in a running lab",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ep, err := readLabEndpoints(state)
			if err != nil {
				return err
			}
			inv, err := lab.FetchInventory(cmd.Context(), ep)
			if err != nil {
				return err
			}
			out, _ := json.MarshalIndent(inv, "", "  ")
			fmt.Fprintln(f.IO.Out, string(out))
			return nil
		},
	}
	cmd.Flags().StringVar(&state, "state", ".vmswap-lab", "the lab's state directory")
	return cmd
}

// readLabEndpoints reads the endpoints a running `vmswap lab serve --state
// STATE` wrote.
func readLabEndpoints(state string) (lab.Endpoints, error) {
	var ep lab.Endpoints
	b, err := os.ReadFile(filepath.Join(state, "endpoints.json"))
	if err != nil {
		return ep, exitf(runner.ExitBadInput, "lab: %v (is `vmswap lab serve --state %s` running?)", err, state)
	}
	if err := json.Unmarshal(b, &ep); err != nil {
		return ep, exitf(runner.ExitBadInput, "lab: %s/endpoints.json: %v", state, err)
	}
	return ep, nil
}
