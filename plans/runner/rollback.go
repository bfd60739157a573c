package runner

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/vmswap/vmswap/provider"
)

// rollbackTimeout bounds a rollback; it runs to completion even after the
// user interrupts, because stopping halfway would leave traffic split.
const rollbackTimeout = 20 * time.Minute

// rollback undoes a swap that did not finish so the source serves again:
// if any cutover call was made or attempted, traffic is moved back (the
// calls are safe to repeat), the new server is kept up for the cutover's
// hold, and then everything the run created is deleted and the deletions
// confirmed. It returns ExitRolledBack when all of that was verified,
// ExitAttention (with the command that finishes the job) otherwise.
func (r *Runner) rollback(s *swapRun, cause error) (int, string) {
	ctx, cancel := context.WithTimeout(context.Background(), rollbackTimeout)
	defer cancel()
	s.rollingBack = true
	st := s.st
	r.emit(Event{Event: "step", Swap: s.name(), Step: "rollback", Status: "started", Message: cause.Error()})
	st.Steps["rollback"] = &StepLog{Start: r.now(), Status: "running"}
	if err := s.save(); err != nil {
		return ExitAttention, fmt.Sprintf("rollback of %s not started: %v", s.name(), err)
	}

	var left []string
	note := func(what string, err error) {
		msg := what
		if err != nil {
			msg = fmt.Sprintf("%s: %v", what, err)
		}
		left = append(left, msg)
		r.emit(Event{Event: "warning", Swap: s.name(), Step: "rollback", Message: msg})
	}
	moved := st.cutoverStarted()
	if !moved {
		st.TrafficBack = true // traffic never left the source
	}
	gone := false
	if !st.TrafficBack {
		// What users wrote on the new server goes back with the traffic:
		// the bulk now, the rest after the new server's hold.
		if err := s.carryBack(ctx, passBack); err != nil {
			r.emit(Event{Event: "warning", Swap: s.name(), Step: "rollback", Message: fmt.Sprintf("%v; moving traffic back anyway, the final carry-back pass will try again", err)})
		}
		s.progress("rollback: moving traffic back to %s", st.SourceName)
		err := s.sourceUp(ctx)
		if err == nil {
			err = s.kind.back(ctx, s)
		}
		if err == nil {
			err = s.joinHeldTags(ctx, false)
		}
		if err != nil {
			gone = errors.Is(err, errSourceGone)
			note("traffic is not back on "+st.SourceName, err)
		} else {
			st.TrafficBack, st.TrafficBackAt = true, r.now()
			if err := s.save(); err != nil {
				note("the journal could not record that traffic is back", err)
			}
			s.holdAfterBack(ctx)
			if err := s.carryBack(ctx, passBackFinal); err != nil {
				note(fmt.Sprintf("what users wrote on %s (%s) was not all carried back, so it is kept: copy %s from it to %s before `vmswap cleanup`", st.NewName, st.NewIP, strings.Join(s.sw.Carry.Paths, " "), st.SourceName), err)
			}
		}
	} else if moved {
		// Resumed after traffic went back: what is left of the hold.
		s.holdAfterBack(ctx)
	}
	stopProbe(s)

	if len(left) == 0 && st.TrafficBack && st.NewID != "" && st.SourceID != "" {
		// Traffic never left the source, or went back to it: the new
		// server is deleted only while the source exists. One deleted by
		// someone during the run leaves the new server the only one.
		srv, err := s.comp.GetServer(ctx, st.SourceID)
		if errors.Is(err, provider.ErrNotFound) || err == nil && srv.Status == provider.StatusGone {
			st.SourceGone = true
			note(fmt.Sprintf("%s (%s) was deleted during the run, so %s (%s, %s) is kept: it is the only server left; point the traffic at it yourself (rollback will not delete it; `vmswap cleanup` would)", st.SourceName, st.SourceID, dash(st.NewName), st.NewID, st.NewIP), nil)
			gone = true
		}
	}
	cleanup := fmt.Sprintf("vmswap cleanup --yes %s", r.planFile())
	if len(left) == 0 {
		// A launch whose ID never reached the journal is found by its token.
		if st.NewID == "" && st.Token != "" {
			srv, err := s.comp.FindLaunched(ctx, s.launched())
			switch {
			case err != nil:
				note("could not look for a server launched by this run", err)
			case srv != nil:
				st.NewID, st.NewName = srv.ID, srv.Name
			default:
				s.launchSettled = true // none was made
			}
		}
		if st.NewID != "" {
			s.progress("rollback: deleting %s", st.NewName)
			if err := deleteConfirmed(ctx, r, func() error { return s.comp.DeleteServer(ctx, st.NewID) }, func() (bool, error) {
				srv, err := s.comp.GetServer(ctx, st.NewID)
				if errors.Is(err, provider.ErrNotFound) {
					return true, nil
				}
				return err == nil && srv.Status == provider.StatusGone, err
			}); err != nil {
				note(fmt.Sprintf("new server %s (%s) not deleted", st.NewName, st.NewID), err)
			} else {
				st.NewID, s.launchSettled = "", true
			}
		}
	}
	if st.ImageID == "" && st.ImageName != "" {
		img, err := s.imageUnderWay(ctx)
		switch {
		case err != nil:
			note("could not look for the image "+st.ImageName, err)
		case img != nil:
			st.ImageID = img.ID
		}
	}
	if st.ImageID != "" {
		s.progress("rollback: deleting image %s", st.ImageName)
		if err := deleteConfirmed(ctx, r, func() error { return s.comp.DeleteImage(ctx, st.ImageID) }, func() (bool, error) {
			img, err := s.comp.FindImage(ctx, st.ImageName)
			return err == nil && img == nil, err
		}); err != nil {
			note(fmt.Sprintf("image %s (%s) not deleted", st.ImageName, st.ImageID), err)
		} else {
			st.ImageID = ""
		}
	}
	if st.TrafficBack {
		r.release(ctx, s)
	}
	st.Steps["rollback"].End = r.now()
	step := failedStep(st)
	if len(left) > 0 {
		st.Status, st.Left = StatusNeedsAttention, left
		st.Steps["rollback"].Status = "failed"
		if gone && !st.TrafficBack {
			// Nothing to switch back to: the rollback is given up, so
			// that apply may finish the swap on the new server.
			delete(st.Steps, "rollback")
		}
		if err := s.save(); err != nil {
			left = append(left, fmt.Sprintf("the journal could not be written: %v", err))
		}
		next := fmt.Sprintf("%s failed (%s) and the rollback did not finish:\n  - %s", step, trimSentinel(cause), strings.Join(left, "\n  - "))
		switch {
		case gone:
			// Nothing to fix: the message above says what to do.
		case st.TrafficBack:
			next += "\nFinish it with: " + cleanup
		default:
			next += fmt.Sprintf("\nOnce the cause is fixed, run `vmswap rollback %s` again to finish it.", r.planFile())
		}
		return ExitAttention, next
	}
	st.Status = StatusRolledBack
	st.Steps["rollback"].Status = "ok"
	r.emit(Event{Event: "step", Swap: s.name(), Step: "rollback", Status: "ok", Elapsed: st.Steps["rollback"].End.Sub(st.Steps["rollback"].Start).Seconds()})
	if err := s.save(); err != nil {
		return ExitAttention, fmt.Sprintf("rolled back, but the journal could not be written: %v", err)
	}
	if !moved && errors.Is(cause, ErrStale) {
		// Someone else moved the traffic: the source may serve nothing.
		return ExitRolledBack, fmt.Sprintf("%s failed and was rolled back: this run moved no traffic (someone else changed where it goes, as the cause says: check it), and everything it created was deleted (confirmed with the provider). Cause: %v", step, trimSentinel(cause))
	}
	return ExitRolledBack, fmt.Sprintf("%s failed and was rolled back: %s serves as before, and everything this run created was deleted (confirmed with the provider). Cause: %v", step, st.SourceName, trimSentinel(cause))
}

