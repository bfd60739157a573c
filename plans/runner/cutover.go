package runner

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/vmswap/vmswap/dns"
	"github.com/vmswap/vmswap/loadbalancer"
	"github.com/vmswap/vmswap/plans"
	"github.com/vmswap/vmswap/plans/registry"
	"github.com/vmswap/vmswap/provider"
	"github.com/vmswap/vmswap/verify"
	"github.com/vmswap/vmswap/verify/probe"
)

// cutoverKind is one way of moving a swap's traffic: a load-balancer pool,
// a DNS record or a reserved IP. Preflight, plan observation, the cutover,
// rollback, revert, the retire hold and the default probe all go through
// it, so a kind is described in one place.
//
// forward and back are safe to repeat and to call after the other ran
// partly: each sub-step is journalled as intent before its call is made
// (the drivers' calls are idempotent), so an interrupted or timed-out call
// is undone like a completed one.
type cutoverKind interface {
	// read observes where traffic goes today and reports the problems that
	// keep the source from being swapped this way.
	read(ctx context.Context, src *provider.Server, seen *plans.ObservedSwap) (problems []string, err error)
	// stale compares the plan's observation with today's.
	stale(planned, now *plans.ObservedSwap) []string
	// mutation describes the cutover for the plan's mutation list.
	mutation(src *provider.Server, seen *plans.ObservedSwap) string
	// forward moves traffic from the source to the new server.
	forward(ctx context.Context, s *swapRun) error
	// back moves traffic from the new server to the source.
	back(ctx context.Context, s *swapRun) error
	// hold is how long the server traffic just left must keep serving:
	// requests in flight (drain) or answers cached by resolvers (TTL + grace).
	hold(st *SwapState) time.Duration
	// entry is the public entry point probed when the plan names no probe.
	entry(ctx context.Context, port string) (probe.Config, bool)
}

// kindOf returns the cutover kind of c, bound to its drivers.
func kindOf(c plans.Cutover, drivers map[string]*registry.Drivers) cutoverKind {
	switch {
	case c.LoadBalancer != nil:
		return &lbCutover{c: c.LoadBalancer, lb: drivers[c.LoadBalancer.Provider].LB}
	case c.DNS != nil:
		return &dnsCutover{c: c.DNS, d: drivers[c.DNS.Provider].DNS}
	case c.ReservedIP != nil:
		return &ipCutover{c: c.ReservedIP, ip: drivers[c.ReservedIP.Provider].IP}
	}
	panic("plans: a validated plan has exactly one cutover")
}

// intend journals that a mutating call is about to be made, so that a
// rollback undoes it even if the call's outcome was never seen.
func (s *swapRun) intend(sub string) error {
	if !slices.Contains(s.st.Intents, sub) {
		s.st.Intents = append(s.st.Intents, sub)
	}
	return s.r.save()
}

// mark journals a completed cutover sub-step.
func (s *swapRun) mark(sub string) error {
	s.st.Done = append(s.st.Done, sub)
	return s.r.save()
}

// once runs a mutating sub-step unless it is done: intent, call, done.
func (s *swapRun) once(sub string, call func() error) error {
	if s.st.has(sub) {
		return nil
	}
	if err := s.intend(sub); err != nil {
		return err
	}
	if err := call(); err != nil {
		return err
	}
	return s.mark(sub)
}

// lbCutover adds the new server to a pool, proves the pool routes to it,
// then removes the source with draining.
type lbCutover struct {
	c  *plans.LBCutover
	lb loadbalancer.Provider
}

func (k *lbCutover) read(ctx context.Context, src *provider.Server, seen *plans.ObservedSwap) ([]string, error) {
	pool, err := k.lb.Pool(ctx, k.c.ID)
	if err != nil {
		return nil, fmt.Errorf("load balancer: %w", err)
	}
	seen.Pool = pool
	if !pool.Has(src.ID, src.PublicIP) {
		return []string{fmt.Sprintf("load balancer %s does not route to %s (members: %s): the cutover target must point at the source today", pool.ID, src.Name, strings.Join(pool.Keys(), ", "))}, nil
	}
	return nil, nil
}

func (k *lbCutover) stale(planned, now *plans.ObservedSwap) []string {
	if planned.Pool != nil && now.Pool != nil && !slices.Equal(planned.Pool.Keys(), now.Pool.Keys()) {
		return []string{fmt.Sprintf("load balancer %s members changed: %v when planned, %v now", now.Pool.ID, planned.Pool.Keys(), now.Pool.Keys())}
	}
	return nil
}

