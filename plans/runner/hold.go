package runner

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/vmswap/vmswap/plans"
	"github.com/vmswap/vmswap/provider"
)

// This file: observe and retire: holds of probed evidence, then the old server goes.

// observe holds the swap under live traffic for the plan's observe time,
// counted in this process with the probe running: a run resumed after a
// pause observes again in full.
func observe(ctx context.Context, s *swapRun) error {
	return s.holdUnderProbe(ctx, s.sw.Observe.D(), true, func(total, failed int64, left time.Duration) {
		s.progress("observing %s under traffic: %d requests, %d failed, %s left", s.st.NewName, total, failed, left.Round(time.Second))
	})
}

// holdUnderProbe waits d of continuous time in this process with the probe
// running, checking the error budget as it goes. Time that passed before a
// restart does not count: a safety window is evidence, not a deadline.
func (s *swapRun) holdUnderProbe(ctx context.Context, d time.Duration, abortable bool, note func(total, failed int64, left time.Duration)) error {
	if err := s.startProbe(ctx); err != nil {
		return err
	}
	clk := s.r.clock()
	until := clk.Now().Add(d)
	var budget plans.Budget
	if s.sw.Probe != nil {
		budget = s.sw.Probe.ErrorBudget
	}
	lastNote := time.Time{}
	for {
		left := until.Sub(clk.Now())
		if s.probe != nil {
			failed, total := s.probe.Failed(), s.probe.Requests()
			if budget.Breached(failed, total) {
				return errors.Join(ErrBudget, fmt.Errorf("%d of %d probe requests failed (budget %s)", failed, total, budget))
			}
			if time.Since(lastNote) >= 2*time.Second {
				note(total, failed, max(left, 0))
				lastNote = time.Now()
			}
		}
		if left <= 0 {
			return nil
		}
		if abortable {
			if err := s.waveAborted(); err != nil {
				return err
			}
		}
		if err := clk.Sleep(ctx, min(left, s.r.poll())); err != nil {
			return err
		}
	}
}

// retire waits until the source has been out of traffic for the cutover's
// hold (drain, or TTL + grace), under the probe, then powers it off or
// deletes it, and deletes the image unless the plan keeps it.
func retire(ctx context.Context, s *swapRun) error {
	clk := s.r.clock()
	if s.probe != nil {
		s.probe.Mark("retire")
	}
	if !s.st.has(subOldRetired) {
		if err := s.kind.holds(ctx, s); err != nil {
			return err
		}
		left := s.kind.hold(s.st)
		if !s.leftAt.IsZero() {
			left -= clk.Now().Sub(s.leftAt)
		}
		if left > 0 {
			s.progress("keeping %s serving for %s more (drain / cached DNS answers)", s.st.SourceName, left.Round(time.Second))
			if err := s.holdUnderProbe(ctx, left, false, func(total, failed int64, left time.Duration) {}); err != nil {
				return err
			}
			// Someone may have sent traffic back to the source while it
			// drained: it is not powered off under them.
			if err := s.kind.holds(ctx, s); err != nil {
				return err
			}
		}
		// The source serves no one now (a before_retire hook may stop its
		// app to make sure): what it wrote since the catch-up follows, and
		// what nothing carries is reported, before it goes.
		if err := s.runHooks(ctx, "before_retire"); err != nil {
			// What the source wrote since the catch-up still follows the
			// traffic: it is out of traffic now, whatever the hook did.
			if perr := s.pass(ctx, passFinal, "source", "new"); perr != nil {
				err = errors.Join(err, perr)
			}
			return errors.Join(ErrAfterCutover, err)
		}
		if err := s.pass(ctx, passFinal, "source", "new"); err != nil {
			return err
		}
		if s.st.Paused != "" && s.continued() {
			// Going on after a pause: the source may have been written to
			// while it waited (a client that kept its connection, a
			// cached DNS answer): carry that, and look again.
			if err := s.pass(ctx, passAfterPause, "source", "new"); err != nil {
				return err
			}
			s.st.Divergence = nil
			s.st.Done = slices.DeleteFunc(s.st.Done, func(d string) bool { return d == subDivergence })
			s.st.Paused = ""
		}
		if err := s.divergence(ctx); err != nil {
			return err
		}
		if err := s.deleteGuard(); err != nil {
			return err
		}
		if err := s.once(subOldRetired, func() error {
			if s.sw.Retire.Action == "delete" {
				s.progress("deleting %s", s.st.SourceName)
				return s.comp.DeleteServer(ctx, s.st.SourceID)
			}
			s.progress("powering off %s", s.st.SourceName)
			if err := s.comp.PowerOff(ctx, s.st.SourceID, orDur(s.sw.Retire.ShutdownTimeout, 2*time.Minute)); err != nil {
				if !errors.Is(err, provider.ErrNotFound) {
					return err
				}
				s.sourceGone()
				return nil
			}
			if s.sw.Retire.KeepFor > 0 {
				s.st.KeepUntil = keepUntil(clk.Now(), s.sw.Retire.KeepFor.D())
			}
			return nil
		}); err != nil {
			return err
		}
	}
	if !s.st.KeepUntil.IsZero() {
		// The window on the server itself, for `cleanup --expired`.
		if err := s.once(subKeepTagged, func() error {
			if err := s.comp.TagServer(ctx, s.st.SourceID, keepTag(s.st.KeepUntil)); !errors.Is(err, provider.ErrNotFound) {
				return err
			}
			s.sourceGone()
			return nil
		}); err != nil {
			return err
		}
	}
	if err := s.moveNames(ctx); err != nil {
		return err
	}
	if !s.sw.Retire.KeepImage && s.st.ImageID != "" {
		return s.once(subImageDeleted, func() error { return s.comp.DeleteImage(ctx, s.st.ImageID) })
	}
	return nil
}

