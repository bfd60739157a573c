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
	// holds checks that traffic still goes to the new server, just before
	// the source is retired: someone may have undone the cutover since.
	holds(ctx context.Context, s *swapRun) error
}

// backChecker is a cutover kind that can tell, reading only, why back
// would refuse: a fleet's rollback asks every swap before switching any.
type backChecker interface {
	backProblem(ctx context.Context, s *swapRun) string
}

// ErrCutoverUndone is a retire refused because the cutover no longer holds.
var ErrCutoverUndone = errors.New("the cutover no longer holds")

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
	return s.save()
}

// mark journals a completed cutover sub-step.
func (s *swapRun) mark(sub string) error {
	s.st.Done = append(s.st.Done, sub)
	return s.save()
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

// recentPoolAge is how old a read of the pool may be for the check, just
// before a cutover, that the source is still in it.
const recentPoolAge = 10 * time.Second

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
	var problems []string
	if !pool.Has(src.ID, src.PublicIP) {
		problems = append(problems, fmt.Sprintf("load balancer %s does not route to %s (members: %s): the cutover target must point at the source today", pool.ID, src.Name, strings.Join(pool.Keys(), ", ")))
	}
	if c, ok := k.lb.(loadbalancer.Checker); ok {
		if err := c.Check(ctx, k.c.ID); err != nil {
			problems = append(problems, err.Error())
		}
	}
	return problems, nil
}

func (k *lbCutover) stale(planned, now *plans.ObservedSwap) []string {
	if planned.Pool != nil && now.Pool != nil && !slices.Equal(planned.Pool.Keys(), now.Pool.Keys()) {
		return []string{fmt.Sprintf("load balancer %s members changed: %v when planned, %v now", now.Pool.ID, planned.Pool.Keys(), now.Pool.Keys())}
	}
	return nil
}

func (k *lbCutover) mutation(src *provider.Server, seen *plans.ObservedSwap) string {
	lines := ""
	if p := seen.Pool; p != nil {
		for _, m := range p.Members {
			if m.Is(src.ID, src.PublicIP) && len(m.Lines) > 1 {
				lines = fmt.Sprintf(": every one of its server lines %s", strings.Join(m.Lines, ", "))
			}
		}
	}
	return fmt.Sprintf("add the new server to load balancer %s, then remove %s (%s) from it%s", k.c.ID, src.Name, src.ID, lines)
}

