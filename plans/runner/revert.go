package runner

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/go-multierror"

	"github.com/vmswap/vmswap/plans"
	"github.com/vmswap/vmswap/provider"
	"github.com/vmswap/vmswap/verify"
)

// Revert undoes a plan's last run, last swap first. A swap that succeeded
// is switched back while its old server exists (powered off within
// keep_for): power it on, verify it, move traffic back, retire the new
// server as the plan retires servers. A swap stopped part-way is rolled
// back as a failure would have been. It never returns an error: the Result
// says what happened.
func (r *Runner) Revert(ctx context.Context) *Result {
	res := &Result{Status: StatusReverted}
	// Every finished swap is checked before any is switched back: a fleet
	// whose one server a later run took on is refused whole, not after
	// the others were switched.
	var refused []string
	for i := range r.Doc.Plan.Swaps {
		sr := r.swapRun(i)
		if sr.st.Status != StatusSucceeded || sr.st.Steps["rollback"] != nil || sr.sw.Retire.Action == "delete" && sr.st.has(subOldRetired) {
			continue
		}
		if why := sr.revertable(ctx); why != "" {
			refused = append(refused, why)
		}
	}
	if len(refused) > 0 {
		next := "nothing was changed: " + refused[0]
		if len(refused) > 1 {
			next = "nothing was changed:\n  - " + strings.Join(refused, "\n  - ")
		}
		return &Result{Status: r.Journal.Status, ExitCode: ExitBadInput, Next: next}
	}
	for i := len(r.Doc.Plan.Swaps) - 1; i >= 0; i-- {
		sr := r.swapRun(i)
		var code int
		var next string
		switch sr.st.Status {
		case StatusSucceeded:
			code, next = r.revertSwap(ctx, sr)
		case StatusRunning, StatusInterrupted, StatusNeedsAttention, StatusPaused:
			if sr.st.has(subOldRetired) || slices.Contains(sr.st.Intents, subOldRetired) {
				// Retire had begun (the power-off may have been sent when
				// the run was stopped): switched back as a finished swap,
				// the old server powered on first.
				code, next = r.revertSwap(ctx, sr)
				break
			}
			code, next = r.rollback(sr, errors.New("undone by vmswap rollback"))
			if code == ExitRolledBack {
				code = ExitOK
			}
		default: // pending, refused, rolled back, reverted: nothing to undo
			continue
		}
		sum := r.swapResult(sr)
		// The swap's own warnings (what else routes to the source, which
		// retiring it would cut off) do not apply to switching back.
		sum.Warnings = nil
		res.Swaps = append([]SwapResult{sum}, res.Swaps...)
		if code == ExitBadInput && len(res.Swaps) == 1 {
			// Refused before changing anything: the run stays as it was.
			return &Result{Status: r.Journal.Status, ExitCode: code, Next: next, Swaps: res.Swaps}
		}
		if code != ExitOK {
			res.Status, res.ExitCode, res.Next = StatusNeedsAttention, code, next
			break
		}
	}
	r.dropClaimTag(context.WithoutCancel(ctx))
	r.Journal.Status = res.Status
	if err := r.save(); err != nil && res.ExitCode == ExitOK {
		res.Status, res.ExitCode, res.Next = StatusNeedsAttention, ExitAttention, err.Error()
	}
	return res
}