// sourceGone records that the source was deleted (by someone else) during
// the run: retired already, with nothing to power off, keep, rename or
// switch back to.
func (s *swapRun) sourceGone() {
	if s.st.SourceGone {
		return
	}
	s.st.SourceGone, s.st.KeepUntil = true, time.Time{}
	msg := fmt.Sprintf("%s (%s) no longer exists (someone deleted it during the run): there is nothing to power off, keep or switch back to", s.st.SourceName, s.st.SourceID)
	s.st.Warnings = append(s.st.Warnings, msg)
	s.r.emit(Event{Event: "warning", Swap: s.name(), Message: msg})
}

// retiredName is what the source is called once retired and kept.
func (s *swapRun) retiredName() string {
	return fmt.Sprintf("%s-retired-%s", s.st.SourceName, s.r.Journal.ShortRunID())
}

// moveNames gives the new server the source's name once the source is
// retired: the source is renamed first (names are unique on some clouds),
// then the new server takes its name. Each rename is journalled before it
// is made; a rerun makes the ones not done.
func (s *swapRun) moveNames(ctx context.Context) error {
	if !s.sw.KeepsNames() || s.st.NewID == "" {
		return nil
	}
	if s.sw.Retire.Action != "delete" && !s.st.SourceGone {
		if err := s.once(subRenameOld, func() error {
			s.progress("renaming %s to %s", s.st.SourceName, s.retiredName())
			if err := s.comp.RenameServer(ctx, s.st.SourceID, s.retiredName()); !errors.Is(err, provider.ErrNotFound) {
				return err
			}
			s.sourceGone()
			return nil
		}); err != nil {
			return err
		}
	}
	return s.once(subRenameNew, func() error {
		s.progress("renaming %s to %s: the server keeps its name", s.st.NewName, s.st.SourceName)
		return s.comp.RenameServer(ctx, s.st.NewID, s.st.SourceName)
	})
}

// restoreNames undoes moveNames when the swap is switched back: the new
// server gives the name up first, then the source takes it back.
func (s *swapRun) restoreNames(ctx context.Context) error {
	if slices.Contains(s.st.Intents, subRenameNew) && !s.st.NewGone {
		s.progress("renaming %s back to %s", s.st.SourceName, s.st.NewName)
		if err := s.comp.RenameServer(ctx, s.st.NewID, s.st.NewName); err != nil {
			return err
		}
	}
	if slices.Contains(s.st.Intents, subRenameOld) {
		s.progress("renaming %s back to %s", s.retiredName(), s.st.SourceName)
		if err := s.comp.RenameServer(ctx, s.st.SourceID, s.st.SourceName); err != nil {
			return err
		}
	}
	return nil
}

// deleteGuard pauses before retire: delete would destroy the only copy of
// something: the source's side of a carry conflict, or files it wrote that
// nothing carried. Powering off keeps them for keep_for; deleting does not.
func (s *swapRun) deleteGuard() error {
	if s.sw.Retire.Action != "delete" || s.continued() {
		return nil
	}
	var paths []string
	for _, p := range s.st.Passes {
		if p.From == s.st.SourceName {
			for _, c := range p.Res.Conflicts {
				if c.Source != nil && !slices.Contains(paths, c.Path) {
					paths = append(paths, c.Path)
				}
			}
		}
	}
	diverged := 0
	if d := s.st.Divergence; d != nil {
		diverged = d.Count
	}
	if len(paths) == 0 && diverged == 0 {
		return nil
	}
	s.st.Paused = "delete"
	return errors.Join(ErrDecision, fmt.Errorf("retire: delete would destroy %s's only copy of %d conflicting file(s) %v and %d file(s) it wrote that nothing carried", s.st.SourceName, len(paths), paths, diverged))
}
