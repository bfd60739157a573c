package cli

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/vmswap/vmswap/plans"
	"github.com/vmswap/vmswap/plans/registry"
	"github.com/vmswap/vmswap/plans/runner"
	"github.com/vmswap/vmswap/provider"
	"github.com/vmswap/vmswap/verify"
)

// PreviewOptions are the inputs of `vmswap preview`.
type PreviewOptions struct {
	IO       *IOStreams
	Getenv   func(string) string
	PlanFile string
	Swap     string
	Port     int
	For      time.Duration
	// Ready, when set, receives the proxy's URL once it listens (tests).
	Ready func(string)
}

// NewCmdPreview builds `vmswap preview PLAN`.
func NewCmdPreview(f *Factory, runF func(*PreviewOptions) error) *cobra.Command {
	opts := &PreviewOptions{IO: f.IO, Getenv: f.Getenv}
	cmd := &cobra.Command{
		Use:   "preview PLAN",
		Short: "Open the new server as the public site in your own browser, before any traffic moves",
		Long: `Preview starts a proxy on 127.0.0.1 that sends the site's hostnames (those of the swap's
HTTP checks, probe and DNS record) to the run's new server, and refuses every other
destination (every port of the new server is reachable under those names). Point a browser
or curl at it to look at the new server as the public site,
with its own TLS certificate, with no hosts file. It works while a run waits at a gate
(gates: [before_cutover], exit 4) and for as long as the run's new server is up. Ctrl-C
stops it; nothing in the cloud changes.`,
		Example: `  vmswap apply plan.yaml          # exit 4: paused at the gate before_cutover
  vmswap preview plan.yaml        # look at the site; Ctrl-C when done
  vmswap apply plan.yaml --continue`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.PlanFile = args[0]
			if runF != nil {
				return runF(opts)
			}
			return previewRun(cmd.Context(), opts)
		},
	}
	cmd.Flags().StringVar(&opts.Swap, "swap", "", "the swap to preview, by name or source server (needed when the run has several)")
	cmd.Flags().IntVar(&opts.Port, "port", 0, "port of the proxy on 127.0.0.1 (default: a free one)")
	cmd.Flags().DurationVar(&opts.For, "for", 0, "stop after this long (default: until Ctrl-C)")
	return cmd
}

func previewRun(ctx context.Context, o *PreviewOptions) error {
	getenv := o.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	if o.Port < 0 || o.Port > 65535 {
		return exitf(runner.ExitBadInput, "--port %d: want 1-65535, or 0 for a free port", o.Port)
	}
	if o.For < 0 {
		return exitf(runner.ExitBadInput, "--for %s: want a duration, like 10m (0: until Ctrl-C)", o.For)
	}
	j, _, remote, err := runner.RemoteStatus(o.PlanFile, getenv)
	if !remote {
		j, err = runner.LoadJournal(runner.JournalPath(o.PlanFile))
	}
	if err != nil {
		return exitf(runner.ExitBadInput, "%v", err)
	}
	if j == nil {
		return exitf(runner.ExitBadInput, "%s has not been applied: there is no new server to preview (add gates: [before_cutover] to the swap and run vmswap apply; it stops before moving traffic)", o.PlanFile)
	}
	// The run's own plan, as it was applied: its hosts and providers.
	doc, err := plans.Check(o.PlanFile, []byte(j.PlanText))
	if err != nil {
		return exitf(runner.ExitAttention, "the journal's copy of the plan does not parse: %v", err)
	}
	sw, st, err := previewSwap(doc, j, o.Swap)
	if err != nil {
		return err
	}
	hosts := sw.PublicHosts()
	if len(hosts) == 0 {
		return exitf(runner.ExitBadInput, "swap %s names no hostname (its http checks, probe and DNS record use IPs): nothing to preview by name", st.SourceNameOr(sw.Source.Server))
	}
	drivers, err := registry.Build(doc.Plan, registry.BuildOptions{Getenv: getenv})
	if err != nil {
		return exitf(runner.ExitBadInput, "%v", err)
	}
	comp := drivers[sw.Source.Provider].Compute
	if err := previewable(ctx, comp, st); err != nil {
		return exitf(runner.ExitBadInput, "%v", err)
	}
	addr := st.NewIP
	if ca := sw.Verify.ConnectAddress; ca != "" {
		if h, _, err := net.SplitHostPort(ca); err == nil {
			addr = h
		}
	}
	px := &verify.PinProxy{Hosts: hosts, Addr: addr, Listen: net.JoinHostPort("127.0.0.1", strconv.Itoa(o.Port))}
	purl, err := px.Start()
	if err != nil {
		return exitf(runner.ExitBadInput, "start the preview proxy: %v (try another --port)", err)
	}
	defer px.Close()
	site := siteURL(sw, hosts[0])
	out := o.IO.Out
	fmt.Fprintf(out, "Previewing %s's new server %s (%s), %s: %v go there; every other destination is refused.\n", st.SourceNameOr(sw.Source.Server), dashed(st.NewName), addr, st.Status, hosts)
	fmt.Fprintf(out, "Proxy: %s\n\n", purl)
	fmt.Fprintf(out, "  chromium --user-data-dir=\"$(mktemp -d)\" --proxy-server=%s %s\n", purl, site)
	fmt.Fprintf(out, "  firefox: Settings > Network Settings > Manual proxy configuration: HTTP Proxy %s Port %s, and \"Also use this proxy for HTTPS\"\n", "127.0.0.1", portOfURL(purl))
	fmt.Fprintf(out, "  curl --proxy %s %s\n", purl, site)
	fmt.Fprintf(out, "  your tests: HTTPS_PROXY=%s HTTP_PROXY=%s ...\n\n", purl, purl)
	if st.Status == runner.StatusPaused {
		fmt.Fprintf(out, "Then: vmswap apply %s --continue (move traffic) or vmswap rollback %s.\n", o.PlanFile, o.PlanFile)
	}
	if o.For > 0 {
		fmt.Fprintf(out, "Stopping in %s (Ctrl-C stops it now).\n", o.For)
	} else {
		fmt.Fprintln(out, "Ctrl-C stops it.")
	}
	if o.Ready != nil {
		o.Ready(purl)
	}
	wait := make(<-chan time.Time)
	if o.For > 0 {
		t := time.NewTimer(o.For)
		defer t.Stop()
		wait = t.C
	}
	// The server is looked at again and again: once the run moves on
	// (rolled back, cleaned up) its address may be someone else's.
	tick := time.NewTicker(previewRecheck)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			fmt.Fprintln(o.IO.ErrOut, "vmswap: preview stopped")
			return nil
		case <-wait:
			fmt.Fprintln(o.IO.ErrOut, "vmswap: preview stopped")
			return nil
		case <-tick.C:
			if err := previewStillValid(ctx, o, getenv, j.RunID, st.Index, comp); err != nil {
				px.Close()
				return exitf(runner.ExitBadInput, "preview stopped: %v", err)
			}
		}
	}
}

