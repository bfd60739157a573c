package runner

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/go-multierror"
	"github.com/vmswap/vmswap/loadbalancer"
	"github.com/vmswap/vmswap/plans"
	"github.com/vmswap/vmswap/provider"
	"github.com/vmswap/vmswap/verify"
)

// This file: preflight reads the world and refuses, before anything changes, a swap that cannot work or a plan whose world changed.

func preflight(ctx context.Context, s *swapRun) error {
	var errs *multierror.Error
	src, err := s.source(ctx)
	if err != nil {
		return errors.Join(ErrPreflight, fmt.Errorf("source %s: %w", s.sw.Source.Server, err))
	}
	if src.Status != provider.StatusRunning {
		errs = multierror.Append(errs, fmt.Errorf("source %s is %s, not running: vmswap upgrades a running server", src.Name, src.Status))
	}
	if p := volumeProblem(src); p != "" {
		errs = multierror.Append(errs, errors.New(p))
	}
	size, err := s.comp.GetSize(ctx, s.sw.Target.Size)
	if err != nil {
		errs = multierror.Append(errs, fmt.Errorf("target size: %w", err))
	} else {
		s.size = size
		warn := func(format string, args ...any) {
			s.r.emit(Event{Event: "warning", Swap: s.name(), Message: strings.TrimPrefix(fmt.Sprintf(format, args...), "warning: ")})
		}
		for _, p := range sizeProblems(*s.sw, src, size, warn, fittingSizes(ctx, s.comp)) {
			errs = multierror.Append(errs, errors.New(p))
		}
	}
	if k := s.sw.Verify.SSH; k != nil && k.Key != "" {
		if err := verify.CheckKeyFile(k.Key); err != nil {
			errs = multierror.Append(errs, err)
		}
	}
	if src.Status == provider.StatusRunning {
		for _, e := range s.sourceSSHProblems(ctx, src) {
			errs = multierror.Append(errs, e)
		}
	}
	if f := s.r.Doc.Plan.Fleet; f != nil && s.leftFleet {
		// Checked once more at each swap's start: the fleet is what the
		// tag selects, and a server taken out of it since is left out; the
		// rest of the fleet goes on.
		return errors.Join(ErrLeftFleet, fmt.Errorf("%s left the tag %s since the plan was written: it is left out, not upgraded (to upgrade it later, put the tag back and refresh the plan: vmswap plan --refresh %s)", src.Name, f.Tag, s.r.planFile()))
	}
	var stale []string
	var obs *plans.ObservedSwap
	if o := s.r.Doc.Plan.Observed; o != nil && s.i < len(o.Swaps) {
		obs = &o.Swaps[s.i]
		if obs.Source.ID != src.ID {
			stale = append(stale, fmt.Sprintf("source %s is now server %s (planned: %s)", s.sw.Source.Server, src.ID, obs.Source.ID))
		}
		if obs.Source.Size != src.Size {
			stale = append(stale, fmt.Sprintf("source %s was resized: %s when planned, %s now", src.Name, obs.Source.Size, src.Size))
		}
		if obs.Source.PublicIP != src.PublicIP {
			stale = append(stale, fmt.Sprintf("source %s's IP changed: %s when planned, %s now", src.Name, obs.Source.PublicIP, src.PublicIP))
		}
	}
	now := &plans.ObservedSwap{Source: *src}
	problems, err := s.kind.read(ctx, src, now)
	if err != nil {
		errs = multierror.Append(errs, err)
	}
	for _, p := range problems {
		errs = multierror.Append(errs, errors.New(p))
	}
	if err == nil && obs != nil {
		o, n := *obs, *now
		o.Pool, n.Pool = s.r.poolForStale(obs.Pool), s.r.poolForStale(now.Pool)
		stale = append(stale, s.kind.stale(&o, &n)...)
	}
	s.pool = now.Pool
	if c := s.sw.Cutover.LoadBalancer; c != nil && c.IdentifyHeader != "" && src.Status == provider.StatusRunning && err == nil {
		if p := s.identifyProblem(ctx, c.IdentifyHeader, src); p != "" {
			errs = multierror.Append(errs, errors.New(p))
		}
	}
	if rec := now.Record; rec != nil {
		s.st.OldValues, s.st.OldTTL = rec.Values, int(rec.TTL)
		s.st.OtherValues, s.st.OtherTTL = nil, 0
		if ro := now.RecordOther; ro != nil {
			s.st.OtherValues, s.st.OtherTTL = ro.Values, int(ro.TTL)
			if ro.Proxied {
				s.st.OtherTTL = 0
			}
		}
		if rec.Proxied {
			// Clients of a proxied record reach Cloudflare's edge, never the
			// origin address: nothing caches the old value, only the grace applies.
			s.st.OldTTL = 0
		}
	}
	s.st.OldAssignee = now.IPTarget
	held, others, err := otherEntrypoints(ctx, s.comp, s.sw, src, now.Pool)
	if err != nil {
		errs = multierror.Append(errs, err)
	}
	s.st.Warnings = others
	for _, w := range others {
		s.r.emit(Event{Event: "warning", Swap: s.name(), Message: w})
	}
	s.st.HeldTags = held
	if len(stale) > 0 {
		for _, d := range stale {
			errs = multierror.Append(errs, errors.New(d))
		}
		errs.ErrorFormat = listFormat
		return errors.Join(ErrStale, fmt.Errorf("the world changed since the plan was written:\n%s", errs.Error()))
	}
	if errs.ErrorOrNil() != nil {
		errs.ErrorFormat = listFormat
		return errors.Join(ErrPreflight, errs)
	}
	s.st.SourceID, s.st.SourceName, s.st.SourceIP, s.st.SourceIPv6 = src.ID, src.Name, src.PublicIP, src.PublicIPv6
	return s.claim(ctx, src)
}

