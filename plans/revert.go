package plans

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/hashicorp/go-multierror"

	"github.com/vmswap/vmswap/dns"
	"github.com/vmswap/vmswap/loadbalancer"
	"github.com/vmswap/vmswap/verify"
)

// StatusReverted is a swap switched back by `vmswap rollback`.
const StatusReverted = "reverted"

// Revert switches a plan's swaps back, last first. A swap that succeeded is
// switched back while its old server exists (powered off within keep_for):
// power it on, verify it, move traffic back, retire the new server as the
// plan retires servers. A swap stopped part-way is rolled back as a failure
// would have been. It never returns an error: the Result says what happened.
func (r *Runner) Revert(ctx context.Context) *Result {
	res := &Result{Status: StatusReverted}
	for i := len(r.Doc.Plan.Swaps) - 1; i >= 0; i-- {
		sr := &swapRun{r: r, i: i, sw: &r.Doc.Plan.Swaps[i], st: r.Journal.Swaps[i], start: time.Now()}
		sr.comp = r.Drivers[sr.sw.Source.Provider].Compute
		var code int
		var next string
		switch sr.st.Status {
		case StatusSucceeded:
			code, next = r.revertSwap(ctx, sr)
		case StatusRunning, StatusInterrupted, StatusFailed:
			if len(sr.st.Done) == 0 || (len(sr.st.Done) == 1 && sr.st.has("preflight") && sr.st.ImageName == "") {
				sr.st.Status = StatusRolledBack
				continue
			}
			code, next = r.rollback(sr, errors.New("undone by vmswap rollback"))
			if code == ExitRolledBack {
				code = ExitOK
			}
		default: // pending, rolled back, reverted: nothing to undo
			continue
		}
		res.Swaps = append([]SwapResult{r.swapResult(sr)}, res.Swaps...)
		if code != ExitOK {
			res.Status, res.ExitCode, res.Next = StatusFailed, code, next
			break
		}
	}
	r.Journal.Status = res.Status
	r.save()
	return res
}

