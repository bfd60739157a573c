package plans

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/go-multierror"

	"github.com/vmswap/vmswap/loadbalancer"
	"github.com/vmswap/vmswap/provider"
	"github.com/vmswap/vmswap/verify"
	"github.com/vmswap/vmswap/verify/probe"
)

// Steps of a swap, in order.
var Steps = []string{"preflight", "snapshot", "launch", "ready", "verify", "cutover", "observe", "retire"}

// Sentinel errors a step's failure carries, so that callers and rollback can
// decide with errors.Is.
var (
	ErrPreflight   = errors.New("preflight failed")
	ErrStale       = errors.New("plan is stale")
	ErrVerify      = errors.New("verification failed")
	ErrNeverRoutes = errors.New("load balancer never routed to the new server")
	ErrBudget      = errors.New("error budget breached")
	ErrInterrupted = errors.New("interrupted")
)

// Exit codes: each means one thing.
const (
	ExitOK         = 0
	ExitRolledBack = 1 // failed and rolled back: the source serves
	ExitBadInput   = 2 // bad input or stale plan: nothing was changed
	ExitAttention  = 3 // failed and needs attention: see the message
)

// Event is one line of progress or outcome, for people (text) or machines
// (JSON lines).
type Event struct {
	Event   string    `json:"event"` // step, progress, check, warning, swap
	Time    time.Time `json:"time"`
	Swap    string    `json:"swap,omitempty"`
	Step    string    `json:"step,omitempty"`
	Status  string    `json:"status,omitempty"`
	Message string    `json:"message,omitempty"`
	Elapsed float64   `json:"elapsed_s,omitempty"`
}

// Clock is the runner's time, injected so tests can run holds instantly.
type Clock interface {
	Now() time.Time
	// Sleep waits d or until ctx ends.
	Sleep(ctx context.Context, d time.Duration) error
}

type realClock struct{}

func (realClock) Now() time.Time                                   { return time.Now() }
func (realClock) Sleep(ctx context.Context, d time.Duration) error { return provider.Sleep(ctx, d) }

// RealClock is the wall clock.
var RealClock Clock = realClock{}

// Runner applies a plan.
type Runner struct {
	Doc     *Document
	Drivers map[string]*Drivers
	Journal *Journal
	// Emit receives events. Nil: discarded.
	Emit func(Event)
	// Clock. Nil: RealClock.
	Clock Clock
	// Poll is how often the runner itself polls (TCP ready, traffic through
	// a load balancer, the error budget). Zero: 500ms.
	Poll time.Duration
	// AfterSave, if set, is called after every journal write with its
	// sequence number (for crash tests).
	AfterSave func(n int)
	// PlanFile is the plan's path as the user typed it, for messages.
	PlanFile string
}

// Result is the outcome of a run.
type Result struct {
	Status   State        `json:"status"`
	ExitCode int          `json:"-"`
	Swaps    []SwapResult `json:"swaps"`
	// Next says what to do, when there is something to do.
	Next string `json:"next,omitempty"`
}

// SwapResult is one swap's outcome, as in the JSON summary.
type SwapResult struct {
	Name      string   `json:"name"`
	Source    string   `json:"source"`
	New       string   `json:"new"`
	Cutover   string   `json:"cutover"`
	Status    State    `json:"status"`
	Requests  int      `json:"requests"`
	Failed    int      `json:"failed"`
	P50ms     float64  `json:"p50_ms"`
	P99ms     float64  `json:"p99_ms"`
	DurationS float64  `json:"duration_s"`
	Error     string   `json:"error,omitempty"`
	Left      []string `json:"left,omitempty"`
}

// NewJournal starts the journal of a new run of doc.
func NewJournal(path string, doc *Document, runID string) *Journal {
	j := &Journal{Version: JournalVersion, Plan: doc.File, PlanHash: doc.Hash(), PlanID: doc.PlanID(), PlanText: string(doc.Raw), RunID: runID,
		Started: time.Now().UTC(), Status: StatusRunning, path: path}
	for i := range doc.Plan.Swaps {
		j.Swaps = append(j.Swaps, &SwapState{Index: i, Status: StatusPending, Steps: map[string]*StepLog{}})
	}
	return j
}