// holdAfterBack keeps the new server up, once traffic is back on the
// source, for what is left of the cutover's hold: requests in flight and
// cached DNS answers still reach it.
func (s *swapRun) holdAfterBack(ctx context.Context) {
	st := s.st
	wait := s.kind.hold(st)
	if st.NewID == "" || wait <= 0 || st.TrafficBackAt.IsZero() {
		return
	}
	left := st.TrafficBackAt.Add(wait).Sub(s.r.now())
	if left <= 0 {
		return
	}
	s.progress("rollback: keeping %s up %s more for requests and cached answers still reaching it", st.NewName, left.Round(time.Second))
	s.r.clock().Sleep(ctx, left)
}

// imageUnderWay finds the image of a snapshot the journal named but never
// saw made: one a killed process asked for may still be being made, and
// DigitalOcean shows the image only once it is. It waits for that imaging,
// at most the ready timeout, and starts none.
func (s *swapRun) imageUnderWay(ctx context.Context) (*provider.Image, error) {
	if s.st.SourceID == "" {
		return s.comp.FindImage(ctx, s.st.ImageName)
	}
	src, err := s.comp.GetServer(ctx, s.st.SourceID)
	if errors.Is(err, provider.ErrNotFound) {
		return s.comp.FindImage(ctx, s.st.ImageName)
	}
	if err != nil {
		return nil, err
	}
	wctx, cancel := context.WithTimeout(ctx, s.timeout())
	defer cancel()
	return s.comp.Snapshot(wctx, src, provider.SnapshotSpec{Name: s.st.ImageName, AwaitOnly: true})
}

