package runner

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/vmswap/vmswap/provider"
	"github.com/vmswap/vmswap/verify"
)

// This file: snapshot, launch and ready: the new server from a live image of the source.

func snapshot(ctx context.Context, s *swapRun) error {
	src, err := s.source(ctx)
	if err != nil {
		return err
	}
	// A name journalled just now was never asked for: the driver need not
	// look for an earlier snapshot under it.
	first := s.st.ImageName == ""
	if first {
		s.st.ImageName = fmt.Sprintf("vmswap-%s-%s-%s", src.Name, s.r.Journal.Started.Format("20060102-150405"), s.r.Journal.PlanID)
		if err := s.save(); err != nil {
			return err
		}
	}
	if s.st.SnapshotOp == "" {
		if err := s.runHooks(ctx, "before_snapshot"); err != nil {
			return err
		}
		if s.sw.Quiesce {
			if err := quiesce(ctx, s, src); err != nil {
				return err
			}
		}
		if err := s.noteSourceClock(ctx); err != nil {
			return err
		}
	}
	s.progress("snapshotting %s as %s (live: it keeps serving, and the image is crash-consistent)", src.Name, s.st.ImageName)
	wctx, cancel := context.WithTimeout(ctx, s.timeout())
	defer cancel()
	var saveErr error
	img, err := s.comp.Snapshot(wctx, src, provider.SnapshotSpec{Name: s.st.ImageName, First: first, Started: func(op string) {
		if s.st.SnapshotOp != op {
			s.st.SnapshotOp = op
			if err := s.save(); err != nil && saveErr == nil {
				saveErr = err
			}
		}
	}})
	if saveErr != nil {
		// The image is found again by its unique name: nothing is lost,
		// but a run that cannot write its journal must not go on.
		return saveErr
	}
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
			return fmt.Errorf("%w (no image within %s: raise ready_timeout in the plan)", err, s.timeout())
		}
		return err
	}
	s.st.ImageID = img.ID
	if err := s.save(); err != nil {
		return err
	}
	return s.runHooks(ctx, "after_snapshot")
}

// quiesce flushes the source's page cache to disk (sync over SSH) just
// before its live image is taken.
func quiesce(ctx context.Context, s *swapRun, src *provider.Server) error {
	k := s.sw.Verify.SSH
	host := src.PublicIP
	if k.Address != "" {
		host = k.Address
	}
	c, err := verify.DialSSH(ctx, host, s.sshConfig(k, src.ID))
	if err != nil {
		return fmt.Errorf("quiesce %s: %w", src.Name, err)
	}
	defer c.Close()
	if _, err := c.Run(ctx, "sync"); err != nil {
		return fmt.Errorf("quiesce %s: %w", src.Name, err)
	}
	s.progress("quiesced %s: sync ran over SSH", src.Name)
	return nil
}

// launched is what finds this swap's launch again: its token, its name
// and the run's claim it was made with.
func (s *swapRun) launched() provider.LaunchSpec {
	return provider.LaunchSpec{Token: s.st.Token, Name: s.st.NewName, Claim: s.st.Claim, KeepMark: !s.sw.KeepsNames()}
}

func launch(ctx context.Context, s *swapRun) error {
	src, err := s.source(ctx)
	if err != nil {
		return err
	}
	first := s.st.Token == ""
	if first {
		s.st.Token = fmt.Sprintf("%s-%d", s.r.Journal.RunID, s.i)
		s.st.NewName = fmt.Sprintf("%s-%s", baseName(src), s.r.Journal.ShortRunID())
		if err := s.save(); err != nil {
			return err
		}
	}
	spec := provider.LaunchSpec{Source: src, Image: &provider.Image{ID: s.st.ImageID, Name: s.st.ImageName},
		Size: s.sw.Target.Size, Name: s.st.NewName, Token: s.st.Token, First: first, Claim: s.st.Claim, KeepMark: !s.sw.KeepsNames(), Tags: []string{"vmswap:" + s.r.Journal.PlanID}}
	if c := s.sw.Cutover.LoadBalancer; c != nil {
		// A pool that selects its members by tag must not get the new
		// server before it is verified: the tag is its cutover.
		if s.pool == nil {
			if s.pool, err = s.r.Drivers[c.Provider].LB.Pool(ctx, c.ID); err != nil {
				return err
			}
		}
		if t := s.pool.SelectTag; t != "" {
			spec.WithoutTags = append(spec.WithoutTags, t)
			s.progress("load balancer %s selects its members by tag %q: %s is launched without it, and tagged at cutover", c.ID, t, s.st.NewName)
		}
	}
	if h := s.st.HeldTags; len(h) > 0 {
		spec.WithoutTags = append(spec.WithoutTags, h...)
		s.progress("other load balancers select %s by tag %v: %s is launched without them, and tagged at cutover", s.st.SourceName, h, s.st.NewName)
	}
	s.progress("launching %s (%s) from %s", s.st.NewName, s.sw.Target.Size, s.st.ImageName)
	srv, err := s.comp.Launch(ctx, spec)
	if err != nil {
		return err
	}
	s.st.NewID = srv.ID
	s.r.noteCreated(srv.ID, srv.PublicIP)
	if err := s.save(); err != nil {
		return err
	}
	if s.st.Claim != "" && !slices.Contains(claimsOn(srv), s.r.Journal.RunID) {
		// Launched without it (a driver that cannot, an older run).
		if err := s.comp.TagServer(ctx, srv.ID, s.st.Claim); err != nil {
			return fmt.Errorf("claim %s: %w", s.st.NewName, err)
		}
	}
	return nil
}

func ready(ctx context.Context, s *swapRun) error {
	wctx, cancel := context.WithTimeout(ctx, s.timeout())
	defer cancel()
	srv, err := s.comp.WaitRunning(wctx, s.st.NewID)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
			return fmt.Errorf("%s did not become running within %s (raise ready_timeout in the plan if the provider is slow)", s.st.NewName, s.timeout())
		}
		return err
	}
	s.st.NewIP, s.st.NewIPv6 = srv.PublicIP, srv.PublicIPv6
	s.r.noteCreated(srv.ID, srv.PublicIP)
	if err := s.save(); err != nil {
		return err
	}
	addr := s.addrOf(srv.PublicIP)
	if err := s.waitAccepting(wctx, addr); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("%s is running but %s refuses connections after %s", s.st.NewName, addr, s.timeout())
	}
	return nil
}

// baseName is the name a launch is named after: the source's, without the
// run suffix an earlier swap gave it when vmswap launched the source (its
// launch tag, vmswap-launch:RUN-N on DigitalOcean, vmswap-launch=RUN-N on
// EC2, names the run), so that names never stack suffixes.
func baseName(src *provider.Server) string {
	for _, t := range src.Tags {
		token, ok := strings.CutPrefix(t, "vmswap-launch:")
		if !ok {
			token, ok = strings.CutPrefix(t, "vmswap-launch=")
		}
		if !ok {
			continue
		}
		if i := strings.LastIndex(token, "-"); i >= 6 {
			if base, ok := strings.CutSuffix(src.Name, "-"+token[:6]); ok && base != "" {
				return base
			}
		}
	}
	return src.Name
}