func (k *lbCutover) mutation(src *provider.Server, seen *plans.ObservedSwap) string {
	return fmt.Sprintf("add the new server to load balancer %s, then remove %s (%s) from it", k.c.ID, src.Name, src.ID)
}

func (k *lbCutover) forward(ctx context.Context, s *swapRun) error {
	st := s.st
	if err := s.once(subLBAdded, func() error {
		s.progress("adding %s to load balancer %s", st.NewName, k.c.ID)
		return k.lb.AddMember(ctx, k.c.ID, loadbalancer.Member{ServerID: st.NewID, Address: st.NewIP})
	}); err != nil {
		return err
	}
	if !st.has(subLBRoutesNew) {
		if err := proveRoutes(ctx, s, k.c, st.NewID, st.NewIP, st.NewName); err != nil {
			return err
		}
		if err := s.mark(subLBRoutesNew); err != nil {
			return err
		}
	}
	return s.once(subLBOldRemoved, func() error {
		s.progress("removing %s from load balancer %s (draining)", st.SourceName, k.c.ID)
		return k.lb.RemoveMember(ctx, k.c.ID, loadbalancer.Member{ServerID: st.SourceID, Address: st.SourceIP})
	})
}

func (k *lbCutover) back(ctx context.Context, s *swapRun) error {
	st := s.st
	pool, err := k.lb.Pool(ctx, k.c.ID)
	if err != nil {
		return err
	}
	if !pool.Has(st.SourceID, st.SourceIP) {
		s.progress("adding %s back to load balancer %s", st.SourceName, k.c.ID)
		if err := k.lb.AddMember(ctx, k.c.ID, loadbalancer.Member{ServerID: st.SourceID, Address: st.SourceIP}); err != nil {
			return fmt.Errorf("add %s back to load balancer %s: %w", st.SourceName, k.c.ID, err)
		}
		if err := proveRoutes(ctx, s, k.c, st.SourceID, st.SourceIP, st.SourceName); err != nil {
			return fmt.Errorf("load balancer %s does not route to %s yet: %w", k.c.ID, st.SourceName, err)
		}
	}
	if st.NewID == "" && st.NewIP == "" {
		return nil
	}
	s.progress("removing %s from load balancer %s", dash(st.NewName), k.c.ID)
	if err := k.lb.RemoveMember(ctx, k.c.ID, loadbalancer.Member{ServerID: st.NewID, Address: st.NewIP}); err != nil {
		return fmt.Errorf("new server %s is still in load balancer %s: %w", st.NewName, k.c.ID, err)
	}
	return nil
}

func (k *lbCutover) hold(*SwapState) time.Duration { return orDur(k.c.Drain, 10*time.Second) }

func (k *lbCutover) entry(ctx context.Context, port string) (probe.Config, bool) {
	pool, err := k.lb.Pool(ctx, k.c.ID)
	if err != nil || pool.Address == "" {
		return probe.Config{}, false
	}
	addr := pool.Address
	if _, _, err := net.SplitHostPort(addr); err != nil {
		addr = net.JoinHostPort(addr, port)
	}
	return probe.Config{URL: "http://" + addr + "/"}, true
}

// proveRoutes waits until the load balancer sends traffic to a member: by
// its health report, by responses that name the member (identify_header),
// or by waiting out the health checks.
func proveRoutes(ctx context.Context, s *swapRun, c *plans.LBCutover, id, ip, name string) error {
	lb := s.r.Drivers[c.Provider].LB
	start := time.Now()
	if hr, ok := lb.(loadbalancer.HealthReporter); ok {
		for {
			okk, err := hr.MemberHealthy(ctx, c.ID, loadbalancer.Member{ServerID: id, Address: ip})
			if err != nil {
				return err
			}
			if okk {
				return nil
			}
			s.progress("waiting for load balancer %s to find %s healthy (%s)", c.ID, name, time.Since(start).Round(time.Second))
			if err := s.r.clock().Sleep(ctx, s.r.poll()); err != nil {
				return lbTimeout(c, name, err)
			}
		}
	}
	pool := s.pool
	if pool == nil { // a resumed run
		var err error
		if pool, err = lb.Pool(ctx, c.ID); err != nil {
			return err
		}
		s.pool = pool
	}
	if c.IdentifyHeader == "" {
		s.progress("waiting %s for load balancer %s's health checks to pass on %s", pool.HealthyAfter, c.ID, name)
		return s.r.clock().Sleep(ctx, pool.HealthyAfter)
	}
	u := s.serviceURL()
	direct, err := verify.Pinned(s.addrOf(ip), s.sw.Verify.CAFile, 5*time.Second)
	if err != nil {
		return err
	}
	_, h, _, err := verify.Do(ctx, direct, u.String())
	if err != nil {
		return fmt.Errorf("ask %s who it is: %w", name, err)
	}
	want := h.Get(c.IdentifyHeader)
	if want == "" {
		return fmt.Errorf("%s answers without a %s header: set cutover.loadbalancer.identify_header to a header that names the server, or remove it", name, c.IdentifyHeader)
	}
	addr := pool.Address
	if _, _, err := net.SplitHostPort(addr); err != nil {
		addr = net.JoinHostPort(addr, portOf(u))
	}
	through, err := verify.Pinned(addr, s.sw.Verify.CAFile, 5*time.Second)
	if err != nil {
		return err
	}
	hits := 0
	for hits < 3 {
		if _, h, _, err := verify.Do(ctx, through, u.String()); err == nil && h.Get(c.IdentifyHeader) == want {
			hits++
			continue
		}
		s.progress("waiting for load balancer %s to route to %s (%s)", c.ID, name, time.Since(start).Round(time.Second))
		if err := s.r.clock().Sleep(ctx, s.r.poll()); err != nil {
			return lbTimeout(c, name, err)
		}
	}
	s.progress("load balancer %s routes to %s", c.ID, name)
	return nil
}