func (r *Runner) revertSwap(ctx context.Context, s *swapRun) (int, string) {
	st, sw := s.st, s.sw
	fail := func(err error) (int, string) {
		stopProbe(s)
		st.Error = "rollback: " + err.Error()
		st.Status = StatusNeedsAttention
		if l := st.Steps["rollback"]; l != nil {
			l.Status = "failed"
		}
		if serr := r.save(); serr != nil {
			err = fmt.Errorf("%w (and the journal could not be written: %v)", err, serr)
		}
		return ExitAttention, fmt.Sprintf("switching %s back to %s failed: %v\nTraffic is where the message above says; run `vmswap rollback %s` again once the cause is fixed.", st.NewName, st.SourceName, err, r.planFile())
	}
	if sw.Retire.Action == "delete" && st.has(subOldRetired) {
		return ExitBadInput, fmt.Sprintf("%s was deleted when the swap finished (retire: delete): there is no old server to switch back to", st.SourceName)
	}
	if st.Status == StatusSucceeded && st.Steps["rollback"] == nil {
		// Before anything changes: both servers are still what this run
		// left, and traffic is still on the new one. A later swap of the
		// same server, or cleanup --expired, may have moved on since.
		if why := s.revertable(ctx); why != "" {
			return ExitBadInput, "nothing was changed: " + why
		}
	}
	if !st.KeepUntil.IsZero() && r.clock().Now().After(st.KeepUntil) {
		r.emit(Event{Event: "warning", Swap: s.name(), Message: fmt.Sprintf("the keep window of %s ended at %s; switching back anyway since it still exists", st.SourceName, st.KeepUntil.Format(time.RFC3339))})
	}
	if st.NewGone {
		r.emit(Event{Event: "warning", Swap: s.name(), Message: fmt.Sprintf("the new server %s (%s) no longer exists (someone deleted it): traffic goes back to %s, and what users wrote on %s since the cutover went with it", st.NewName, st.NewID, st.SourceName, st.NewName)})
	}
	r.emit(Event{Event: "step", Swap: s.name(), Step: "rollback", Status: "started", Message: fmt.Sprintf("switching back from %s to %s", st.NewName, st.SourceName)})
	st.Steps["rollback"] = &StepLog{Start: r.now(), Status: "running"}
	if err := r.save(); err != nil {
		return fail(err)
	}
	wctx, cancel := context.WithTimeout(ctx, s.timeout())
	defer cancel()

	// 0. The names go back where they were.
	if err := s.restoreNames(wctx); err != nil {
		return fail(err)
	}

	// 1. The old server runs and answers, and is no longer marked for
	// cleanup --expired: it serves again.
	s.progress("powering on %s", st.SourceName)
	if err := s.comp.PowerOn(wctx, st.SourceID); err != nil {
		return fail(err)
	}
	if !st.KeepUntil.IsZero() {
		if err := s.comp.UntagServer(wctx, st.SourceID, keepTag(st.KeepUntil)); err != nil {
			return fail(err)
		}
		// Shared by the servers retired in the same ten minutes: deleted
		// once none is left with it.
		defer dropIfEmpty(context.WithoutCancel(ctx), s.comp, keepTag(st.KeepUntil))
	}
	addr := s.addrOfSource()
	if err := s.waitAccepting(wctx, addr); err != nil {
		if ctx.Err() != nil {
			return fail(ctx.Err())
		}
		return fail(fmt.Errorf("%s powered on but %s refuses connections", st.SourceName, addr))
	}
	if len(sw.Verify.HTTP) > 0 {
		client, err := verify.Pinned(addr, sw.Verify.CAFile, 10*time.Second)
		if err != nil {
			return fail(err)
		}
		var errs *multierror.Error
		for _, h := range sw.Verify.HTTP {
			for _, e := range h.Check(wctx, client) {
				errs = multierror.Append(errs, e)
			}
		}
		if errs.ErrorOrNil() != nil {
			errs.ErrorFormat = listFormat
			return fail(fmt.Errorf("%s does not pass the plan's HTTP checks; traffic stays on %s:\n%s", st.SourceName, st.NewName, errs.Error()))
		}
		s.progress("%s passes the plan's HTTP checks", st.SourceName)
	}

	// 2. What users wrote on the new server goes back with the traffic,
	// the bulk first; then traffic back, with the probe watching.
	if err := s.carryBack(wctx, passBack); err != nil {
		return fail(err)
	}
	if err := s.startProbe(wctx); err != nil {
		return fail(err)
	}
	if err := s.kind.back(wctx, s); err != nil {
		return fail(err)
	}
	if err := s.joinHeldTags(wctx, false); err != nil {
		return fail(err)
	}

	// 3. Retire the new server as the plan retires servers, once requests
	// in flight and cached answers are done with it.
	if left := s.kind.hold(st); left > 0 && !st.NewGone {
		s.progress("keeping %s serving %s more (drain / cached DNS answers)", st.NewName, left.Round(time.Second))
		if err := r.clock().Sleep(ctx, left); err != nil {
			return fail(err)
		}
	}
	if err := s.carryBack(ctx, passBackFinal); err != nil {
		return fail(fmt.Errorf("%w; traffic is back on %s, and %s keeps running until what users wrote on it is carried back", err, st.SourceName, st.NewName))
	}
	switch {
	case st.NewGone:
	case sw.Retire.Action == "delete":
		s.progress("deleting %s", st.NewName)
		if err := s.comp.DeleteServer(ctx, st.NewID); err != nil {
			return fail(err)
		}
	default:
		s.progress("powering off %s", st.NewName)
		if err := s.comp.PowerOff(ctx, st.NewID, orDur(sw.Retire.ShutdownTimeout, 2*time.Minute)); err != nil {
			return fail(err)
		}
		if sw.Retire.KeepFor > 0 {
			// The retired new server has its keep window too.
			if err := s.comp.TagServer(ctx, st.NewID, keepTag(keepUntil(r.clock().Now(), sw.Retire.KeepFor.D()))); err != nil {
				return fail(err)
			}
		}
	}
	if !sw.Retire.KeepImage && st.ImageID != "" {
		// A run stopped in its retire step, before the image went: the
		// swap is over either way, and its image serves nothing.
		s.progress("deleting image %s", st.ImageName)
		if err := s.once(subImageDeleted, func() error { return s.comp.DeleteImage(ctx, st.ImageID) }); err != nil {
			return fail(err)
		}
	}
	stopProbe(s)
	if w := writesOf(st.Probe); w != nil && w.LostUploads+w.LostSessions > 0 {
		return fail(fmt.Errorf("%s serves again and %s is retired, but the probe's writes: %s: %s", st.SourceName, st.NewName, w, strings.Join(w.Lost, "; ")))
	}
	r.release(context.WithoutCancel(ctx), s)
	st.Status = StatusReverted
	st.Steps["rollback"].End, st.Steps["rollback"].Status = r.now(), "ok"
	retired := "retired"
	if st.NewGone {
		retired = "was deleted by someone before"
	}
	r.emit(Event{Event: "swap", Swap: s.name(), Status: string(StatusReverted), Message: fmt.Sprintf("%s serves again; %s %s", st.SourceName, st.NewName, retired)})
	if err := r.save(); err != nil {
		return fail(err)
	}
	return ExitOK, ""
}