// volumeProblem refuses a source with block volumes attached: a snapshot
// does not carry them, and a volume is attached to one server at a time,
// so the new server would start without the data they hold.
func volumeProblem(src *provider.Server) string {
	if len(src.Volumes) == 0 {
		return ""
	}
	return fmt.Sprintf("%s has volume(s) %s attached, which a snapshot does not carry: the new server would start without their data; move it to the server's own disk, or detach the volumes, then plan again", src.Name, strings.Join(src.Volumes, ", "))
}

func listFormat(es []error) string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = "  - " + e.Error()
	}
	return strings.Join(lines, "\n")
}

func sameSet(a, b []string) bool {
	return slices.Equal(slices.Sorted(slices.Values(a)), slices.Sorted(slices.Values(b)))
}

func recordType(c *plans.DNSCutover) string {
	if c.Type == "" {
		return "A"
	}
	return strings.ToUpper(c.Type)
}

// otherEntrypoints finds the ways traffic reaches the source that the
// swap's cutover does not move. Load balancers that select by a tag the
// source carries are handled: the new server is launched without those
// tags (held) and given them at cutover, so it joins them only once
// verified. A load balancer that lists the source by ID, or a reserved IP on
// it, loses the source when it is retired: those are warnings, in the plan
// and at apply.
func otherEntrypoints(ctx context.Context, comp provider.Compute, sw *plans.Swap, src *provider.Server, pool *loadbalancer.Pool) (held, warnings []string, err error) {
	el, ok := comp.(provider.EntrypointLister)
	if !ok {
		return nil, nil, nil
	}
	eps, err := el.Entrypoints(ctx, src)
	if err != nil {
		return nil, nil, fmt.Errorf("find what routes to %s: %w", src.Name, err)
	}
	c := sw.Cutover
	for _, ep := range eps {
		switch {
		case ep.Kind == "load balancer" && c.LoadBalancer != nil && ep.ID == c.LoadBalancer.ID:
		case ep.Kind != "load balancer" && c.ReservedIP != nil && ep.ID == c.ReservedIP.IP:
		case ep.ByTag != "":
			if (pool == nil || pool.SelectTag != ep.ByTag) && !slices.Contains(held, ep.ByTag) {
				held = append(held, ep.ByTag)
			}
		default:
			warnings = append(warnings, fmt.Sprintf("%s also takes traffic through %s %s, which this plan does not move: retiring %s cuts that off; take it out of there first, or swap through it", src.Name, ep.Kind, ep.ID, src.Name))
		}
	}
	return held, warnings, nil
}