// swapRun is the working state of one swap in this process.
type swapRun struct {
	r     *Runner
	i     int
	sw    *Swap
	st    *SwapState
	comp  provider.Compute
	kind  cutoverKind
	src   *provider.Server
	size  *provider.Size
	probe *probe.Probe
	// pool is the load balancer's pool as preflight read it.
	pool *loadbalancer.Pool
	// leftAt is when, in this process, the source stopped getting new
	// traffic; zero after a restart, so its hold runs again in full.
	leftAt        time.Time
	warnedNoProbe bool
}

func (r *Runner) swapRun(i int) *swapRun {
	sw := &r.Doc.Plan.Swaps[i]
	return &swapRun{r: r, i: i, sw: sw, st: r.Journal.Swaps[i], comp: r.Drivers[sw.Source.Provider].Compute, kind: kindOf(sw.Cutover, r.Drivers)}
}

func (r *Runner) clock() Clock {
	if r.Clock == nil {
		return RealClock
	}
	return r.Clock
}

func (r *Runner) now() time.Time { return r.clock().Now().UTC() }

func (r *Runner) poll() time.Duration {
	if r.Poll == 0 {
		return 500 * time.Millisecond
	}
	return r.Poll
}

func (r *Runner) emit(e Event) {
	if r.Emit != nil {
		e.Time = r.now()
		r.Emit(e)
	}
}

func (r *Runner) save() error {
	r.Journal.clock = r.clock().Now
	if err := r.Journal.Save(); err != nil {
		return err
	}
	if r.AfterSave != nil {
		r.AfterSave(r.Journal.saves)
	}
	return nil
}

func (s *swapRun) name() string {
	if s.sw.Name != "" {
		return s.sw.Name
	}
	return s.sw.Source.Server
}

func (s *swapRun) progress(format string, args ...any) {
	s.r.emit(Event{Event: "progress", Swap: s.name(), Message: fmt.Sprintf(format, args...)})
}

// Run applies the plan, resuming from the journal. It never returns an
// error: the Result says what happened and what to do.
func (r *Runner) Run(ctx context.Context) *Result {
	j := r.Journal
	res := &Result{Status: StatusSucceeded}
	j.Status = StatusRunning
	if err := r.save(); err != nil {
		return &Result{Status: StatusNeedsAttention, ExitCode: ExitAttention, Next: err.Error()}
	}
	for i := range r.Doc.Plan.Swaps {
		sr := r.swapRun(i)
		if sr.st.Status != StatusSucceeded {
			code, next := r.runSwap(ctx, sr)
			if code != ExitOK {
				// Every outcome has its swap event, not only success.
				r.emit(Event{Event: "swap", Swap: sr.name(), Status: string(sr.st.Status), Message: next})
				res.ExitCode, res.Next = code, next
				res.Status = map[int]State{ExitRolledBack: StatusRolledBack, ExitBadInput: StatusRefused, ExitAttention: StatusNeedsAttention}[code]
				if sr.st.Status == StatusInterrupted {
					res.Status = StatusInterrupted
				}
				res.Swaps = append(res.Swaps, r.swapResult(sr))
				break
			}
		}
		res.Swaps = append(res.Swaps, r.swapResult(sr))
	}
	j.Status = res.Status
	if err := r.save(); err != nil && res.ExitCode == ExitOK {
		res.ExitCode, res.Next = ExitAttention, err.Error()
	}
	return res
}

func (r *Runner) swapResult(sr *swapRun) SwapResult {
	st := sr.st
	out := SwapResult{Name: sr.name(), Source: st.SourceName, New: st.NewName, Cutover: sr.sw.Cutover.Kind(), Status: st.Status, Error: st.Error, Left: st.Left}
	if out.Source == "" {
		out.Source = sr.sw.Source.Server
	}
	if p := st.Probe; p != nil {
		out.Requests, out.Failed = p.Requests, p.Failed
		out.P50ms = float64(p.P50.Microseconds()) / 1000
		out.P99ms = float64(p.P99.Microseconds()) / 1000
	}
	if l := st.Steps["preflight"]; l != nil {
		end := r.now()
		if rl := st.Steps["retire"]; rl != nil && !rl.End.IsZero() {
			end = rl.End
		}
		out.DurationS = float64(end.Sub(l.Start).Milliseconds()) / 1000
	}
	return out
}