func lbTimeout(c *plans.LBCutover, name string, err error) error {
	if errors.Is(err, context.DeadlineExceeded) {
		return errors.Join(ErrNeverRoutes, fmt.Errorf("load balancer %s never sent traffic to %s", c.ID, name))
	}
	return err
}

// dnsCutover points a record at the new server and waits until the
// authoritative servers answer it.
type dnsCutover struct {
	c *plans.DNSCutover
	d dns.Provider
}

func (k *dnsCutover) typ() string { return recordType(k.c) }

func (k *dnsCutover) read(ctx context.Context, src *provider.Server, seen *plans.ObservedSwap) ([]string, error) {
	rec, err := k.d.GetRecord(ctx, k.c.Record, k.typ())
	if err != nil {
		return nil, fmt.Errorf("dns: %w", err)
	}
	seen.Record = rec
	if !slices.Contains(rec.Values, src.PublicIP) {
		return []string{fmt.Sprintf("record %s %s is %v and does not point at %s (%s)", rec.Name, rec.Type, rec.Values, src.Name, src.PublicIP)}, nil
	}
	return nil, nil
}

func (k *dnsCutover) stale(planned, now *plans.ObservedSwap) []string {
	if planned.Record != nil && now.Record != nil && !sameSet(planned.Record.Values, now.Record.Values) {
		return []string{fmt.Sprintf("record %s changed: %v when planned, %v now", now.Record.Name, planned.Record.Values, now.Record.Values)}
	}
	return nil
}

func (k *dnsCutover) mutation(src *provider.Server, seen *plans.ObservedSwap) string {
	rec := seen.Record
	others := ""
	if len(rec.Values) > 1 {
		others = fmt.Sprintf("; the other values %v stay", without(rec.Values, src.PublicIP))
	}
	return fmt.Sprintf("replace %s's value %s in %s %s %v with the new server's IP, if the set still holds %v then%s (TTL %ds: %s keeps serving %ds + grace)",
		src.Name, src.PublicIP, rec.Name, k.typ(), rec.Values, rec.Values, others, rec.TTL, src.Name, rec.TTL)
}

// forward replaces the source's value in the set preflight read with the
// new server's, only if the set still holds what preflight read: someone
// else's edit since stops the run before anything changes. Other values of
// the set are kept.
func (k *dnsCutover) forward(ctx context.Context, s *swapRun) error {
	want := dns.Record{Name: k.c.Record, Type: k.typ(), Values: replaced(s.st.OldValues, s.st.SourceIP, s.st.NewIP), Expect: s.st.OldValues}
	if err := s.once(subDNSSet, func() error {
		s.progress("pointing %s %s at %s (%s) in place of %s", k.c.Record, want.Type, s.st.NewName, s.st.NewIP, s.st.SourceIP)
		_, err := k.d.SetRecord(ctx, want)
		if errors.Is(err, dns.ErrChanged) {
			return fmt.Errorf("someone else changed %s since preflight read %v; nothing was changed: %w", k.c.Record, s.st.OldValues, err)
		}
		return err
	}); err != nil {
		return err
	}
	return k.d.WaitServed(ctx, want)
}

