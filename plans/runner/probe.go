package runner

import (
	"context"

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
	p, err := probe.Start(cfg)
	if err != nil {
		return err
	}
	s.probe = p
	rate := cfg.Rate
	if rate <= 0 {
		rate = probe.DefaultRate
	}
	s.progress("probe: %d req/s to %s", rate, cfg.URL)
	return nil
}