type step struct {
	name string
	fn   func(context.Context, *swapRun) error
}

// runSwap runs the steps not yet done and returns an exit code and what to
// do next.
func (r *Runner) runSwap(ctx context.Context, sr *swapRun) (int, string) {
	st := sr.st
	st.Status, st.Error, st.Left = StatusRunning, "", nil
	steps := []step{{"preflight", preflight}, {"snapshot", snapshot}, {"launch", launch}, {"ready", ready},
		{"verify", verifyStep}, {"cutover", cutover}, {"observe", observe}, {"retire", retire}}
	for _, s := range steps {
		if st.has(s.name) {
			continue
		}
		if ctx.Err() != nil {
			return r.interrupted(sr, s.name)
		}
		st.Steps[s.name] = &StepLog{Start: r.now(), Status: "running"}
		r.emit(Event{Event: "step", Swap: sr.name(), Step: s.name, Status: "started"})
		if err := r.save(); err != nil {
			return ExitAttention, err.Error()
		}
		err := s.fn(ctx, sr)
		if err == nil {
			st.Steps[s.name].End, st.Steps[s.name].Status = r.now(), "ok"
			st.Done = append(st.Done, s.name)
			r.emit(Event{Event: "step", Swap: sr.name(), Step: s.name, Status: "ok", Elapsed: st.Steps[s.name].End.Sub(st.Steps[s.name].Start).Seconds()})
			if err := r.save(); err != nil {
				return ExitAttention, err.Error()
			}
			continue
		}
		if ctx.Err() != nil {
			return r.interrupted(sr, s.name)
		}
		st.Steps[s.name].End, st.Steps[s.name].Status = r.now(), "failed"
		st.Error = fmt.Sprintf("%s: %v", s.name, err)
		r.emit(Event{Event: "step", Swap: sr.name(), Step: s.name, Status: "failed", Message: err.Error()})
		switch {
		case s.name == "preflight":
			r.release(context.WithoutCancel(ctx), sr)
			st.Status = StatusRefused
			if serr := r.save(); serr != nil {
				return ExitAttention, serr.Error()
			}
			if errors.Is(err, ErrClaimed) {
				return ExitBadInput, "nothing was changed: " + trimSentinel(err)
			}
			next := "nothing was changed; fix the above and run apply again"
			if errors.Is(err, ErrStale) {
				next = fmt.Sprintf("nothing was changed; write a new plan: vmswap plan --refresh %s", r.planFile())
			}
			return ExitBadInput, next
		case s.name == "retire" && (st.has("old_retired") || !errors.Is(err, ErrBudget)):
			// Traffic is on the new server and it has been observed healthy:
			// retiring is cleanup, not a reason to move traffic back.
			stopProbe(sr)
			st.Status = StatusNeedsAttention
			st.Left = append(st.Left, fmt.Sprintf("retire of %s did not finish", st.SourceName))
			if serr := r.save(); serr != nil {
				return ExitAttention, serr.Error()
			}
			return ExitAttention, fmt.Sprintf("the new server %s serves; retiring the old one failed: run `vmswap apply %s` again to finish", st.NewName, r.planFile())
		}
		return r.rollback(sr, err)
	}
	stopProbe(sr)
	if failed, total := exposed(st.Probe); failed > 0 {
		// The budget covers the whole time users are exposed, retire
		// included: failures after observe are never a plain success.
		var budget Budget
		if sr.sw.Probe != nil {
			budget = sr.sw.Probe.ErrorBudget
		}
		msg := fmt.Sprintf("%d of %d probe requests failed between the cutover and the end of retire (budget %s)", failed, total, budget)
		if budget.Breached(int64(failed), int64(total)) {
			st.Status, st.Error = StatusNeedsAttention, msg
			if err := r.save(); err != nil {
				return ExitAttention, err.Error()
			}
			return ExitAttention, fmt.Sprintf("%s replaced %s, but %s: check %s now (the probe's errors are in the journal); run `vmswap apply %s` to mark the run done, or `vmswap rollback %s` to switch back",
				st.NewName, st.SourceName, msg, st.NewName, r.planFile(), r.planFile())
		}
		r.emit(Event{Event: "warning", Swap: sr.name(), Message: msg + ": within the budget"})
	}
	r.release(context.WithoutCancel(ctx), sr)
	st.Status = StatusSucceeded
	r.emit(Event{Event: "swap", Swap: sr.name(), Status: string(StatusSucceeded),
		Message: fmt.Sprintf("%s replaced by %s (%s)", st.SourceName, st.NewName, sr.sw.Target.Size)})
	if err := r.save(); err != nil {
		return ExitAttention, err.Error()
	}
	return ExitOK, ""
}