// RevertPlan says, one line per swap, what Revert will do with run j.
func RevertPlan(j *Journal, doc *plans.Document) []string {
	var out []string
	for i := len(j.Swaps) - 1; i >= 0; i-- {
		st := j.Swaps[i]
		sw := doc.Plan.Swaps[i]
		src := st.SourceNameOr(sw.Source.Server)
		switch {
		case st.Status == StatusSucceeded || st.has(subOldRetired) && st.Status != StatusRolledBack && st.Status != StatusReverted:
			line := fmt.Sprintf("power %s on, check it, move traffic back to it from %s, then retire %s (%s)", src, st.NewName, st.NewName, orRetire(sw.Retire.Action))
			if sw.Carry != nil {
				line += fmt.Sprintf("; what users wrote on %s under %s is carried back first", st.NewName, strings.Join(sw.Carry.Paths, ", "))
			}
			out = append(out, line)
		case st.Status == StatusRunning || st.Status == StatusInterrupted || st.Status == StatusNeedsAttention || st.Status == StatusPaused:
			line := fmt.Sprintf("undo the unfinished swap of %s: move traffic back to it if any moved, then delete what the run created", src)
			if st.NewName != "" {
				line = fmt.Sprintf("undo the unfinished swap of %s: move traffic back to it if any moved, then delete %s and the image", src, st.NewName)
			}
			out = append(out, line)
		}
	}
	return out
}

func orRetire(a string) string {
	if a == "delete" {
		return "deleted"
	}
	return "powered off"
}

// revertable says why a finished swap cannot be switched back ("" if it
// can): its old server must still exist, and its new server must still be
// this run's — not retired by a later swap (which renamed it and marked its
// keep window). A new server a person powered off or took out of the pool
// is switched back from: that is when switching back matters most.
func (s *swapRun) revertable(ctx context.Context) string {
	st := s.st
	src, err := s.comp.GetServer(ctx, st.SourceID)
	if errors.Is(err, provider.ErrNotFound) || err == nil && src.Status == provider.StatusGone {
		return fmt.Sprintf("the old server %s (%s) no longer exists (deleted after its keep window?): there is nothing to switch back to", st.SourceName, st.SourceID)
	}
	if err != nil {
		return fmt.Sprintf("could not read the old server %s: %v", st.SourceID, err)
	}
	nw, err := s.comp.GetServer(ctx, st.NewID)
	servers := []*provider.Server{src, nw}
	switch {
	case errors.Is(err, provider.ErrNotFound) || err == nil && nw.Status == provider.StatusGone:
		// Deleted by someone: the source is what can serve again. A later
		// swap that retired it by deleting would have moved the traffic
		// on, which the check of where traffic is now refuses.
		st.NewGone, nw, servers = true, nil, servers[:1]
	case err != nil:
		return fmt.Sprintf("could not read the new server %s: %v", st.NewID, err)
	}
	// Another run (a later plan swapping the server this run launched, or
	// one swapping the old server) holds them: switching back under it
	// would rename and power on servers that run is moving.
	run := s.r.Journal.RunID
	for _, srv := range servers {
		if others := slices.DeleteFunc(claimsOn(srv), func(r string) bool { return r == run }); len(others) > 0 {
			return fmt.Sprintf("%s (%s) is being swapped by run %s (tag %s on the server): finish or roll back that run first, then switch this one back if it still applies", srv.Name, srv.ID, strings.Join(others, ", "), claimTag(others[0]))
		}
	}
	want := st.NewName
	if st.has(subRenameNew) {
		want = st.SourceName
	}
	if nw != nil {
		if _, kept := keptUntil(nw); kept || nw.Name != want {
			return fmt.Sprintf("the server this run launched (%s, now named %s) was retired by a later swap of %s: switching this run back would undo that one; switch back with the plan of the latest swap", st.NewID, nw.Name, st.SourceName)
		}
	}
	if bc, ok := s.kind.(backChecker); ok {
		return bc.backProblem(ctx, s)
	}
	return ""
}
