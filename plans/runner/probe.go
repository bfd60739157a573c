package runner

import (
	"context"
	"fmt"

	"github.com/vmswap/vmswap/verify/probe"
)

// This file: the probe: live traffic through the public entry point.

// probeConfig is the probe of a swap: the plan's, or the public entry point
// of its cutover.
func (s *swapRun) probeConfig(ctx context.Context) (probe.Config, bool) {
	if p := s.sw.Probe; p != nil {
		return probe.Config{URL: p.URL, Rate: p.Rate, Resolver: p.Resolver, ConnectTo: p.ConnectTo, Writes: p.Writes}, true
	}
	return s.kind.entry(ctx, portOf(s.serviceURL()))
}

// probeWorksBefore checks the baseline, before anything moved: a probe
// whose every request fails there (a wrong probe url or resolver, a site
// down already) could not tell a good cutover from a bad one, and would
// stop the run only after traffic moved.
func (s *swapRun) probeWorksBefore() error {
	n, failed := s.probe.Requests(), s.probe.Failed()
	if n == 0 || failed < n {
		return nil
	}
	why, _ := s.probe.TopError()
	return fmt.Errorf("the probe failed all %d of its requests to %s before any traffic moved (%s): traffic stays where it is; check probe.url and probe.resolver, or the site", n, s.probe.URL(), why)
}

// startProbe starts the swap's probe unless it runs already.
func (s *swapRun) startProbe(ctx context.Context) error {
	if s.probe != nil {
		return nil
	}
	cfg, ok := s.probeConfig(ctx)
	if !ok {
		if !s.warnedNoProbe {
			s.warnedNoProbe = true
			s.r.emit(Event{Event: "warning", Swap: s.name(), Message: "no probe: set probe.url to watch live traffic through the cutover; holds are plain waits without it"})
		}
		return nil
	}
	total := cfg.Rate
	if total <= 0 {
		total = probe.DefaultRate
	}
	rate, share := total, ""
	if n := s.waveSize; n > 1 {
		// The swaps of a wave probe the same site at once: together at the
		// plan's rate, not n times it.
		rate = max(1, total/n)
		share = fmt.Sprintf(" (its share of %d req/s, with the %d other swaps of its wave)", total, n-1)
	}
	cfg.Rate = rate
	p, err := probe.Start(cfg)
	if err != nil {
		return err
	}
	s.probe = p
	s.progress("probe: %d req/s to %s%s", rate, cfg.URL, share)
	return nil
}