// exposed counts the probe's requests from the first traffic change on:
// every window but the baseline.
func exposed(p *probe.Summary) (failed, total int) {
	if p == nil {
		return 0, 0
	}
	for _, w := range p.Windows {
		if w.Name != "baseline" {
			failed, total = failed+w.Failed, total+w.Requests
		}
	}
	return failed, total
}

func (r *Runner) planFile() string {
	if r.PlanFile != "" {
		return r.PlanFile
	}
	return r.Doc.File
}

func (r *Runner) interrupted(sr *swapRun, stepName string) (int, string) {
	stopProbe(sr)
	sr.st.Status = StatusInterrupted
	if l := sr.st.Steps[stepName]; l != nil && l.Status == "running" {
		l.Status = "interrupted"
	}
	r.Journal.Status = StatusInterrupted
	next := fmt.Sprintf("interrupted during %s; nothing was rolled back. Continue with: vmswap apply %s (or undo with: vmswap rollback %s)", stepName, r.planFile(), r.planFile())
	if err := r.save(); err != nil {
		next = fmt.Sprintf("interrupted during %s, and the journal could not be written (%v): check what the run created before running vmswap again", stepName, err)
	}
	r.emit(Event{Event: "warning", Swap: sr.name(), Step: stepName, Message: next})
	return ExitAttention, next
}

func stopProbe(sr *swapRun) {
	if sr.probe != nil {
		s := sr.probe.Stop()
		sr.st.Probe = &s
		sr.probe = nil
	}
}

// source returns the source server, reading it once per process.
func (s *swapRun) source(ctx context.Context) (*provider.Server, error) {
	if s.src != nil {
		return s.src, nil
	}
	ref := s.st.SourceID
	if ref == "" {
		ref = s.sw.Source.Server
	}
	src, err := s.comp.GetServer(ctx, ref)
	if err != nil {
		return nil, err
	}
	s.src = src
	return src, nil
}

func (s *swapRun) timeout() time.Duration {
	if s.sw.ReadyTimeout > 0 {
		return s.sw.ReadyTimeout.D()
	}
	return 15 * time.Minute
}

// servicePort is the port the new server serves on, from the checks.
func (s *swapRun) serviceURL() *url.URL {
	for _, h := range s.sw.Verify.HTTP {
		if u, err := url.Parse(h.URL); err == nil {
			return u
		}
	}
	if s.sw.Probe != nil {
		if u, err := url.Parse(s.sw.Probe.URL); err == nil {
			return u
		}
	}
	return &url.URL{Scheme: "http", Host: "localhost", Path: "/"}
}

func portOf(u *url.URL) string {
	if p := u.Port(); p != "" {
		return p
	}
	if u.Scheme == "https" {
		return "443"
	}
	return "80"
}

// addrOf is where network checks reach a server: the override, or its IP on
// the service port.
func (s *swapRun) addrOf(ip string) string {
	if s.sw.Verify.ConnectAddress != "" {
		return s.sw.Verify.ConnectAddress
	}
	return net.JoinHostPort(ip, portOf(s.serviceURL()))
}

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
	var obs *ObservedSwap
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
	now := &ObservedSwap{Source: *src}
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
	s.st.SourceID, s.st.SourceName, s.st.SourceIP = src.ID, src.Name, src.PublicIP
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

func recordType(c *DNSCutover) string {
	if c.Type == "" {
		return "A"
	}
	return strings.ToUpper(c.Type)
}