// needsSourceSSH reports whether the swap cannot do without SSH to the
// source: quiesce, carried paths, hooks on it, or a divergence report that
// must stop the run. (The default report, warn, only warns without it.)
func (s *swapRun) needsSourceSSH() bool {
	if s.sw.Verify.SSH == nil {
		return false
	}
	if s.sw.Quiesce || s.sw.Carry != nil || s.sw.DivergenceMode() == "stop" {
		return true
	}
	for _, ph := range s.sw.Hooks.Phases() {
		for _, h := range ph.Hooks {
			if h.On == "source" {
				return true
			}
		}
	}
	return false
}

// sourceSSHProblems checks, before anything changes, what the swap will do
// on the source over SSH: that the plan's user and key get in, and that the
// carried paths are directories or files there, never symlinks.
func (s *swapRun) sourceSSHProblems(ctx context.Context, src *provider.Server) []error {
	if !s.needsSourceSSH() && !s.needsClock() {
		return nil
	}
	s.st.SourceIP, s.st.SourceID, s.st.SourceName = src.PublicIP, src.ID, src.Name
	c, err := s.dial(ctx, "source", 15*time.Second)
	if k := s.sw.Verify.SSH; err != nil && k != nil && k.Address == "" && ctx.Err() == nil && (errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ECONNREFUSED)) {
		// verify logs into the new server, made from the source's image,
		// the same way: a known_hosts file missing under strict, or a port
		// nothing listens on, would fail it there, after the snapshot and
		// the launch. (A key the source refuses may still be accepted by
		// the new server, if the provider adds keys to it: that warns.)
		return []error{fmt.Errorf("SSH to the source %s as verify.ssh says, as verify will log into the new server made from its image: %w", src.Name, err)}
	}
	if err != nil && !s.needsSourceSSH() {
		s.r.emit(Event{Event: "warning", Swap: s.name(), Message: fmt.Sprintf("no divergence report: it reads the source over SSH, and %v", err)})
		return nil
	}
	if err != nil {
		return []error{fmt.Errorf("SSH to the source, which quiesce, hooks, carried paths and divergence.on_found: stop need: %w", err)}
	}
	defer c.Close()
	if _, err := clockOf(ctx, c); err != nil {
		return []error{fmt.Errorf("%s: %w", src.Name, err)}
	}
	if s.sw.Carry == nil {
		return nil
	}
	fs, err := c.SFTP()
	if err != nil {
		return []error{fmt.Errorf("%s: carried paths are copied over SFTP: %w", src.Name, err)}
	}
	defer fs.Close()
	var out []error
	for _, p := range s.sw.Carry.Paths {
		fi, err := fs.Lstat(p)
		switch {
		case errors.Is(err, os.ErrNotExist):
			s.r.emit(Event{Event: "warning", Swap: s.name(), Message: fmt.Sprintf("carry path %s does not exist on %s (yet): anything written there after the snapshot is carried", p, src.Name)})
		case err != nil:
			out = append(out, fmt.Errorf("carry path %s on %s: %w", p, src.Name, err))
		case fi.Mode()&os.ModeSymlink != 0:
			target, _ := fs.ReadLink(p)
			out = append(out, fmt.Errorf("carry path %s on %s is a symlink (to %s): carry the directory it points to instead", p, src.Name, printable(target)))
		}
	}
	return out
}

// identifyProblem asks the source, directly, for the response header that
// proves which member the load balancer sends to: a source that answers
// without it (a typo in identify_header) would stop the cutover with the
// new server already in the pool.
func (s *swapRun) identifyProblem(ctx context.Context, header string, src *provider.Server) string {
	v, err := s.headerOf(ctx, src.PublicIP, src.Name, header)
	if err != nil {
		return err.Error()
	}
	if v == "" {
		return fmt.Sprintf("%s answers %s without a %s header, which identify_header names to prove the load balancer routes to the new server: check its spelling, or remove identify_header", src.Name, s.serviceURL(), header)
	}
	return ""
}

// headerOf asks the server at ip, directly, for the service URL and
// returns the response's header ("" when it sends none).
func (s *swapRun) headerOf(ctx context.Context, ip, name, header string) (string, error) {
	u := s.serviceURL()
	c, err := verify.Pinned(s.pinAddr(ip), s.sw.Verify.CAFile, 5*time.Second)
	if err != nil {
		return "", err
	}
	_, h, _, err := verify.Do(ctx, c, u.String())
	if err != nil {
		return "", fmt.Errorf("ask %s for its %s header at %s: %w", name, header, u, err)
	}
	return h.Get(header), nil
}