func (r *Runner) revertSwap(ctx context.Context, s *swapRun) (int, string) {
	st, sw := s.st, s.sw
	fail := func(err error) (int, string) {
		stopProbe(s)
		st.Error = "rollback: " + err.Error()
		r.save()
		return ExitAttention, fmt.Sprintf("switching %s back to %s failed: %v\nTraffic is where the message above says; run `vmswap rollback %s` again once the cause is fixed.", st.NewName, st.SourceName, err, r.planFile())
	}
	if sw.Retire.Action == "delete" && st.has("old_retired") {
		return ExitBadInput, fmt.Sprintf("%s was deleted when the swap finished (retire: delete): there is no old server to switch back to", st.SourceName)
	}
	if !st.KeepUntil.IsZero() && r.clock().Now().After(st.KeepUntil) {
		r.emit(Event{Event: "warning", Swap: s.name(), Message: fmt.Sprintf("the keep window of %s ended at %s; switching back anyway since it still exists", st.SourceName, st.KeepUntil.Format(time.RFC3339))})
	}
	r.emit(Event{Event: "step", Swap: s.name(), Step: "rollback", Status: "started", Message: fmt.Sprintf("switching back from %s to %s", st.NewName, st.SourceName)})
	st.Steps["rollback"] = &StepLog{Start: time.Now().UTC(), Status: "running"}
	r.save()
	wctx, cancel := context.WithTimeout(ctx, s.timeout())
	defer cancel()

	// 1. The old server runs and answers.
	if !st.has("revert_powered_on") {
		s.progress("powering on %s", st.SourceName)
		if err := s.comp.PowerOn(wctx, st.SourceID); err != nil {
			return fail(err)
		}
		if err := s.mark("revert_powered_on"); err != nil {
			return fail(err)
		}
	}
	addr := net.JoinHostPort(st.SourceIP, portOf(s.serviceURL()))
	if sw.Verify.ConnectAddress != "" {
		addr = sw.Verify.ConnectAddress
	}
	for {
		c, err := (&net.Dialer{Timeout: 2 * time.Second}).DialContext(wctx, "tcp", addr)
		if err == nil {
			c.Close()
			break
		}
		if wctx.Err() != nil {
			return fail(fmt.Errorf("%s powered on but %s refuses connections", st.SourceName, addr))
		}
		s.progress("waiting for %s to accept connections", addr)
		if err := r.clock().Sleep(wctx, r.poll()); err != nil {
			return fail(err)
		}
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

	// 2. Traffic back.
	if err := s.startProbe(wctx); err != nil {
		return fail(err)
	}
	c := sw.Cutover
	var drainUntil time.Time
	switch {
	case c.LoadBalancer != nil:
		lb := r.Drivers[c.LoadBalancer.Provider].LB
		if !st.has("revert_lb_added") {
			s.progress("adding %s back to load balancer %s", st.SourceName, c.LoadBalancer.ID)
			if err := lb.AddMember(wctx, c.LoadBalancer.ID, loadbalancer.Member{ServerID: st.SourceID, Address: st.SourceIP}); err != nil {
				return fail(err)
			}
			if err := s.mark("revert_lb_added"); err != nil {
				return fail(err)
			}
		}
		if err := proveRoutes(wctx, s, c.LoadBalancer, st.SourceID, st.SourceIP, st.SourceName); err != nil {
			return fail(err)
		}
		if !st.has("revert_lb_removed") {
			s.progress("removing %s from load balancer %s", st.NewName, c.LoadBalancer.ID)
			if err := lb.RemoveMember(wctx, c.LoadBalancer.ID, loadbalancer.Member{ServerID: st.NewID, Address: st.NewIP}); err != nil {
				return fail(err)
			}
			if err := s.mark("revert_lb_removed"); err != nil {
				return fail(err)
			}
		}
		drainUntil = r.clock().Now().Add(orDur(c.LoadBalancer.Drain, 10*time.Second))
	case c.DNS != nil:
		d := r.Drivers[c.DNS.Provider].DNS
		old := dns.Record{Name: c.DNS.Record, Type: recordType(c.DNS), Values: st.OldValues}
		s.progress("pointing %s back at %v", c.DNS.Record, st.OldValues)
		if _, err := d.SetRecord(wctx, old); err != nil {
			return fail(err)
		}
		if err := d.WaitServed(wctx, old); err != nil {
			return fail(err)
		}
		drainUntil = r.clock().Now().Add(time.Duration(st.OldTTL)*time.Second + orDur(c.DNS.Grace, 30*time.Second))
	case c.ReservedIP != nil:
		s.progress("pointing reserved IP %s back at %s", c.ReservedIP.IP, st.SourceName)
		if err := r.Drivers[c.ReservedIP.Provider].IP.AssignIP(wctx, c.ReservedIP.IP, st.SourceID); err != nil {
			return fail(err)
		}
		drainUntil = r.clock().Now().Add(orDur(c.ReservedIP.Drain, 10*time.Second))
	}

	// 3. Retire the new server as the plan retires servers.
	if left := drainUntil.Sub(r.clock().Now()); left > 0 {
		s.progress("keeping %s serving %s more (drain / cached DNS answers)", st.NewName, left.Round(time.Second))
		if err := r.clock().Sleep(ctx, left); err != nil {
			return fail(err)
		}
	}
	if sw.Retire.Action == "delete" {
		s.progress("deleting %s", st.NewName)
		if err := s.comp.DeleteServer(ctx, st.NewID); err != nil {
			return fail(err)
		}
	} else {
		s.progress("powering off %s", st.NewName)
		if err := s.comp.PowerOff(ctx, st.NewID, orDur(sw.Retire.ShutdownTimeout, 2*time.Minute)); err != nil {
			return fail(err)
		}
	}
	stopProbe(s)
	st.Status = StatusReverted
	st.Steps["rollback"].End, st.Steps["rollback"].Status = time.Now().UTC(), "ok"
	r.emit(Event{Event: "swap", Swap: s.name(), Status: StatusReverted, Message: fmt.Sprintf("%s serves again; %s retired", st.SourceName, st.NewName)})
	r.save()
	return ExitOK, ""
}