// deleteConfirmed deletes something and polls until the provider no longer
// shows it: a rollback says "deleted" only when it saw that.
func deleteConfirmed(ctx context.Context, r *Runner, del func() error, gone func() (bool, error)) error {
	if err := del(); err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	return provider.Poll(cctx, r.poll(), func() (bool, error) {
		ok, err := gone()
		if err != nil && cctx.Err() == nil {
			return false, nil // keep asking until the timeout
		}
		return ok, err
	})
}

func failedStep(st *SwapState) string {
	for _, name := range Steps {
		if l := st.Steps[name]; l != nil && l.Status == "failed" {
			return name
		}
	}
	return "the swap"
}

// trimSentinel puts a joined sentinel and its detail on one line.
func trimSentinel(err error) string {
	msg := err.Error()
	for _, s := range []error{ErrPreflight, ErrStale, ErrVerify, ErrNeverRoutes, ErrBudget, ErrClaimed, ErrCutoverUndone} {
		if errors.Is(err, s) && strings.HasPrefix(msg, s.Error()+"\n") {
			msg = s.Error() + ": " + strings.TrimPrefix(msg, s.Error()+"\n")
		}
	}
	return msg
}

// errSourceGone is a rollback that cannot move traffic back: the source
// was deleted (by someone else) during the run.
var errSourceGone = errors.New("the old server is gone")

// sourceUp makes sure the source runs and accepts connections before
// traffic goes back to it: a run stopped during its retire may have
// powered it off. A source this run did not power off is not powered on:
// whoever stopped it during the run meant it, and traffic stays where it
// is.
func (s *swapRun) sourceUp(ctx context.Context) error {
	st := s.st
	if st.SourceID == "" {
		return nil
	}
	srv, err := s.comp.GetServer(ctx, st.SourceID)
	switch {
	case errors.Is(err, provider.ErrNotFound) || err == nil && srv.Status == provider.StatusGone || st.SourceGone:
		return fmt.Errorf("%w: %s (%s) was deleted during the run, so there is nothing to switch back to: traffic stays on %s, which serves; `vmswap apply %s` finishes the swap", errSourceGone, st.SourceName, st.SourceID, dash(st.NewName), s.r.planFile())
	case err != nil:
		return fmt.Errorf("read the old server %s: %w", st.SourceName, err)
	case srv.Status == provider.StatusRunning:
		return nil
	case !slices.Contains(st.Intents, subOldRetired):
		return fmt.Errorf("%s is %s, and this run did not power it off (someone did during the run): vmswap leaves it so and moves no traffic (it was moving to %s; check where it is now); power %s on and run `vmswap rollback %s` again to go back to it", st.SourceName, srv.Status, dash(st.NewName), st.SourceName, s.r.planFile())
	}
	s.progress("rollback: %s is %s; powering it on", st.SourceName, srv.Status)
	wctx, cancel := context.WithTimeout(ctx, s.timeout())
	defer cancel()
	if err := s.comp.PowerOn(wctx, st.SourceID); err != nil {
		return fmt.Errorf("power on %s: %w", st.SourceName, err)
	}
	addr := s.addrOfSource()
	if err := s.waitAccepting(wctx, addr); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("%s powered on but %s refuses connections", st.SourceName, addr)
	}
	return nil
}

// waitAccepting waits until addr accepts TCP connections, saying so, or
// until ctx ends.
func (s *swapRun) waitAccepting(ctx context.Context, addr string) error {
	start := time.Now()
	for {
		c, err := (&net.Dialer{Timeout: 2 * time.Second}).DialContext(ctx, "tcp", addr)
		if err == nil {
			c.Close()
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		s.progress("waiting for %s to accept connections (%s)", addr, time.Since(start).Round(time.Second))
		if err := s.r.clock().Sleep(ctx, s.r.poll()); err != nil {
			return err
		}
	}
}
