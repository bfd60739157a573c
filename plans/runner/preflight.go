package runner

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/hashicorp/go-multierror"
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
	size, err := s.comp.GetSize(ctx, s.sw.Target.Size)
	if err != nil {
		errs = multierror.Append(errs, fmt.Errorf("target size: %w", err))
	} else {
		s.size = size
		if size.DiskGB < src.DiskGB {
			errs = multierror.Append(errs, fmt.Errorf("target size %s has a %d GB disk, smaller than the source's %d GB disk (the snapshot's minimum): choose a size with at least %d GB", size.Slug, size.DiskGB, src.DiskGB, src.DiskGB))
		}
		if size.Slug == src.Size {
			errs = multierror.Append(errs, fmt.Errorf("source %s is already %s", src.Name, size.Slug))
		}
	}
	if k := s.sw.Verify.SSH; k != nil && k.Key != "" {
		if err := verify.CheckKeyFile(k.Key); err != nil {
			errs = multierror.Append(errs, err)
		}
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
		stale = append(stale, s.kind.stale(obs, now)...)
	}
	s.pool = now.Pool
	if rec := now.Record; rec != nil {
		s.st.OldValues, s.st.OldTTL = rec.Values, int(rec.TTL)
		s.st.OldValues6, s.st.OldTTL6 = nil, 0
		if r6 := now.RecordAAAA; r6 != nil {
			s.st.OldValues6, s.st.OldTTL6 = r6.Values, int(r6.TTL)
			if r6.Proxied {
				s.st.OldTTL6 = 0
			}
		}
		if rec.Proxied {
			// Clients of a proxied record reach Cloudflare's edge, never the
			// origin address: nothing caches the old value, only the grace applies.
			s.st.OldTTL = 0
		}
	}
	s.st.OldAssignee = now.IPTarget
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