// back puts the source's value back in place of the new server's, in the
// set as it is now: values others added since are kept, and only the value
// vmswap put in is taken out.
func (k *dnsCutover) back(ctx context.Context, s *swapRun) error {
	cur, err := k.d.GetRecord(ctx, k.c.Record, k.typ())
	if err != nil {
		return fmt.Errorf("read %s to move it back: %w", k.c.Record, err)
	}
	want := dns.Record{Name: k.c.Record, Type: k.typ(), Values: cur.Values, Expect: cur.Values}
	if slices.Contains(cur.Values, s.st.NewIP) || !slices.Contains(cur.Values, s.st.SourceIP) {
		want.Values = replaced(cur.Values, s.st.NewIP, s.st.SourceIP)
	}
	s.progress("pointing %s back at %s: %v", k.c.Record, s.st.SourceName, want.Values)
	if _, err := k.d.SetRecord(ctx, want); err != nil {
		return fmt.Errorf("record %s still points at the new server: %w", k.c.Record, err)
	}
	if err := k.d.WaitServed(ctx, want); err != nil {
		return fmt.Errorf("record %s is not yet served with the source's value: %w", k.c.Record, err)
	}
	return nil
}

// replaced returns values with old taken out and new put in (once).
func replaced(values []string, old, new string) []string {
	out := without(values, old)
	if new != "" && !slices.Contains(out, new) {
		out = append(out, new)
	}
	slices.Sort(out)
	return out
}

func without(values []string, v string) []string {
	return slices.DeleteFunc(slices.Clone(values), func(x string) bool { return x == v })
}

// hold is the old TTL plus the grace: resolvers may answer from their cache
// that long after the change is served.
func (k *dnsCutover) hold(st *SwapState) time.Duration {
	return time.Duration(st.OldTTL)*time.Second + orDur(k.c.Grace, 30*time.Second)
}

func (k *dnsCutover) entry(context.Context, string) (probe.Config, bool) {
	return probe.Config{}, false
}

// ipCutover points a reserved IP at the new server.
type ipCutover struct {
	c  *plans.IPCutover
	ip provider.IPAssigner
}

func (k *ipCutover) read(ctx context.Context, src *provider.Server, seen *plans.ObservedSwap) ([]string, error) {
	cur, err := k.ip.AssignedTo(ctx, k.c.IP)
	if err != nil {
		return nil, fmt.Errorf("reserved IP: %w", err)
	}
	seen.IPTarget = cur
	if cur != src.ID {
		return []string{fmt.Sprintf("reserved IP %s points at server %q, not the source %s (%s)", k.c.IP, cur, src.Name, src.ID)}, nil
	}
	return nil, nil
}

func (k *ipCutover) stale(planned, now *plans.ObservedSwap) []string {
	if planned.IPTarget != now.IPTarget {
		return []string{fmt.Sprintf("reserved IP %s moved: to %s when planned, to %s now", k.c.IP, planned.IPTarget, now.IPTarget)}
	}
	return nil
}

func (k *ipCutover) mutation(src *provider.Server, _ *plans.ObservedSwap) string {
	return fmt.Sprintf("move reserved IP %s from %s to the new server", k.c.IP, src.Name)
}

func (k *ipCutover) forward(ctx context.Context, s *swapRun) error {
	if err := s.once(subIPAssigned, func() error {
		s.progress("pointing reserved IP %s at %s", k.c.IP, s.st.NewName)
		return k.ip.AssignIP(ctx, k.c.IP, s.st.NewID)
	}); err != nil {
		return err
	}
	got, err := k.ip.AssignedTo(ctx, k.c.IP)
	if err != nil {
		return err
	}
	if got != s.st.NewID {
		return fmt.Errorf("reserved IP %s points at %s after the assignment, not %s", k.c.IP, got, s.st.NewID)
	}
	return nil
}

func (k *ipCutover) back(ctx context.Context, s *swapRun) error {
	to := s.st.OldAssignee
	if to == "" {
		to = s.st.SourceID
	}
	s.progress("pointing reserved IP %s back at %s", k.c.IP, s.st.SourceName)
	if err := k.ip.AssignIP(ctx, k.c.IP, to); err != nil {
		return fmt.Errorf("reserved IP %s does not point back at %s: %w", k.c.IP, s.st.SourceName, err)
	}
	got, err := k.ip.AssignedTo(ctx, k.c.IP)
	if err != nil {
		return err
	}
	if got != to {
		return fmt.Errorf("reserved IP %s points at %q after pointing it back, not %s", k.c.IP, got, to)
	}
	return nil
}

func (k *ipCutover) hold(*SwapState) time.Duration { return orDur(k.c.Drain, 10*time.Second) }

func (k *ipCutover) entry(_ context.Context, port string) (probe.Config, bool) {
	return probe.Config{URL: "http://" + net.JoinHostPort(k.c.IP, port) + "/"}, true
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