// previewRecheck is how often a running preview checks that the run's new
// server is still the one it sends the site to.
var previewRecheck = 3 * time.Second

// previewable says why the run's new server cannot be previewed, if so:
// it is not running, or not at the address the run recorded.
func previewable(ctx context.Context, comp provider.Compute, st *runner.SwapState) error {
	if comp == nil {
		return nil
	}
	srv, err := comp.GetServer(ctx, st.NewID)
	if err != nil {
		return fmt.Errorf("the run's new server %s (%s): %v", dashed(st.NewName), st.NewID, err)
	}
	switch {
	case srv.Status == provider.StatusPending || st.NewIP == "":
		return fmt.Errorf("the run's new server %s is still starting: preview it once apply has verified it (at the gate, exit 4)", srv.Name)
	case srv.Status != provider.StatusRunning:
		return fmt.Errorf("the run's new server %s is %s: nothing to preview", srv.Name, srv.Status)
	case srv.PublicIP != st.NewIP:
		return fmt.Errorf("the run's new server %s is at %s now, not %s as the run recorded: nothing to preview", srv.Name, dashed(srv.PublicIP), st.NewIP)
	}
	return nil
}

// previewStillValid reads the journal and the server again: the same run,
// the swap's new server unchanged, running at its address.
func previewStillValid(ctx context.Context, o *PreviewOptions, getenv func(string) string, run string, i int, comp provider.Compute) error {
	j, _, remote, err := runner.RemoteStatus(o.PlanFile, getenv)
	if !remote {
		j, err = runner.LoadJournal(runner.JournalPath(o.PlanFile))
	}
	if err != nil {
		return err
	}
	if j == nil || j.RunID != run || i >= len(j.Swaps) {
		return fmt.Errorf("the run it previewed is no longer the plan's last run")
	}
	st := j.Swaps[i]
	if st.NewID == "" || st.Status == runner.StatusRolledBack || st.Status == runner.StatusReverted || j.Status == runner.StatusReverted {
		return fmt.Errorf("the run's new server was rolled back (%s)", j.Status)
	}
	return previewable(ctx, comp, st)
}

// previewSwap picks the swap to preview: the one named, or the run's only
// swap with a new server.
func previewSwap(doc *plans.Document, j *runner.Journal, name string) (*plans.Swap, *runner.SwapState, error) {
	var cands []int
	for i, st := range j.Swaps {
		if i >= len(doc.Plan.Swaps) || st.NewID == "" {
			continue
		}
		sw := &doc.Plan.Swaps[i]
		if name == "" || name == sw.Name || name == sw.Source.Server || name == st.SourceName {
			cands = append(cands, i)
		}
	}
	switch {
	case len(cands) == 1:
		return &doc.Plan.Swaps[cands[0]], j.Swaps[cands[0]], nil
	case len(cands) > 1:
		return nil, nil, exitf(runner.ExitBadInput, "the run has %d new servers: say which with --swap NAME (a swap's name or source server)", len(cands))
	case name != "":
		return nil, nil, exitf(runner.ExitBadInput, "no swap %q with a new server in the run of %s (vmswap status %s shows them)", name, j.Plan, j.Plan)
	}
	if j.Status.Finished() {
		return nil, nil, exitf(runner.ExitBadInput, "the run of %s (%s) has no new server to preview", j.Plan, j.Status)
	}
	return nil, nil, exitf(runner.ExitBadInput, "the run of %s (%s) has no new server to preview yet", j.Plan, j.Status)
}

// siteURL is the site's address for the instructions: the first URL of the
// swap (check, probe) on the host, else https://HOST/.
func siteURL(sw *plans.Swap, host string) string {
	var urls []string
	for _, h := range sw.Verify.HTTP {
		urls = append(urls, h.URL)
	}
	if sw.Probe != nil {
		urls = append(urls, sw.Probe.URL)
	}
	for _, s := range urls {
		if u, err := url.Parse(s); err == nil && strings.EqualFold(u.Hostname(), host) {
			u.Path, u.RawQuery = "/", ""
			return u.String()
		}
	}
	return "https://" + host + "/"
}

func portOfURL(s string) string {
	if u, err := url.Parse(s); err == nil {
		return u.Port()
	}
	return ""
}

func dashed(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
