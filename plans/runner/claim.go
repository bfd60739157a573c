package runner

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/vmswap/vmswap/provider"
)

// ErrClaimed is a preflight refusal because another run is swapping the
// source.
var ErrClaimed = errors.New("the source is claimed by another run")

// claimPrefix starts the tag a run puts on the servers it swaps. Every
// vmswap that reads the server sees it, whichever plan file and machine it
// runs from.
const claimPrefix = "vmswap-claim:"

func claimTag(runID string) string { return claimPrefix + runID }

// claimsOn returns the run IDs claiming a server, from its tags (AWS shows
// a tag as key=value).
func claimsOn(srv *provider.Server) []string {
	var out []string
	for _, t := range srv.Tags {
		if rest, ok := strings.CutPrefix(t, claimPrefix); ok {
			run, _, _ := strings.Cut(rest, "=")
			out = append(out, run)
		}
	}
	return out
}

// claim marks the source as swapped by this run, at the end of preflight
// once everything else passed. A run that sees another's tag when it
// reads the server back withdraws; two runs claiming at the same moment
// may both see it and both withdraw, or one read back before the other
// tagged and goes on: either way never both, and running again succeeds.
func (s *swapRun) claim(ctx context.Context, src *provider.Server) error {
	run := s.r.Journal.RunID
	refuse := func(others []string) error {
		return errors.Join(ErrClaimed, fmt.Errorf("%s is being swapped by run %s (tag %s on the server): finish or roll back that run first; if its journal is lost for good, remove the tag from %s",
			src.Name, strings.Join(others, ", "), claimTag(others[0]), src.Name))
	}
	others := slices.DeleteFunc(claimsOn(src), func(r string) bool { return r == run })
	if len(others) > 0 {
		return refuse(others)
	}
	// Intent first: a run killed between here and the tag call releases it.
	s.st.Claim = claimTag(run)
	if err := s.save(); err != nil {
		return err
	}
	s.r.claimTagged.Store(true)
	if err := s.comp.TagServer(ctx, src.ID, s.st.Claim); err != nil {
		return fmt.Errorf("claim %s: %w", src.Name, err)
	}
	// Read back: the claims of a wave's swaps in one list where the
	// provider has it.
	var back *provider.Server
	if tl, ok := s.comp.(provider.TaggedLister); ok {
		back, _, _ = tagged(ctx, tl, s.st.Claim, src.ID)
	}
	if back == nil {
		var err error
		if back, err = s.comp.GetServer(ctx, src.ID); err != nil {
			return fmt.Errorf("claim %s: %w", src.Name, err)
		}
	}
	if others := slices.DeleteFunc(claimsOn(back), func(r string) bool { return r == run }); len(others) > 0 {
		// Claimed at the same moment: both withdraw; one retry wins.
		s.unclaim(ctx, src.ID)
		return errors.Join(ErrClaimed, fmt.Errorf("run %s claimed %s while this run was claiming it (at the same moment, or after someone removed an earlier claim of this run's), and this run withdrew and changed nothing (the other run withdraws too if it saw this claim, or goes on): run apply again; while the other run goes on, this one is refused until it ends", strings.Join(others, ", "), src.Name))
	}
	return nil
}

// unclaim removes this run's claim from a server; a failure is a warning:
// the tag is only a marker, and the message says how to remove it.
func (s *swapRun) unclaim(ctx context.Context, id string) {
	if s.st.Claim == "" || id == "" {
		return
	}
	if err := s.comp.UntagServer(ctx, id, s.st.Claim); err != nil {
		s.r.emit(Event{Event: "warning", Swap: s.name(), Message: fmt.Sprintf("could not remove the claim tag %s from server %s (%v): remove it by hand, or other plans will refuse the server", s.st.Claim, id, err)})
	}
}

// release removes this run's claims from the source and the new server,
// once the swap has ended one way or the other.
func (r *Runner) release(ctx context.Context, s *swapRun) {
	if lf, ok := s.comp.(provider.LaunchForgetter); ok && s.st.Token != "" && !s.st.LaunchForgotten && s.launchSettled {
		// The launch is done with (its server serves, or is deleted): its
		// marker goes.
		if err := lf.ForgetLaunch(ctx, s.launched()); err == nil {
			s.st.LaunchForgotten = true
		}
	}
	if s.st.Claim == "" {
		return
	}
	r.claimTagged.Store(true)
	if td, ok := s.comp.(provider.TagDeleter); ok && len(r.Journal.Swaps) == 1 {
		// The run's only swap: deleting the tag releases both servers in
		// the call that would otherwise follow the release.
		if err := td.DeleteTag(ctx, s.st.Claim); err == nil {
			s.st.Claim = ""
			r.claimTagged.Store(false)
			return
		}
	}
	if mu, ok := s.comp.(provider.ManyUntagger); ok && s.st.SourceID != "" && s.st.NewID != "" && !s.st.SourceGone && !s.st.NewGone {
		// Both servers in one call where the provider takes a list.
		if err := mu.UntagServers(ctx, s.st.Claim, s.st.SourceID, s.st.NewID); err == nil {
			s.st.Claim = ""
			return
		}
	}
	s.unclaim(ctx, s.st.SourceID)
	if !s.st.NewGone {
		s.unclaim(ctx, s.st.NewID)
	}
	s.st.Claim = ""
}

// dropClaimTag deletes the run's claim tag once no swap holds a claim,
// where tags are objects of their own: each run would otherwise leave an
// empty tag in the account. A failure is only a warning.
func (r *Runner) dropClaimTag(ctx context.Context) {
	if !r.claimTagged.Load() {
		return
	}
	if slices.ContainsFunc(r.Journal.Swaps, func(st *SwapState) bool { return st.Claim != "" }) {
		// A swap still holds its servers (paused, interrupted, needing
		// attention): deleting the tag would release them too.
		return
	}
	tag := claimTag(r.Journal.RunID)
	done := map[provider.TagDeleter]bool{}
	for i := range r.Journal.Swaps {
		td, ok := r.swapRun(i).comp.(provider.TagDeleter)
		if !ok || done[td] {
			continue
		}
		done[td] = true
		if err := td.DeleteTag(ctx, tag); err != nil {
			r.emit(Event{Event: "warning", Message: fmt.Sprintf("could not delete the run's claim tag %s, which no server carries now (%v): delete it by hand if you like; it marks nothing", tag, err)})
		}
	}
}
