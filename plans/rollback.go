package plans

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/vmswap/vmswap/dns"
	"github.com/vmswap/vmswap/loadbalancer"
)

// rollbackTimeout bounds a rollback; it runs to completion even after the
// user interrupts, because stopping halfway would leave traffic split.
const rollbackTimeout = 20 * time.Minute

// rollback undoes the completed cutover steps in reverse so the source
// serves again, then deletes what the run created. It returns ExitRolledBack
// when all of that worked, ExitAttention (with the commands that finish the
// job) when something is left.
func (r *Runner) rollback(s *swapRun, cause error) (int, string) {
	ctx, cancel := context.WithTimeout(context.Background(), rollbackTimeout)
	defer cancel()
	st := s.st
	r.emit(Event{Event: "step", Swap: s.name(), Step: "rollback", Status: "started", Message: cause.Error()})
	st.Steps["rollback"] = &StepLog{Start: time.Now().UTC(), Status: "running"}
	r.save()

	var left []string
	var cmds []string
	note := func(what, cmd string, err error) {
		left = append(left, fmt.Sprintf("%s: %v", what, err))
		if cmd != "" {
			cmds = append(cmds, cmd)
		}
		r.emit(Event{Event: "warning", Swap: s.name(), Step: "rollback", Message: fmt.Sprintf("%s: %v", what, err)})
	}
	c := s.sw.Cutover
	var keepNewUntil time.Time
	switch {
	case c.ReservedIP != nil && st.has("ip_assigned"):
		back := st.OldAssignee
		if back == "" {
			back = st.SourceID
		}
		s.progress("rollback: pointing reserved IP %s back at %s", c.ReservedIP.IP, st.SourceName)
		if err := r.Drivers[c.ReservedIP.Provider].IP.AssignIP(ctx, c.ReservedIP.IP, back); err != nil {
			note("reserved IP "+c.ReservedIP.IP+" still points at the new server", "", err)
		}
		keepNewUntil = r.clock().Now().Add(orDur(c.ReservedIP.Drain, 10*time.Second))
	case c.DNS != nil && st.has("dns_set"):
		d := r.Drivers[c.DNS.Provider].DNS
		old := dns.Record{Name: c.DNS.Record, Type: recordType(c.DNS), Values: st.OldValues}
		s.progress("rollback: pointing %s back at %v", c.DNS.Record, st.OldValues)
		if _, err := d.SetRecord(ctx, old); err != nil {
			note("record "+c.DNS.Record+" still points at the new server", "", err)
		} else if err := d.WaitServed(ctx, old); err != nil {
			note("record "+c.DNS.Record+" not yet served with the old value", "", err)
		}
		// Resolvers that cached the new answer keep using it for a TTL.
		keepNewUntil = r.clock().Now().Add(time.Duration(st.OldTTL)*time.Second + orDur(c.DNS.Grace, 30*time.Second))
	case c.LoadBalancer != nil && st.has("lb_added"):
		lb := r.Drivers[c.LoadBalancer.Provider].LB
		if st.has("lb_old_removed") {
			s.progress("rollback: adding %s back to load balancer %s", st.SourceName, c.LoadBalancer.ID)
			if err := lb.AddMember(ctx, c.LoadBalancer.ID, loadbalancer.Member{ServerID: st.SourceID, Address: st.SourceIP}); err != nil {
				note("source not back in load balancer "+c.LoadBalancer.ID, "", err)
			} else if err := proveRoutes(ctx, s, c.LoadBalancer, st.SourceID, st.SourceIP, st.SourceName); err != nil {
				note("load balancer does not route to the source yet", "", err)
			}
		}
		s.progress("rollback: removing %s from load balancer %s", st.NewName, c.LoadBalancer.ID)
		if err := lb.RemoveMember(ctx, c.LoadBalancer.ID, loadbalancer.Member{ServerID: st.NewID, Address: st.NewIP}); err != nil {
			note("new server still in load balancer "+c.LoadBalancer.ID, "", err)
		}
		keepNewUntil = r.clock().Now().Add(orDur(c.LoadBalancer.Drain, 10*time.Second))
	}
	if len(left) == 0 {
		if wait := keepNewUntil.Sub(r.clock().Now()); wait > 0 && st.NewID != "" {
			s.progress("rollback: keeping %s up %s more for requests and cached answers still reaching it", st.NewName, wait.Round(time.Second))
			r.clock().Sleep(ctx, wait)
		}
	}
	stopProbe(s)

	// Delete what this run created. A launch whose ID never reached the
	// journal is found by its token.
	if st.NewID == "" && st.Token != "" && len(left) == 0 {
		if srv, err := s.comp.FindLaunched(ctx, st.Token); err == nil && srv != nil {
			st.NewID, st.NewName = srv.ID, srv.Name
		}
	}
	if st.NewID != "" && len(left) == 0 {
		s.progress("rollback: deleting %s", st.NewName)
		if err := s.comp.DeleteServer(ctx, st.NewID); err != nil {
			note("new server "+st.NewName+" ("+st.NewID+") not deleted", fmt.Sprintf("vmswap cleanup --yes %s", r.planFile()), err)
		} else {
			st.NewID = ""
		}
	}
	if st.ImageID == "" && st.ImageName != "" {
		if img, err := s.comp.FindImage(ctx, st.ImageName); err == nil && img != nil {
			st.ImageID = img.ID
		}
	}
	if st.ImageID != "" {
		s.progress("rollback: deleting image %s", st.ImageName)
		if err := s.comp.DeleteImage(ctx, st.ImageID); err != nil {
			note("image "+st.ImageName+" ("+st.ImageID+") not deleted", fmt.Sprintf("vmswap cleanup --yes %s", r.planFile()), err)
		} else {
			st.ImageID = ""
		}
	}
	st.Steps["rollback"].End = time.Now().UTC()
	step := failedStep(st)
	if len(left) > 0 {
		st.Status, st.Left = StatusFailed, left
		st.Steps["rollback"].Status = "failed"
		r.save()
		next := fmt.Sprintf("%s failed (%s) and the rollback did not finish:\n  - %s", step, trimSentinel(cause), strings.Join(left, "\n  - "))
		if len(cmds) > 0 {
			next += "\nFinish it with: " + cmds[0]
		}
		return ExitAttention, next
	}
	st.Status = StatusRolledBack
	st.Steps["rollback"].Status = "ok"
	r.emit(Event{Event: "step", Swap: s.name(), Step: "rollback", Status: "ok"})
	r.save()
	return ExitRolledBack, fmt.Sprintf("%s failed and was rolled back: %s serves as before, and everything this run created was deleted. Cause: %v", step, st.SourceName, trimSentinel(cause))
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
	for _, s := range []error{ErrPreflight, ErrStale, ErrVerify, ErrNeverRoutes, ErrBudget} {
		if errors.Is(err, s) && strings.HasPrefix(msg, s.Error()+"\n") {
			msg = s.Error() + ": " + strings.TrimPrefix(msg, s.Error()+"\n")
		}
	}
	return msg
}