func (k *lbCutover) forward(ctx context.Context, s *swapRun) error {
	st := s.st
	if err := s.waveAborted(); err != nil {
		return err
	}
	if !slices.Contains(st.Intents, subLBAdded) {
		// The pool may have changed since preflight (a gate's pause, a
		// resumed run): a source someone took out is left out, and
		// nothing is changed. A read another swap of the wave began in
		// the last few seconds answers as well as a new one.
		pool, err := loadbalancer.RecentPool(ctx, k.lb, k.c.ID, recentPoolAge)
		if err != nil {
			return err
		}
		if !pool.Has(st.SourceID, st.SourceIP) {
			return errors.Join(ErrStale, fmt.Errorf("load balancer %s no longer routes to %s (members now: %s): someone changed it since the run began; vmswap leaves it as it is", k.c.ID, st.SourceName, strings.Join(pool.Keys(), ", ")))
		}
	}
	if h := k.c.IdentifyHeader; h != "" && !st.has(subLBAdded) && !slices.Contains(st.Intents, subLBAdded) {
		if err := identifiesServers(ctx, s, h); err != nil {
			return err
		}
	}
	if err := s.once(subLBAdded, func() error {
		s.progress("adding %s to load balancer %s", st.NewName, k.c.ID)
		return k.lb.AddMember(ctx, k.c.ID, loadbalancer.Member{ServerID: st.NewID, Address: st.NewIP, Like: &loadbalancer.Member{ServerID: st.SourceID, Address: st.SourceIP}})
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
	// The old server leaves the pool only while the wave still stands.
	if err := s.waveAborted(); err != nil {
		return err
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
	if why := k.neither(pool, st); why != "" {
		return errors.New(why)
	}
	if !pool.Has(st.SourceID, st.SourceIP) {
		s.progress("adding %s back to load balancer %s", st.SourceName, k.c.ID)
		like := &loadbalancer.Member{ServerID: st.NewID, Address: st.NewIP}
		if st.NewIP == "" {
			like = nil
		}
		if err := k.lb.AddMember(ctx, k.c.ID, loadbalancer.Member{ServerID: st.SourceID, Address: st.SourceIP, Like: like}); err != nil {
			return fmt.Errorf("add %s back to load balancer %s: %w", st.SourceName, k.c.ID, err)
		}
	}
	// In the pool is not serving: an earlier attempt may have put back a
	// source that was powered off. The new server leaves only once the
	// pool is seen to route to the source.
	if err := proveRoutes(ctx, s, k.c, st.SourceID, st.SourceIP, st.SourceName); err != nil {
		return fmt.Errorf("load balancer %s does not route to %s yet: %w", k.c.ID, st.SourceName, err)
	}
	if st.NewID == "" && st.NewIP == "" || st.NewGone && !pool.Has(st.NewID, st.NewIP) {
		return nil
	}
	s.progress("removing %s from load balancer %s", dash(st.NewName), k.c.ID)
	if err := k.lb.RemoveMember(ctx, k.c.ID, loadbalancer.Member{ServerID: st.NewID, Address: st.NewIP}); err != nil {
		return fmt.Errorf("new server %s is still in load balancer %s: %w", st.NewName, k.c.ID, err)
	}
	return nil
}

// neither says why the source cannot be put back in the pool: neither
// server is in it and others are, so someone pointed it elsewhere since,
// and putting the source back would undo what they did. (An empty pool
// serves no one: the source goes back.)
func (k *lbCutover) neither(pool *loadbalancer.Pool, st *SwapState) string {
	if !pool.Has(st.SourceID, st.SourceIP) && !pool.Has(st.NewID, st.NewIP) && len(pool.Members) > 0 {
		return fmt.Sprintf("load balancer %s has neither %s nor the new server %s (members: %s): someone changed it, so vmswap leaves it; add %s back yourself if it should serve", k.c.ID, st.SourceName, dash(st.NewName), strings.Join(pool.Keys(), ", "), st.SourceName)
	}
	return ""
}

// backProblem implements backChecker.
func (k *lbCutover) backProblem(ctx context.Context, s *swapRun) string {
	pool, err := k.lb.Pool(ctx, k.c.ID)
	if err != nil {
		return fmt.Sprintf("could not read load balancer %s: %v", k.c.ID, err)
	}
	return k.neither(pool, s.st)
}

func (k *lbCutover) hold(*SwapState) time.Duration { return orDur(k.c.Drain, 10*time.Second) }

func (k *lbCutover) holds(ctx context.Context, s *swapRun) error {
	pool, err := k.lb.Pool(ctx, k.c.ID)
	if err != nil {
		return err
	}
	if !pool.Has(s.st.NewID, s.st.NewIP) {
		return errors.Join(ErrCutoverUndone, fmt.Errorf("load balancer %s no longer has %s (members: %s)", k.c.ID, s.st.NewName, strings.Join(pool.Keys(), ", ")))
	}
	if s.st.has(subLBOldRemoved) && pool.Has(s.st.SourceID, s.st.SourceIP) {
		return errors.Join(ErrCutoverUndone, fmt.Errorf("load balancer %s routes to %s again (members: %s): someone put it back", k.c.ID, s.st.SourceName, strings.Join(pool.Keys(), ", ")))
	}
	return nil
}

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

// identifiesServers checks, before the pool changes, that the header names
// the server: the new server answers it the same twice, and the source
// answers something else. A header that does not (Date, Server: nginx)
// would prove routing to the new server with answers from the old one,
// and the old one would leave the pool before the new one served.
func identifiesServers(ctx context.Context, s *swapRun, header string) error {
	if s.sw.Verify.ConnectAddress != "" {
		return nil // both servers are reached at one address: nothing to compare
	}
	first, err := s.headerOf(ctx, s.st.NewIP, s.st.NewName, header)
	if err != nil {
		return err
	}
	src, err := s.headerOf(ctx, s.st.SourceIP, s.st.SourceName, header)
	if err != nil {
		return err
	}
	again, err := s.headerOf(ctx, s.st.NewIP, s.st.NewName, header)
	if err != nil {
		return err
	}
	switch {
	case first != again:
		return fmt.Errorf("%s answers %s: %q, then %q: a header that changes from one request to the next does not name the server, so it cannot prove the load balancer routes to %s; nothing was moved: set identify_header to one that names the server (X-Served-By: its hostname), or remove it", s.st.NewName, header, first, again, s.st.NewName)
	case first == src:
		return fmt.Errorf("%s and %s both answer %s: %q: the header does not tell them apart, so it cannot prove the load balancer routes to %s; nothing was moved: set identify_header to one that names the server (X-Served-By: its hostname), or remove it", s.st.SourceName, s.st.NewName, header, first, s.st.NewName)
	}
	return nil
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
			if err := s.waveAborted(); err != nil {
				return err
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
	want, err := s.headerOf(ctx, ip, name, c.IdentifyHeader)
	if err != nil {
		return err
	}
	if want == "" && s.rollingBack {
		// Moving traffic back is not held up by the header: the source
		// served before the run, however it answers.
		s.progress("%s answers without a %s header: waiting %s for load balancer %s's health checks instead", name, c.IdentifyHeader, pool.HealthyAfter, c.ID)
		return s.r.clock().Sleep(ctx, pool.HealthyAfter)
	}
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
	// A pool of n members answers from the one asked about about one time
	// in n: a burst of a few times n requests is tried before a wait, so a
	// member of a big pool is found in seconds, not n poll intervals.
	hits, misses, burst := 0, 0, 2*len(pool.Members)+2
	for hits < 3 {
		if _, h, _, err := verify.Do(ctx, through, u.String()); err == nil && h.Get(c.IdentifyHeader) == want {
			hits++
			continue
		}
		if err := s.waveAborted(); err != nil {
			return err
		}
		if misses++; misses%burst != 0 {
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

// dnsCutover points a name at the new server: the record set of the plan's
// type (A by default, or AAAA) and, for a dual-stack name, the set of the
// other type too when it holds the source's address, so IPv4 and IPv6
// clients move together. In each set only the source's own address is
// replaced.
type dnsCutover struct {
	c *plans.DNSCutover
	d dns.Provider
}

func (k *dnsCutover) typ() string { return recordType(k.c) }

// other is the record type of the companion set.
func (k *dnsCutover) other() string {
	if k.typ() == "AAAA" {
		return "A"
	}
	return "AAAA"
}

// addrOf is a server's address in a set of type typ.
func addrOf(typ, v4, v6 string) string {
	if typ == "AAAA" {
		return v6
	}
	return v4
}

// family is one record set a DNS cutover moves: its type, the addresses of
// the source and the new server in it, and its values before the cutover.
type family struct {
	typ      string
	src, new string
	old      []string
	sub      string // the journal's sub-step for the set
}

// families are the sets this swap moves, from what preflight recorded.
func (k *dnsCutover) families(st *SwapState) []family {
	f := []family{{typ: k.typ(), src: addrOf(k.typ(), st.SourceIP, st.SourceIPv6), new: addrOf(k.typ(), st.NewIP, st.NewIPv6), old: st.OldValues, sub: subDNSSet}}
	if st.OtherValues != nil {
		o := k.other()
		f = append(f, family{typ: o, src: addrOf(o, st.SourceIP, st.SourceIPv6), new: addrOf(o, st.NewIP, st.NewIPv6), old: st.OtherValues, sub: subDNSOtherSet})
	}
	return f
}

func (k *dnsCutover) read(ctx context.Context, src *provider.Server, seen *plans.ObservedSwap) ([]string, error) {
	addr := addrOf(k.typ(), src.PublicIP, src.PublicIPv6)
	if addr == "" {
		return []string{fmt.Sprintf("%s has no IPv6 address, so it cannot be in %s AAAA: use type A, or enable IPv6 on it", src.Name, k.c.Record)}, nil
	}
	rec, err := k.d.GetRecord(ctx, k.c.Record, k.typ())
	if err != nil {
		return nil, fmt.Errorf("dns: %w", err)
	}
	seen.Record = rec
	if p := otherAddrOfNet(src, rec); p != "" {
		return []string{p}, nil
	}
	if d := duplicates(rec.Values); len(d) > 0 {
		// Two records with one value (each with its TTL): a set holds a
		// value once, and changing it would lose one of the records.
		return []string{fmt.Sprintf("%s %s holds %s more than once (several records with the same value): keep one record per value, then plan again", rec.Name, rec.Type, strings.Join(d, ", "))}, nil
	}
	if !slices.Contains(rec.Values, addr) {
		return []string{fmt.Sprintf("record %s %s is %v and does not point at %s (%s)", rec.Name, rec.Type, rec.Values, src.Name, addr)}, nil
	}
	if oa := addrOf(k.other(), src.PublicIP, src.PublicIPv6); oa != "" {
		// A dual-stack name: its set of the other type moves too, or those
		// clients would reach a server that is about to be powered off.
		ro, err := k.d.GetRecord(ctx, k.c.Record, k.other())
		switch {
		case errors.Is(err, provider.ErrNotFound):
		case err != nil:
			return nil, fmt.Errorf("dns: %w", err)
		case otherAddrOfNet(src, ro) != "":
			return []string{otherAddrOfNet(src, ro)}, nil
		case slices.Contains(ro.Values, oa):
			seen.RecordOther = ro
		}
	}
	for _, rec := range []*dns.Record{seen.Record, seen.RecordOther} {
		if rec == nil {
			continue
		}
		if p, err := k.notServed(ctx, rec); p != "" || err != nil {
			return []string{p}, err
		}
	}
	return nil, nil
}

// servedCheck bounds how long plan and preflight wait for the nameserver
// vmswap will ask to answer what the provider holds: a change the API
// holds reaches its authoritative servers in seconds.
const servedCheck = 15 * time.Second

// notServed says why the nameserver the cutover will ask does not answer
// rec as the provider holds it: a nameserver that is down, or is not the
// zone's, could never show the change served, and the cutover would wait
// out its timeout with the record already moved.
func (k *dnsCutover) notServed(ctx context.Context, rec *dns.Record) (string, error) {
	wctx, cancel := context.WithTimeout(ctx, servedCheck)
	defer cancel()
	err := k.d.WaitServed(wctx, *rec)
	switch {
	case err == nil:
		return "", nil
	case ctx.Err() != nil:
		return "", ctx.Err()
	}
	return fmt.Sprintf("the nameserver vmswap asks does not answer %s %s as the provider holds it (%v) within %s, so it could never see the change served: %v; set nameserver in the DNS provider block (vmswap plan --nameserver) to the zone's authoritative server, host:port", rec.Name, rec.Type, rec.Values, servedCheck, err), nil
}

// otherAddrOfNet reports an AAAA set that holds an address of the
// source's own IPv6 network other than the one vmswap moves: the new server
// gets a network of its own, so the name would go on pointing at the source
// once it is off.
func otherAddrOfNet(src *provider.Server, rec *dns.Record) string {
	if rec.Type != "AAAA" || src.PublicIPv6Net == "" {
		return ""
	}
	_, n, err := net.ParseCIDR(src.PublicIPv6Net)
	if err != nil {
		return ""
	}
	for _, v := range rec.Values {
		if ip := net.ParseIP(v); ip != nil && n.Contains(ip) && ip.String() != src.PublicIPv6 {
			return fmt.Sprintf("record %s AAAA holds %s, an address of %s's IPv6 network %s other than %s, the one vmswap moves: the new server gets a network of its own, so the name would keep pointing at %s once it is off; point the record at %s, or move it yourself", rec.Name, v, src.Name, src.PublicIPv6Net, src.PublicIPv6, src.Name, src.PublicIPv6)
		}
	}
	return ""
}

func (k *dnsCutover) stale(planned, now *plans.ObservedSwap) []string {
	var out []string
	for _, p := range []struct{ was, is *dns.Record }{{planned.Record, now.Record}, {planned.RecordOther, now.RecordOther}} {
		switch {
		case p.was != nil && p.is != nil && !sameSet(p.was.Values, p.is.Values):
			out = append(out, fmt.Sprintf("record %s %s changed: %v when planned, %v now", p.is.Name, p.is.Type, p.was.Values, p.is.Values))
		case p.was == nil && p.is != nil:
			out = append(out, fmt.Sprintf("record %s %s points at the source now (%v) and did not when the plan was written", p.is.Name, p.is.Type, p.is.Values))
		case p.was != nil && p.is == nil:
			out = append(out, fmt.Sprintf("record %s %s pointed at the source when the plan was written (%v) and does not now", p.was.Name, p.was.Type, p.was.Values))
		}
	}
	return out
}

func (k *dnsCutover) mutation(src *provider.Server, seen *plans.ObservedSwap) string {
	var parts []string
	for _, rec := range []*dns.Record{seen.Record, seen.RecordOther} {
		if rec == nil {
			continue
		}
		addr := addrOf(rec.Type, src.PublicIP, src.PublicIPv6)
		others := ""
		if len(rec.Values) > 1 {
			others = fmt.Sprintf("; the other values %v stay", without(rec.Values, addr))
		}
		parts = append(parts, fmt.Sprintf("replace %s's value %s in %s %s %v with the new server's address, if the set still holds %v then%s (TTL %ds)",
			src.Name, addr, rec.Name, rec.Type, rec.Values, rec.Values, others, rec.TTL))
	}
	return strings.Join(parts, "; and ") + fmt.Sprintf("; %s keeps serving the longest TTL + grace", src.Name)
}

// forward replaces the source's address in each set with the new server's,
// only if the set still holds what preflight read: someone else's edit
// since stops the run before anything changes. Other values are kept.
func (k *dnsCutover) forward(ctx context.Context, s *swapRun) error {
	// Every set is checked before any is changed: a dual-stack name someone
	// edited is refused whole, not after its first family moved. A single
	// set to change needs no read of its own: SetRecord compares it with
	// what preflight read just before it edits.
	var toSet []family
	for _, f := range k.families(s.st) {
		if !s.st.has(f.sub) && !slices.Contains(s.st.Intents, f.sub) {
			toSet = append(toSet, f)
		}
	}
	for _, f := range toSet {
		if len(toSet) == 1 {
			break
		}
		cur, err := k.d.GetRecord(ctx, k.c.Record, f.typ)
		if err != nil {
			return err
		}
		if !dns.Unchanged(cur.Values, f.old) {
			return errors.Join(ErrStale, fmt.Errorf("someone else changed %s %s since preflight read %v (it holds %v); nothing was changed", k.c.Record, f.typ, f.old, cur.Values))
		}
	}
	var wants []dns.Record
	for _, f := range k.families(s.st) {
		if f.new == "" {
			return fmt.Errorf("%s has no address for %s %s, where the source has one: nothing was changed", s.st.NewName, k.c.Record, f.typ)
		}
		want := dns.Record{Name: k.c.Record, Type: f.typ, Values: replaced(f.old, f.src, f.new), Expect: f.old}
		// A resumed run's intent: the interrupted call may have changed
		// the set before someone else changed it again.
		resumed := slices.Contains(s.st.Intents, f.sub)
		if s.st.has(f.sub) {
			// Set by an earlier process: the set may have been changed
			// since, and waiting to see this run's values served would
			// wait out the timeout.
			cur, err := k.d.GetRecord(ctx, k.c.Record, f.typ)
			if err != nil {
				return err
			}
			if !dns.Unchanged(cur.Values, want.Values) {
				return fmt.Errorf("%s %s holds %v, not %v as this run set it before it was stopped: someone changed it since", k.c.Record, f.typ, cur.Values, want.Values)
			}
		}
		if err := s.once(f.sub, func() error {
			s.progress("pointing %s %s at %s (%s) in place of %s", k.c.Record, f.typ, s.st.NewName, f.new, f.src)
			_, err := k.d.SetRecord(ctx, want)
			return err
		}); err != nil {
			if errors.Is(err, dns.ErrChanged) && !resumed {
				// The compare-and-swap changed nothing: this set needs no
				// undo. After a resume the intent stays, and the rollback
				// reads the set to see whose value it holds.
				s.st.Intents = without(s.st.Intents, f.sub)
				if serr := s.save(); serr != nil {
					return serr
				}
				err = fmt.Errorf("someone else changed %s %s since preflight read %v; nothing was changed: %w", k.c.Record, f.typ, f.old, err)
				if len(wants) == 0 && len(toSet) == len(k.families(s.st)) {
					// No set of this name was changed by this run: as
					// if the check above had found it.
					err = errors.Join(ErrStale, err)
				}
				return err
			}
			return err
		}
		wants = append(wants, want)
	}
	for _, want := range wants {
		if err := k.waitServed(ctx, s, want); err != nil {
			return err
		}
	}
	return nil
}

// waitServed waits, at most the swap's ready timeout, until the
// authoritative servers answer want.
func (k *dnsCutover) waitServed(ctx context.Context, s *swapRun, want dns.Record) error {
	wctx, cancel := context.WithTimeout(ctx, s.timeout())
	defer cancel()
	err := k.d.WaitServed(wctx, want)
	if err != nil && ctx.Err() == nil && wctx.Err() != nil {
		return fmt.Errorf("%s %s is not served as %v after %s (raise ready_timeout in the plan if the nameserver is slow): %w", want.Name, want.Type, want.Values, s.timeout(), err)
	}
	return err
}

// back puts the source's address back in place of the new server's in each
// set as it is now: values others added since are kept, and only the value
// vmswap put in is taken out.
func (k *dnsCutover) back(ctx context.Context, s *swapRun) error {
	for _, f := range k.families(s.st) {
		if !slices.Contains(s.st.Intents, f.sub) && !s.st.has(f.sub) {
			continue // never changed by this run
		}
		cur, err := k.d.GetRecord(ctx, k.c.Record, f.typ)
		if err != nil {
			return fmt.Errorf("read %s %s to move it back: %w", k.c.Record, f.typ, err)
		}
		want := dns.Record{Name: k.c.Record, Type: f.typ, Values: cur.Values, Expect: cur.Values}
		switch {
		case f.new != "" && slices.Contains(cur.Values, f.new):
			want.Values = replaced(cur.Values, f.new, f.src)
		case !slices.Contains(cur.Values, f.src):
			return errors.New(k.neither(s.st, f.typ, f.src, cur.Values))
		}
		s.progress("pointing %s %s back at %s: %v", k.c.Record, f.typ, s.st.SourceName, want.Values)
		if _, err := k.d.SetRecord(ctx, want); err != nil {
			return fmt.Errorf("record %s %s still points at the new server: %w", k.c.Record, f.typ, err)
		}
		if err := k.waitServed(ctx, s, want); err != nil {
			return fmt.Errorf("record %s %s is not yet served with the source's value: %w", k.c.Record, f.typ, err)
		}
	}
	return nil
}

// neither says why a record holding neither server's address is left:
// someone rewrote the set since, and mixing the source into their set
// would undo their change.
func (k *dnsCutover) neither(st *SwapState, typ, src string, values []string) string {
	return fmt.Sprintf("%s %s holds %v, neither %s's address %s nor the new server's: someone changed it, so vmswap leaves it; set it yourself if %s should serve", k.c.Record, typ, values, st.SourceName, src, st.SourceName)
}

// backProblem implements backChecker.
func (k *dnsCutover) backProblem(ctx context.Context, s *swapRun) string {
	for _, f := range k.families(s.st) {
		if !slices.Contains(s.st.Intents, f.sub) && !s.st.has(f.sub) {
			continue
		}
		cur, err := k.d.GetRecord(ctx, k.c.Record, f.typ)
		if err != nil {
			return fmt.Sprintf("could not read %s %s: %v", k.c.Record, f.typ, err)
		}
		if !(f.new != "" && slices.Contains(cur.Values, f.new)) && !slices.Contains(cur.Values, f.src) {
			return k.neither(s.st, f.typ, f.src, cur.Values)
		}
	}
	return ""
}

// duplicates returns the values found more than once.
func duplicates(values []string) []string {
	seen, out := map[string]int{}, []string(nil)
	for _, v := range values {
		if seen[v]++; seen[v] == 2 {
			out = append(out, v)
		}
	}
	return out
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

// hold is the longest old TTL plus the grace: resolvers may answer from
// their cache that long after the change is served.
func (k *dnsCutover) hold(st *SwapState) time.Duration {
	return time.Duration(max(st.OldTTL, st.OtherTTL))*time.Second + orDur(k.c.Grace, 30*time.Second)
}

func (k *dnsCutover) entry(context.Context, string) (probe.Config, bool) {
	return probe.Config{}, false
}

func (k *dnsCutover) holds(ctx context.Context, s *swapRun) error {
	for _, f := range k.families(s.st) {
		cur, err := k.d.GetRecord(ctx, k.c.Record, f.typ)
		if err != nil {
			return err
		}
		if !slices.Contains(cur.Values, f.new) {
			return errors.Join(ErrCutoverUndone, fmt.Errorf("%s %s is %v now: it no longer holds %s's address %s", k.c.Record, f.typ, cur.Values, s.st.NewName, f.new))
		}
		if f.src != f.new && slices.Contains(cur.Values, f.src) {
			return errors.Join(ErrCutoverUndone, fmt.Errorf("%s %s is %v now: it holds %s's address %s again", k.c.Record, f.typ, cur.Values, s.st.SourceName, f.src))
		}
	}
	return nil
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
	if !slices.Contains(s.st.Intents, subIPAssigned) {
		// The IP may have moved since preflight (a gate's pause, a resumed
		// run): one someone pointed elsewhere is left there.
		cur, err := k.ip.AssignedTo(ctx, k.c.IP)
		if err != nil {
			return err
		}
		if cur != s.st.SourceID && cur != s.st.NewID {
			return errors.Join(ErrStale, fmt.Errorf("reserved IP %s points at server %q now, not the source %s (%s): someone moved it since the run began; vmswap leaves it where it is", k.c.IP, cur, s.st.SourceName, s.st.SourceID))
		}
	}
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

// backTo is the server the IP goes back to: the one it pointed at before
// the run (the source, unless the plan observed another).
func backTo(st *SwapState) string {
	if st.OldAssignee != "" {
		return st.OldAssignee
	}
	return st.SourceID
}

func (k *ipCutover) back(ctx context.Context, s *swapRun) error {
	to := backTo(s.st)
	cur, err := k.ip.AssignedTo(ctx, k.c.IP)
	if err != nil {
		return err
	}
	if cur == to {
		return nil
	}
	if why := k.elsewhere(s.st, cur, to); why != "" {
		return errors.New(why)
	}
	switch {
	case cur == "" && s.st.NewID != "":
		// Unassigned after this run assigned it: the new server was
		// deleted (which unassigns it) or the IP was let go. It serves no
		// one, so pointing it back breaks nothing and brings the site back.
		s.progress("reserved IP %s is assigned to no server (the new server gone?); pointing it back at %s", k.c.IP, s.st.SourceName)
	default:
		s.progress("pointing reserved IP %s back at %s", k.c.IP, s.st.SourceName)
	}
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

// elsewhere says why an IP assigned to a third server is left: someone
// pointed it elsewhere since, and taking it back from them would break
// what they moved it for. Unassigned after this run assigned it (the new
// server deleted), it serves no one and goes back.
func (k *ipCutover) elsewhere(st *SwapState, cur, to string) string {
	if cur == to || cur == "" && st.NewID != "" || cur == st.NewID && st.NewID != "" {
		return ""
	}
	return fmt.Sprintf("reserved IP %s points at server %q, neither %s nor this run's new server: someone moved it, so vmswap leaves it; point it at %s (%s) yourself if that is what you want", k.c.IP, cur, st.SourceName, st.SourceName, to)
}

// backProblem implements backChecker.
func (k *ipCutover) backProblem(ctx context.Context, s *swapRun) string {
	to := backTo(s.st)
	cur, err := k.ip.AssignedTo(ctx, k.c.IP)
	if err != nil {
		return fmt.Sprintf("could not read reserved IP %s: %v", k.c.IP, err)
	}
	return k.elsewhere(s.st, cur, to)
}

func (k *ipCutover) hold(*SwapState) time.Duration { return orDur(k.c.Drain, 10*time.Second) }

func (k *ipCutover) holds(ctx context.Context, s *swapRun) error {
	got, err := k.ip.AssignedTo(ctx, k.c.IP)
	if err != nil {
		return err
	}
	if got != s.st.NewID {
		return errors.Join(ErrCutoverUndone, fmt.Errorf("reserved IP %s points at %q now, not %s", k.c.IP, got, s.st.NewName))
	}
	return nil
}

func (k *ipCutover) entry(_ context.Context, port string) (probe.Config, bool) {
	return probe.Config{URL: "http://" + net.JoinHostPort(k.c.IP, port) + "/"}, true
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