func snapshot(ctx context.Context, s *swapRun) error {
	src, err := s.source(ctx)
	if err != nil {
		return err
	}
	if s.st.ImageName == "" {
		s.st.ImageName = fmt.Sprintf("vmswap-%s-%s-%s", src.Name, s.r.Journal.Started.Format("20060102-150405"), s.r.Journal.PlanID)
		if err := s.r.save(); err != nil {
			return err
		}
	}
	if s.sw.Quiesce && s.st.SnapshotOp == "" {
		if err := quiesce(ctx, s, src); err != nil {
			return err
		}
	}
	s.progress("snapshotting %s as %s (live: it keeps serving, and the image is crash-consistent)", src.Name, s.st.ImageName)
	wctx, cancel := context.WithTimeout(ctx, s.timeout())
	defer cancel()
	var saveErr error
	img, err := s.comp.Snapshot(wctx, src, s.st.ImageName, func(op string) {
		if s.st.SnapshotOp != op {
			s.st.SnapshotOp = op
			if err := s.r.save(); err != nil && saveErr == nil {
				saveErr = err
			}
		}
	})
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
	return s.r.save()
}

// quiesce flushes the source's page cache to disk (sync over SSH) just
// before its live image is taken.
func quiesce(ctx context.Context, s *swapRun, src *provider.Server) error {
	k := s.sw.Verify.SSH
	host := src.PublicIP
	if k.Address != "" {
		host = k.Address
	}
	c, err := verify.DialSSH(ctx, host, s.sshConfig(k))
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

func launch(ctx context.Context, s *swapRun) error {
	src, err := s.source(ctx)
	if err != nil {
		return err
	}
	if s.st.Token == "" {
		s.st.Token = fmt.Sprintf("%s-%d", s.r.Journal.RunID, s.i)
		s.st.NewName = fmt.Sprintf("%s-%s", src.Name, s.r.Journal.RunID[:6])
		if err := s.r.save(); err != nil {
			return err
		}
	}
	spec := provider.LaunchSpec{Source: src, Image: &provider.Image{ID: s.st.ImageID, Name: s.st.ImageName},
		Size: s.sw.Target.Size, Name: s.st.NewName, Token: s.st.Token, Tags: []string{"vmswap:" + s.r.Journal.PlanID}}
	if c := s.sw.Cutover.LoadBalancer; c != nil {
		// A pool that selects its members by tag must not get the new
		// server before it is verified: the tag is its cutover.
		if s.pool == nil {
			if s.pool, err = s.r.Drivers[c.Provider].LB.Pool(ctx, c.ID); err != nil {
				return err
			}
		}
		if t := s.pool.SelectTag; t != "" {
			spec.WithoutTags = []string{t}
			s.progress("load balancer %s selects its members by tag %q: %s is launched without it, and tagged at cutover", c.ID, t, s.st.NewName)
		}
	}
	s.progress("launching %s (%s) from %s", s.st.NewName, s.sw.Target.Size, s.st.ImageName)
	srv, err := s.comp.Launch(ctx, spec)
	if err != nil {
		return err
	}
	s.st.NewID = srv.ID
	if err := s.r.save(); err != nil {
		return err
	}
	if s.st.Claim != "" {
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
	s.st.NewIP = srv.PublicIP
	if err := s.r.save(); err != nil {
		return err
	}
	addr := s.addrOf(srv.PublicIP)
	start := time.Now()
	for {
		c, err := (&net.Dialer{Timeout: 2 * time.Second}).DialContext(wctx, "tcp", addr)
		if err == nil {
			c.Close()
			return nil
		}
		if wctx.Err() != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("%s is running but %s refuses connections after %s", s.st.NewName, addr, s.timeout())
		}
		s.progress("waiting for %s to accept connections (%s)", addr, time.Since(start).Round(time.Second))
		if err := s.r.clock().Sleep(ctx, s.r.poll()); err != nil {
			return err
		}
	}
}

func verifyStep(ctx context.Context, s *swapRun) error {
	v := s.sw.Verify
	var errs *multierror.Error
	s.st.Checks = nil
	record := func(name string, problems []error, ok string) {
		if len(problems) == 0 {
			s.st.Checks = append(s.st.Checks, CheckResult{Name: name, OK: true, Detail: ok})
			s.r.emit(Event{Event: "check", Swap: s.name(), Status: "ok", Message: name + ": " + ok})
			return
		}
		for _, p := range problems {
			s.st.Checks = append(s.st.Checks, CheckResult{Name: name, OK: false, Detail: p.Error()})
			s.r.emit(Event{Event: "check", Swap: s.name(), Status: "failed", Message: name + ": " + p.Error()})
			errs = multierror.Append(errs, fmt.Errorf("%s: %w", name, p))
		}
	}
	if k := v.SSH; k != nil {
		host := s.st.NewIP
		if k.Address != "" {
			host = k.Address
		}
		facts, err := sshFacts(ctx, host, s.sshConfig(k))
		if err != nil {
			record("ssh", []error{err}, "")
		} else {
			check := func(name string, t *verify.Threshold, got float64, show string) {
				if t == nil {
					return
				}
				if t.Holds(got) {
					record(name, nil, fmt.Sprintf("%s (want %s)", show, t.Text))
				} else {
					record(name, []error{fmt.Errorf("%s, want %s", show, t.Text)}, "")
				}
			}
			check("memory", v.Memory, facts.MemoryBytes, verify.HumanBytes(facts.MemoryBytes))
			check("disk", v.Disk, facts.DiskBytes, verify.HumanBytes(facts.DiskBytes))
			check("cpus", v.CPUs, facts.CPUs, strconv.FormatFloat(facts.CPUs, 'f', -1, 64))
		}
	}
	newAddr := s.addrOf(s.st.NewIP)
	if len(v.HTTP) > 0 || len(v.Compare) > 0 {
		client, err := verify.Pinned(newAddr, v.CAFile, 10*time.Second)
		if err != nil {
			return err
		}
		for _, h := range v.HTTP {
			record("http "+h.URL, h.Check(ctx, client), fmt.Sprintf("answered as expected via %s", newAddr))
		}
		if len(v.Compare) > 0 {
			base := v.CompareBase
			if base == "" {
				base = s.serviceURL().String()
			}
			oldClient, err := verify.Pinned(s.addrOfSource(), v.CAFile, 10*time.Second)
			if err != nil {
				return err
			}
			record("compare", verify.Compare(ctx, oldClient, client, base, v.Compare), fmt.Sprintf("%d paths answer the same on old and new", len(v.Compare)))
		}
	}
	if err := s.r.save(); err != nil {
		return err
	}
	if errs.ErrorOrNil() != nil {
		errs.ErrorFormat = listFormat
		return errors.Join(ErrVerify, fmt.Errorf("%d check(s) failed on %s:\n%s", len(errs.Errors), s.st.NewName, errs.Error()))
	}
	return nil
}

func (s *swapRun) addrOfSource() string {
	if s.sw.Verify.ConnectAddress != "" {
		// Behind an override both servers are reached the same way; the
		// source is what the override reached before cutover.
		return s.sw.Verify.ConnectAddress
	}
	return net.JoinHostPort(s.st.SourceIP, portOf(s.serviceURL()))
}

// sshConfig is how the swap's SSH checks connect. Host keys go to the
// plan's known_hosts_file or, by default, to vmswap's own file beside the
// plan's journal, never to the user's ~/.ssh/known_hosts: cloud IPs are
// reused, and a swap's new server is a new host.
func (s *swapRun) sshConfig(k *SSH) verify.SSHConfig {
	kh := k.KnownHostsFile
	if kh == "" {
		kh = s.r.planFile() + ".known_hosts"
	}
	return verify.SSHConfig{User: k.User, KeyFile: k.Key, Port: k.Port, KnownHosts: kh, HostKeyPolicy: k.KnownHosts}
}

func sshFacts(ctx context.Context, host string, cfg verify.SSHConfig) (*verify.Facts, error) {
	c, err := verify.DialSSH(ctx, host, cfg)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.Facts(ctx)
}

// probeConfig is the probe of a swap: the plan's, or the public entry point
// of its cutover.
func (s *swapRun) probeConfig(ctx context.Context) (probe.Config, bool) {
	if p := s.sw.Probe; p != nil {
		return probe.Config{URL: p.URL, Rate: p.Rate, Resolver: p.Resolver, ConnectTo: p.ConnectTo}, true
	}
	return s.kind.entry(ctx, portOf(s.serviceURL()))
}

// startProbe starts the swap's probe unless it runs already.
func (s *swapRun) startProbe(ctx context.Context) error {
	if s.probe != nil {
		return nil
	}
	cfg, ok := s.probeConfig(ctx)
	if !ok {
		if !s.warnedNoProbe {
			s.warnedNoProbe = true
			s.r.emit(Event{Event: "warning", Swap: s.name(), Message: "no probe: set probe.url to watch live traffic through the cutover; holds are plain waits without it"})
		}
		return nil
	}
	p, err := probe.Start(cfg)
	if err != nil {
		return err
	}
	s.probe = p
	rate := cfg.Rate
	if rate <= 0 {
		rate = probe.DefaultRate
	}
	s.progress("probe: %d req/s to %s", rate, cfg.URL)
	return nil
}

func cutover(ctx context.Context, s *swapRun) error {
	fresh := s.probe == nil
	if err := s.startProbe(ctx); err != nil {
		return err
	}
	if fresh && s.probe != nil {
		// A baseline before anything moves, to compare latency with.
		base := time.Second
		if s.sw.Probe != nil && s.sw.Probe.Baseline > 0 {
			base = s.sw.Probe.Baseline.D()
		}
		if err := s.r.clock().Sleep(ctx, base); err != nil {
			return err
		}
		s.probe.Mark("cutover")
	}
	defer func() {
		if s.probe != nil {
			s.probe.Mark("observe")
		}
	}()
	wctx, cancel := context.WithTimeout(ctx, s.timeout())
	defer cancel()
	if err := s.kind.forward(wctx, s); err != nil {
		return err
	}
	// The source gets no new traffic from here: its hold starts now.
	s.leftAt = s.r.clock().Now()
	return nil
}

func orDur(d Duration, def time.Duration) time.Duration {
	if d > 0 {
		return d.D()
	}
	return def
}

// observe holds the swap under live traffic for the plan's observe time,
// counted in this process with the probe running: a run resumed after a
// pause observes again in full.
func observe(ctx context.Context, s *swapRun) error {
	return s.holdUnderProbe(ctx, s.sw.Observe.D(), func(total, failed int64, left time.Duration) {
		s.progress("observing %s under traffic: %d requests, %d failed, %s left", s.st.NewName, total, failed, left.Round(time.Second))
	})
}

// holdUnderProbe waits d of continuous time in this process with the probe
// running, checking the error budget as it goes. Time that passed before a
// restart does not count: a safety window is evidence, not a deadline.
func (s *swapRun) holdUnderProbe(ctx context.Context, d time.Duration, note func(total, failed int64, left time.Duration)) error {
	if err := s.startProbe(ctx); err != nil {
		return err
	}
	clk := s.r.clock()
	until := clk.Now().Add(d)
	var budget Budget
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
	if !s.st.has("old_retired") {
		left := s.kind.hold(s.st)
		if !s.leftAt.IsZero() {
			left -= clk.Now().Sub(s.leftAt)
		}
		if left > 0 {
			s.progress("keeping %s serving for %s more (drain / cached DNS answers)", s.st.SourceName, left.Round(time.Second))
			if err := s.holdUnderProbe(ctx, left, func(total, failed int64, left time.Duration) {}); err != nil {
				return err
			}
		}
		if err := s.once("old_retired", func() error {
			if s.sw.Retire.Action == "delete" {
				s.progress("deleting %s", s.st.SourceName)
				return s.comp.DeleteServer(ctx, s.st.SourceID)
			}
			s.progress("powering off %s", s.st.SourceName)
			if err := s.comp.PowerOff(ctx, s.st.SourceID, orDur(s.sw.Retire.ShutdownTimeout, 2*time.Minute)); err != nil {
				return err
			}
			if s.sw.Retire.KeepFor > 0 {
				s.st.KeepUntil = clk.Now().Add(s.sw.Retire.KeepFor.D())
			}
			return nil
		}); err != nil {
			return err
		}
	}
	if !s.sw.Retire.KeepImage && s.st.ImageID != "" {
		return s.once("image_deleted", func() error { return s.comp.DeleteImage(ctx, s.st.ImageID) })
	}
	return nil
}
