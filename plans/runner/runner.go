// Package runner applies plans: the steps of a swap (preflight, snapshot,
// launch, ready, verify, cutover, observe, retire), the cutover kinds,
// rollback and revert, the journal and its lock, server claims, and the one
// state machine of a plan file's runs (Decide, OpenSession) that every
// command goes through. It knows drivers only by vmswap's own interfaces.
package runner

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vmswap/vmswap/loadbalancer"
	"github.com/vmswap/vmswap/plans"
	"github.com/vmswap/vmswap/plans/registry"
	"github.com/vmswap/vmswap/provider"
	"github.com/vmswap/vmswap/verify/probe"
)

// Sub-steps, as the journal records them in SwapState.Done and Intents.
const (
	subLBAdded      = "lb_added"       // the new server was added to the pool
	subLBRoutesNew  = "lb_routes_new"  // the pool was seen routing to it
	subLBOldRemoved = "lb_old_removed" // the source was taken out, draining
	subDNSSet       = "dns_set"        // the record holds the new server's value
	subDNSOtherSet  = "dns_other_set"  // and the dual-stack name's set of the other type
	subIPAssigned   = "ip_assigned"    // the reserved IP points at the new server
	subOldRetired   = "old_retired"    // the source was powered off or deleted
	subImageDeleted = "image_deleted"  // the snapshot was deleted
	subHeldTags     = "held_tags"      // the new server got the tags other pools select by
	subRenameOld    = "renamed_old"    // the source was renamed NAME-retired-RUN
	subRenameNew    = "renamed_new"    // the new server took the source's name
	subKeepTagged   = "keep_tagged"    // the kept source carries its keep window
)

// cutoverSubs are the sub-steps that move traffic.
var cutoverSubs = []string{subLBAdded, subLBRoutesNew, subLBOldRemoved, subDNSSet, subDNSOtherSet, subIPAssigned, subHeldTags}

// Steps of a swap, in order.
var Steps = []string{"preflight", "snapshot", "launch", "ready", "verify", "catchup", "cutover", "observe", "retire"}

// Sentinel errors a step's failure carries, so that callers and rollback can
// decide with errors.Is.
var (
	ErrPreflight = errors.New("preflight failed")
	ErrStale     = errors.New("plan is stale")
	// ErrLeftFleet is a fleet swap whose source was taken out of the
	// fleet's tag since the plan was written: left out, not a failure.
	ErrLeftFleet   = errors.New("left the fleet")
	ErrVerify      = errors.New("verification failed")
	ErrNeverRoutes = errors.New("load balancer never routed to the new server")
	ErrBudget      = errors.New("error budget breached")
	ErrInterrupted = errors.New("interrupted")
	ErrWaveFailed  = errors.New("its wave failed")
)

// Exit codes: each means one thing.
const (
	ExitOK         = 0
	ExitRolledBack = 1 // failed and rolled back: the source serves
	ExitBadInput   = 2 // bad input or stale plan: nothing was changed
	ExitAttention  = 3 // failed and needs attention: see the message
	ExitDecision   = 4 // paused for a decision: `vmswap apply --continue` goes on
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
	// Wave is the fleet wave (1-based) the event is about, if any.
	Wave int `json:"wave,omitempty"`
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
	Doc     *plans.Document
	Drivers map[string]*registry.Drivers
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
	// AfterCopy, if set, is called after each file a carry pass copies,
	// with the pass's name and its count so far (for crash tests).
	AfterCopy func(pass string, n int)
	// Finish is set when the run goes on with the plan it recorded rather
	// than the plan file (apply --finish), so messages say so.
	Finish bool
	// PlanFile is the plan's path as the user typed it, for messages.
	PlanFile string
	// Continue passes the decision a paused run waits for (apply --continue).
	Continue bool
	// Environ is the environment the user's verify.commands start from.
	// Nil: the process's.
	Environ func() []string

	emitMu sync.Mutex
	// created holds the IDs and addresses of the servers this run created
	// (guarded by createdMu); paused, the swaps paused when apply
	// --continue started; waveOf, each swap's wave; cutovers bounds the
	// cutovers at once (strategy.max_unavailable).
	createdMu sync.Mutex
	created   map[string]bool
	paused    map[int]bool
	waveOf    map[string]int
	cutovers  chan struct{}

	// changed is set once a swap of this run goes past preflight.
	changed atomic.Bool
	// claimTagged is set once this process tagged or released a claim:
	// the run's claim tag exists, to be deleted when no server carries it.
	claimTagged atomic.Bool
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
	Warnings  []string `json:"warnings,omitempty"`
	// Carried sums the carry passes; Diverged counts the files the source
	// wrote after its snapshot that no pass carried.
	Carried  *CarrySum     `json:"carried,omitempty"`
	Diverged *int          `json:"diverged,omitempty"`
	Writes   *probe.Writes `json:"writes,omitempty"`
}

// CarrySum is what a swap's carry passes did, together.
type CarrySum struct {
	Passes    int   `json:"passes"`
	Files     int   `json:"files"`
	Bytes     int64 `json:"bytes"`
	Deleted   int   `json:"deleted"`
	Conflicts int   `json:"conflicts"`
}

// NewJournal starts the journal of a new run of doc.
func NewJournal(path string, doc *plans.Document, runID string) *Journal {
	j := &Journal{Version: JournalVersion, Plan: doc.File, PlanHash: doc.Hash(), PlanID: doc.PlanID(), PlanText: string(doc.Raw), RunID: runID,
		Started: time.Now().UTC(), Status: StatusRunning, path: path}
	for i := range doc.Plan.Swaps {
		j.Swaps = append(j.Swaps, &SwapState{Index: i, Status: StatusPending, Steps: map[string]*StepLog{}})
	}
	return j
}

// swapRun is the working state of one swap in this process.
type swapRun struct {
	r    *Runner
	i    int
	sw   *plans.Swap
	st   *SwapState
	comp provider.Compute
	kind cutoverKind
	src  *provider.Server
	// leftFleet is set when the fleet's tag, listed for the source, no
	// longer names it.
	leftFleet bool
	size      *provider.Size
	probe     *probe.Probe
	// pool is the load balancer's pool as preflight read it.
	pool *loadbalancer.Pool
	// leftAt is when, in this process, the source stopped getting new
	// traffic; zero after a restart, so its hold runs again in full.
	leftAt        time.Time
	warnedNoProbe bool
	// abort, when set, stops the swap at its next step: another swap of
	// its wave failed (strategy.on_failure: rollback_wave).
	abort *atomic.Bool
	// waveSize is how many swaps run at once in its wave.
	waveSize int
	// rollingBack is set while the swap rolls back: the waits of moving
	// traffic back are not stopped by its wave's failure.
	rollingBack bool
	// prepare stops the swap before its catchup step: it is prepared
	// while the wave before it runs (see preparation).
	prepare bool
	// prepFor is the wave (1-based) the swap is being prepared for.
	prepFor int
	// pastVerify, when set, is called once the swap is past its verify
	// step in its wave.
	pastVerify func()
	// launchSettled is set once nothing will look for the new server by
	// its launch token again: the swap succeeded and the server took the
	// source's name, or its rollback deleted the server or found none.
	launchSettled bool
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
		if e.Wave == 0 && e.Swap != "" {
			e.Wave = r.waveOf[e.Swap]
		}
		r.emitMu.Lock()
		defer r.emitMu.Unlock()
		e.Time = r.now()
		r.Emit(e)
	}
}

// save writes the journal. While a wave runs, swaps save with
// swapRun.save instead.
func (r *Runner) save() error {
	r.Journal.locked(func() { r.Journal.clock = r.clock().Now })
	if err := r.Journal.Save(); err != nil {
		return err
	}
	r.afterSave()
	return nil
}

func (r *Runner) afterSave() {
	if r.AfterSave != nil {
		var n int
		r.Journal.locked(func() { n = r.Journal.saves })
		r.AfterSave(n)
	}
}

// save writes the journal with this swap's state as it is now; safe while
// the other swaps of its wave run.
func (s *swapRun) save() error {
	if err := s.r.Journal.saveSwap(s.i, s.st); err != nil {
		return err
	}
	s.r.afterSave()
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
//
// The swaps run in the strategy's waves: one at a time without one. A
// wave's swaps run at once; a failure stops the run after its wave; a
// gate after a wave pauses the run (exit 4) until apply --continue.
func (r *Runner) Run(ctx context.Context) *Result {
	j := r.Journal
	res := &Result{Status: StatusSucceeded}
	j.Status = StatusRunning
	r.start()
	if err := r.save(); err != nil {
		return &Result{Status: StatusNeedsAttention, ExitCode: ExitAttention, Next: err.Error()}
	}
	plan := r.Doc.Plan
	// The fleet is checked when a run starts; one under way finishes or is
	// undone with the servers it took on.
	if err := r.checkFleet(ctx); err != nil && !r.changedAnything() {
		res.Status, res.ExitCode = StatusRefused, ExitBadInput
		res.Next = fmt.Sprintf("nothing was changed: %v; write a new plan: vmswap plan --refresh %s", err, r.planFile())
		if ctx.Err() != nil {
			res.Status, res.ExitCode, res.Next = StatusInterrupted, ExitAttention, fmt.Sprintf("interrupted before any swap started; nothing was changed. Run %s again", r.applyCommand())
		}
		r.finish(res)
		return res
	}
	waves := plan.Strategy.Waves(len(plan.Swaps))
	var next *preparation // the wave after the one running, prepared ahead
	for w, idx := range waves {
		cur := next
		cur.wait()
		next = nil
		var ahead func()
		if r.prepareAhead(w, waves) {
			ahead = func() { next = r.prepare(ctx, w+1, len(waves), waves[w+1]) }
		}
		code, msg := r.runWave(ctx, w, len(waves), idx, cur, ahead)
		if code != ExitOK {
			r.abandon(next, ctx.Err() != nil || code == ExitDecision, fmt.Sprintf("wave %d, run while this one was prepared, did not finish", w+1))
			res.ExitCode, res.Next = code, msg
			res.Status = map[int]State{ExitRolledBack: StatusRolledBack, ExitBadInput: StatusRefused, ExitAttention: StatusNeedsAttention, ExitDecision: StatusPaused}[code]
			if slices.ContainsFunc(idx, func(i int) bool { return j.Swaps[i].Status == StatusInterrupted }) {
				res.Status = StatusInterrupted
			}
			if plan.Strategy != nil && len(waves) > 1 && code != ExitDecision {
				res.Next = r.waveFailed(w, len(waves), res.Next)
			}
			break
		}
		if w == len(waves)-1 {
			break
		}
		if w == 0 && plan.Strategy != nil && plan.Strategy.Canary > 0 && plan.Fleet != nil && !slices.ContainsFunc(idx, func(i int) bool { return j.Swaps[i].Status == StatusSucceeded }) {
			// The canary was left out (its server left the fleet's tag):
			// no evidence that the new size serves, so no wave starts.
			var names []string
			for _, i := range idx {
				names = append(names, r.swapRun(i).name())
			}
			res.Status, res.ExitCode = StatusRefused, ExitBadInput
			res.Next = fmt.Sprintf("no canary ran: %s left the tag %s during the run and was left out, so no wave started and nothing was changed; write a new plan, which picks another canary: vmswap plan --refresh %s", strings.Join(names, ", "), plan.Fleet.Tag, r.planFile())
			r.emit(Event{Event: "wave", Wave: 1, Status: "failed", Message: res.Next})
			break
		}
		if gate := fmt.Sprintf("after wave %d", w+1); plan.Strategy.GateAfter(w, len(waves)) && !slices.Contains(j.GatesPassed, gate) {
			if !(r.Continue && j.Gate == gate) {
				j.locked(func() { j.Gate = gate })
				res.Status, res.ExitCode = StatusPaused, ExitDecision
				res.Next = fmt.Sprintf("paused after wave %d of %d (%s; the rest still run on their old servers): run `vmswap apply --continue %s` to go on, or `vmswap rollback %s` to switch every upgraded server back",
					w+1, len(waves), r.upgradedList(), r.planFile(), r.planFile())
				r.emit(Event{Event: "wave", Wave: w + 1, Status: "paused", Message: res.Next})
				break
			}
			j.locked(func() { j.GatesPassed, j.Gate = append(j.GatesPassed, gate), "" })
		}
		if d := plan.Strategy.Pause(); d > 0 {
			r.emit(Event{Event: "wave", Wave: w + 1, Status: "waiting", Message: fmt.Sprintf("waiting %s before wave %d of %d", d, w+2, len(waves))})
			if err := r.clock().Sleep(ctx, d); err != nil {
				j.locked(func() { j.Status = StatusInterrupted })
				res.Status, res.ExitCode = StatusInterrupted, ExitAttention
				res.Next = fmt.Sprintf("interrupted between waves %d and %d of %d; nothing was rolled back. Continue with: %s (or undo with: vmswap rollback %s)", w+1, w+2, len(waves), r.applyCommand(), r.planFile())
				break
			}
		}
	}
	if res.ExitCode == ExitOK && plan.Strategy != nil {
		if msg := r.fleetBudget(); msg != "" {
			res.Status, res.ExitCode, res.Next = StatusNeedsAttention, ExitAttention, msg
		}
	}
	for i := range plan.Swaps {
		res.Swaps = append(res.Swaps, r.swapResult(r.swapRun(i)))
	}
	if plan.Strategy == nil {
		// A plan without a strategy reports the swaps it reached; a
		// fleet's summary lists every server.
		res.Swaps = slices.DeleteFunc(res.Swaps, func(sr SwapResult) bool { return sr.Status == StatusPending })
	}
	r.dropClaimTag(context.WithoutCancel(ctx))
	r.finish(res)
	return res
}

// finish records the run's outcome in the journal.
func (r *Runner) finish(res *Result) {
	j := r.Journal
	if res.Status == StatusRefused && r.changedAnything() {
		// A later swap was refused, but earlier ones changed the cloud:
		// the run is under way, to be gone on with or undone.
		res.Status, res.ExitCode = StatusNeedsAttention, ExitAttention
		res.Next += fmt.Sprintf("\nWhat this run did before stays: once the cause is fixed, `vmswap apply %s` goes on; `vmswap rollback %s` undoes the run", r.planFile(), r.planFile())
	}
	j.Status = res.Status
	if res.Status == StatusRefused && !r.changedAnything() && j.restorePrevious(r.now()) {
		// Nothing was changed: the run before this one stays the one that
		// rollback and cleanup act on.
		res.Next += fmt.Sprintf(" (run %s, %s, is still this plan's last run)", j.RunID, j.Status)
	}
	if err := r.save(); err != nil && res.ExitCode == ExitOK {
		res.ExitCode, res.Next = ExitAttention, err.Error()
	}
}

// start notes, before anything runs, what this invocation may take for
// granted: the servers the run created, the swaps paused for the decision
// apply --continue gives, which wave each swap is in.
func (r *Runner) start() {
	r.created = map[string]bool{}
	r.paused = map[int]bool{}
	r.waveOf = map[string]int{}
	for i, st := range r.Journal.Swaps {
		r.noteCreated(st.NewID, st.NewIP)
		if r.Continue && st.Status == StatusPaused {
			r.paused[i] = true
		}
	}
	plan := r.Doc.Plan
	if waves := plan.Strategy.Waves(len(plan.Swaps)); len(waves) > 1 && plan.Strategy != nil {
		for w, idx := range waves {
			for _, i := range idx {
				r.waveOf[r.swapRun(i).name()] = w + 1
			}
		}
	}
	r.cutovers = make(chan struct{}, plan.Strategy.Unavailable())
}

// runWave runs the wave's swaps that are not done, at once, and returns
// the worst outcome. pre is the wave's preparation, made while the wave
// before it ran: its swaps go on from where it stopped them, and one that
// failed there fails the wave before any of it moves traffic. ahead, when
// not nil, is called once every swap of the wave is past its verify step:
// the next wave may be prepared from then on.
func (r *Runner) runWave(ctx context.Context, w, n int, idx []int, pre *preparation, ahead func()) (int, string) {
	j := r.Journal
	var todo []*swapRun
	codes, nexts := map[int]int{}, map[int]string{}
	var abort atomic.Bool
	for _, i := range idx {
		sr := pre.run(r, i)
		if sr.st.Status == StatusSucceeded {
			continue
		}
		if code, ok := pre.result(i); ok && code != exitPrepared && code != exitNotStarted {
			// Ended while prepared: refused, rolled back or stopped.
			codes[i], nexts[i] = code, pre.nexts[i]
			if code != ExitOK && (r.Doc.Plan.Strategy == nil || r.Doc.Plan.Strategy.OnFailure != "finish_wave") {
				abort.Store(true)
			}
			continue
		}
		todo = append(todo, sr)
	}
	if len(todo) == 0 && len(codes) == 0 {
		return ExitOK, ""
	}
	if n > 1 {
		j.locked(func() { j.Wave = w + 1 })
		names := make([]string, len(todo))
		for k, sr := range todo {
			names[k] = sr.name()
		}
		r.emit(Event{Event: "wave", Wave: w + 1, Status: "started", Message: fmt.Sprintf("wave %d/%d: %s", w+1, n, strings.Join(names, ", "))})
	}
	// The next wave is prepared once every swap of this one is past
	// verify or left out of the fleet, at least one verified, and none
	// failed.
	var past, verified atomic.Int64
	mark := func(v bool) {
		if v {
			verified.Add(1)
		}
		if past.Add(1) == int64(len(todo)) && verified.Load() > 0 && ahead != nil && !abort.Load() && len(codes) == 0 {
			ahead()
		}
	}
	idxs := make([]int, len(todo))
	leftOut := map[int]func(){}
	for k, sr := range todo {
		idxs[k] = sr.i
		var once sync.Once
		sr.pastVerify = func() { once.Do(func() { mark(true) }) }
		leftOut[sr.i] = func() { once.Do(func() { mark(false) }) }
	}
	j.concurrent(idxs)
	defer j.done(idxs)
	if len(todo) == 1 && len(codes) == 0 {
		todo[0].abort = nil // its preparation's, if it was prepared
		code, next := r.runSwap(ctx, todo[0])
		if code == ExitOK {
			leftOut[todo[0].i]() // a no-op unless it was left out
		}
		r.swapOutcome(todo[0], code)
		return code, next
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, sr := range todo {
		sr.abort, sr.waveSize = &abort, len(todo)
		wg.Add(1)
		go func() {
			defer wg.Done()
			code, next := r.runSwap(ctx, sr)
			if code == ExitOK {
				leftOut[sr.i]() // a no-op unless it was left out
			}
			mu.Lock()
			codes[sr.i], nexts[sr.i] = code, next
			mu.Unlock()
			r.swapOutcome(sr, code)
			if code != ExitOK && code != ExitDecision && (r.Doc.Plan.Strategy == nil || r.Doc.Plan.Strategy.OnFailure != "finish_wave") {
				abort.Store(true)
			}
		}()
	}
	wg.Wait()
	worst, next := worstOf(idx, codes, nexts, r)
	status := "succeeded"
	if worst != ExitOK {
		status = "failed"
	}
	r.emit(Event{Event: "wave", Wave: w + 1, Status: status, Message: fmt.Sprintf("wave %d/%d %s", w+1, n, status)})
	return worst, next
}

// worstOf is the worst of a wave's outcomes, and what each swap that did
// not succeed says, one line each in the wave's order.
func worstOf(idx []int, codes map[int]int, nexts map[int]string, r *Runner) (int, string) {
	worst := ExitOK
	rank := map[int]int{ExitOK: 0, ExitBadInput: 1, ExitRolledBack: 2, ExitDecision: 3, ExitAttention: 4}
	var lines []string
	for _, i := range idx {
		code, ok := codes[i]
		if !ok || code == ExitOK || code == exitNotStarted {
			continue
		}
		lines = append(lines, fmt.Sprintf("%s: %s", r.swapRun(i).name(), nexts[i]))
		if rank[code] > rank[worst] {
			worst = code
		}
	}
	if worst == ExitOK {
		return ExitOK, ""
	}
	return worst, strings.Join(lines, "\n")
}

// exitNotStarted is a wave's swap stopped before its first step, because
// another swap of the wave failed: it is pending again.
const exitNotStarted = -1

// swapOutcome emits the swap event of a swap that did not succeed (success
// has its own).
func (r *Runner) swapOutcome(sr *swapRun, code int) {
	if code != ExitOK && code != exitNotStarted {
		r.emit(Event{Event: "swap", Swap: sr.name(), Status: string(sr.st.Status), Message: fmt.Sprintf("%s: %s", sr.st.SourceNameOr(sr.sw.Source.Server), sr.st.Status)})
	}
}

// upgradedList names the swaps done so far, for a fleet's messages.
func (r *Runner) upgradedList() string {
	var done []string
	for i, st := range r.Journal.Swaps {
		if st.Status == StatusSucceeded {
			done = append(done, r.swapRun(i).name())
		}
	}
	if len(done) == 0 {
		return "no server upgraded yet"
	}
	return "upgraded " + strings.Join(done, ", ")
}

// waveFailed is what a fleet run that stopped in wave w says: which
// servers are upgraded, which are back on their old size, which were not
// touched, and how to go on.
func (r *Runner) waveFailed(w, n int, why string) string {
	var up, back, refused, other, rest []string
	for i, st := range r.Journal.Swaps {
		name := r.swapRun(i).name()
		switch st.Status {
		case StatusSucceeded:
			up = append(up, name)
		case StatusRolledBack:
			back = append(back, name)
		case StatusRefused:
			// Never touched: say why, its last line being the reason.
			lines := strings.Split(strings.TrimSpace(st.Error), "\n")
			refused = append(refused, fmt.Sprintf("%s (%s)", name, strings.TrimPrefix(strings.TrimSpace(lines[len(lines)-1]), "- ")))
		case StatusPending:
			rest = append(rest, name)
		default:
			other = append(other, fmt.Sprintf("%s (%s)", name, st.Status))
		}
	}
	list := func(xs []string) string {
		if len(xs) == 0 {
			return "none"
		}
		return strings.Join(xs, ", ")
	}
	out := fmt.Sprintf("wave %d of %d did not finish; no further wave started.\nupgraded: %s\nback on the old size: %s", w+1, n, list(up), list(back))
	if len(refused) > 0 {
		out += "\nrefused at its start, unchanged: " + strings.Join(refused, "; ")
	}
	out += "\nnot started: " + list(rest)
	if len(other) > 0 {
		out += "\nneeds attention: " + list(other)
	}
	if len(up) > 0 {
		// The refused swap changed nothing; the run did.
		why = strings.TrimPrefix(why, "nothing was changed; ")
	}
	out += "\n" + why
	if len(other) == 0 && (len(back) > 0 || len(refused) > 0 || len(rest) > 0) {
		out += fmt.Sprintf("\nOnce the cause is fixed, `vmswap apply %s` upgrades the rest (what is upgraded stays).", r.planFile())
	}
	return out
}

func (r *Runner) swapResult(sr *swapRun) SwapResult {
	st := sr.st
	out := SwapResult{Name: sr.name(), Source: st.SourceName, New: st.NewName, Cutover: sr.sw.Cutover.Kind(), Status: st.Status, Error: st.Error, Left: st.Left, Warnings: st.Warnings}
	if out.Source == "" {
		out.Source = sr.sw.Source.Server
	}
	conflicts := map[string]bool{} // a path in conflict is counted once, however many passes saw it
	for _, p := range st.Passes {
		if out.Carried == nil {
			out.Carried = &CarrySum{}
		}
		c := out.Carried
		c.Passes, c.Files, c.Bytes, c.Deleted = c.Passes+1, c.Files+p.Res.Copied, c.Bytes+p.Res.Bytes, c.Deleted+p.Res.Deleted
		for _, cf := range p.Res.Conflicts {
			conflicts[cf.Path] = true
		}
		c.Conflicts = len(conflicts)
	}
	if d := st.Divergence; d != nil {
		out.Diverged = &d.Count
	}
	if p := st.Probe; p != nil {
		out.Writes = p.Writes
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
	if l := st.Steps["rollback"]; l != nil && st.Status == StatusReverted {
		// Switched back by `vmswap rollback`: its own time, not the swap's.
		end := l.End
		if end.IsZero() {
			end = r.now()
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
		{"verify", verifyStep}, {"catchup", catchUp}, {"cutover", cutover}, {"observe", observe}, {"retire", retire}}
	for _, s := range steps {
		if s.name == "catchup" {
			// Past verify: prepared, and its wave may let the next one be
			// prepared.
			if sr.prepare {
				return exitPrepared, ""
			}
			if sr.pastVerify != nil {
				sr.pastVerify()
			}
		}
		if st.has(s.name) {
			continue
		}
		if ctx.Err() != nil {
			return r.interrupted(sr, s.name)
		}
		if sr.abort != nil && sr.abort.Load() {
			if len(st.Done) == 0 {
				st.Status, st.Error = StatusPending, ""
				if err := sr.save(); err != nil {
					return ExitAttention, err.Error()
				}
				return exitNotStarted, ""
			}
			return r.rollback(sr, sr.waveAborted())
		}
		if s.name == "cutover" {
			// At most max_unavailable swaps move traffic at once.
			select {
			case r.cutovers <- struct{}{}:
			case <-ctx.Done():
				return r.interrupted(sr, s.name)
			}
		}
		st.Steps[s.name] = &StepLog{Start: r.now(), Status: "running"}
		if s.name != "preflight" {
			r.changed.Store(true)
			r.Journal.locked(func() { r.Journal.prev = nil })
		}
		r.emit(Event{Event: "step", Swap: sr.name(), Step: s.name, Status: "started"})
		if err := sr.save(); err != nil {
			return ExitAttention, err.Error()
		}
		err := s.fn(ctx, sr)
		if s.name == "cutover" {
			<-r.cutovers
		}
		if err == nil {
			st.Steps[s.name].End, st.Steps[s.name].Status = r.now(), "ok"
			st.Done = append(st.Done, s.name)
			r.emit(Event{Event: "step", Swap: sr.name(), Step: s.name, Status: "ok", Elapsed: st.Steps[s.name].End.Sub(st.Steps[s.name].Start).Seconds()})
			if err := sr.save(); err != nil {
				return ExitAttention, err.Error()
			}
			continue
		}
		if ctx.Err() != nil {
			return r.interrupted(sr, s.name)
		}
		if errors.Is(err, ErrLeftFleet) {
			// Taken out of the fleet on purpose: the fleet goes on without it.
			r.release(context.WithoutCancel(ctx), sr)
			st.Steps[s.name].End, st.Steps[s.name].Status = r.now(), "skipped"
			why := strings.TrimPrefix(err.Error(), ErrLeftFleet.Error()+"\n")
			st.Status, st.Error = StatusRefused, fmt.Sprintf("%s: %s", s.name, why)
			r.emit(Event{Event: "warning", Swap: sr.name(), Message: why})
			if serr := sr.save(); serr != nil {
				return ExitAttention, serr.Error()
			}
			return ExitOK, ""
		}
		status := "failed"
		if errors.Is(err, ErrDecision) {
			status = "paused"
		} else if sr.abort != nil && (r.Doc.Plan.Strategy == nil || r.Doc.Plan.Strategy.OnFailure != "finish_wave") {
			// The wave's other swaps stop at their next step, not after
			// this one's rollback.
			sr.abort.Store(true)
		}
		st.Steps[s.name].End, st.Steps[s.name].Status = r.now(), status
		st.Error = fmt.Sprintf("%s: %v", s.name, err)
		r.emit(Event{Event: "step", Swap: sr.name(), Step: s.name, Status: status, Message: err.Error()})
		switch {
		case s.name == "preflight":
			r.release(context.WithoutCancel(ctx), sr)
			st.Status = StatusRefused
			if serr := sr.save(); serr != nil {
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
		case errors.Is(err, ErrDecision):
			stopProbe(sr)
			st.Status = StatusPaused
			if serr := sr.save(); serr != nil {
				return ExitAttention, serr.Error()
			}
			if st.Paused == gateBeforeCutover {
				return ExitDecision, fmt.Sprintf("paused before the cutover (gate before_cutover): %s passed verify and runs at %s with no traffic yet, while %s serves. Look at it, then run `vmswap apply --continue %s` to move traffic; or `vmswap rollback %s` to delete it",
					st.NewName, st.NewIP, st.SourceName, r.planFile(), r.planFile())
			}
			return ExitDecision, fmt.Sprintf("paused before retiring %s, which still runs, out of traffic, at %s. Copy what you need from it to %s (%s), then run `vmswap apply --continue %s`; or switch back with `vmswap rollback %s`",
				st.SourceName, st.SourceIP, st.NewName, st.NewIP, r.planFile(), r.planFile())
		case errors.Is(err, ErrAfterCutover):
			stopProbe(sr)
			st.Status = StatusNeedsAttention
			if serr := sr.save(); serr != nil {
				return ExitAttention, serr.Error()
			}
			return ExitAttention, fmt.Sprintf("traffic is on %s and stays there; %s. Fix the cause, then run `%s` (the failed hook runs again), or switch back with `vmswap rollback %s`",
				st.NewName, trimSentinel(err), r.applyCommand(), r.planFile())
		case s.name == "retire" && (st.has(subOldRetired) || !errors.Is(err, ErrBudget) && !errors.Is(err, ErrCutoverUndone)):
			// Traffic is on the new server and it has been observed healthy:
			// retiring is cleanup, not a reason to move traffic back.
			stopProbe(sr)
			st.Status = StatusNeedsAttention
			st.Left = append(st.Left, fmt.Sprintf("retire of %s did not finish", st.SourceName))
			if serr := sr.save(); serr != nil {
				return ExitAttention, serr.Error()
			}
			return ExitAttention, fmt.Sprintf("the new server %s serves; retiring the old one failed: run `%s` again to finish", st.NewName, r.applyCommand())
		}
		return r.rollback(sr, err)
	}
	probed := sr.probe != nil // this process watched the exposure
	stopProbe(sr)
	if w := writesOf(st.Probe); probed && w != nil && w.LostUploads+w.LostSessions > 0 {
		st.Status, st.Error = StatusNeedsAttention, fmt.Sprintf("the probe's writes: %s: %s", w, strings.Join(w.Lost, "; "))
		if err := sr.save(); err != nil {
			return ExitAttention, err.Error()
		}
		return ExitAttention, fmt.Sprintf("%s replaced %s, but %s: they are on %s (kept powered off for keep_for) — carry the paths that hold them (carry.paths) and copy them over by hand, or `vmswap rollback %s`",
			st.NewName, st.SourceName, w, st.SourceName, r.planFile())
	}
	if failed, total := exposed(st.Probe); probed && failed > 0 {
		// The budget covers the whole time users are exposed, retire
		// included: failures after observe are never a plain success.
		var budget plans.Budget
		if sr.sw.Probe != nil {
			budget = sr.sw.Probe.ErrorBudget
		}
		msg := fmt.Sprintf("%d of %d probe requests failed between the cutover and the end of retire (budget %s)", failed, total, budget)
		if budget.Breached(int64(failed), int64(total)) {
			st.Status, st.Error = StatusNeedsAttention, msg
			if err := sr.save(); err != nil {
				return ExitAttention, err.Error()
			}
			return ExitAttention, fmt.Sprintf("%s replaced %s, but %s: check %s now (the probe's errors are in the journal); run `%s` to mark the run done, or `vmswap rollback %s` to switch back",
				st.NewName, st.SourceName, msg, st.NewName, r.applyCommand(), r.planFile())
		}
		r.emit(Event{Event: "warning", Swap: sr.name(), Message: msg + ": within the budget"})
	}
	// Its launch tag also tells a later swap of it that its name ends in
	// this run's suffix (names never stack): it goes once the name moved.
	sr.launchSettled = st.has(subRenameNew)
	r.release(context.WithoutCancel(ctx), sr)
	st.Status = StatusSucceeded
	msg := fmt.Sprintf("%s replaced by %s (%s)", st.SourceName, st.NewName, sr.sw.Target.Size)
	if st.has(subRenameNew) {
		msg = fmt.Sprintf("%s is now the %s launched as %s", st.SourceName, sr.sw.Target.Size, st.NewName)
		if st.has(subRenameOld) {
			msg += fmt.Sprintf("; the old one is %s", sr.retiredName())
		}
	}
	r.emit(Event{Event: "swap", Swap: sr.name(), Status: string(StatusSucceeded), Message: msg})
	if err := sr.save(); err != nil {
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

// applyCommand is the command that continues this run: with --finish when
// the run is carried on with the plan it recorded (the plan file changed).
func (r *Runner) applyCommand() string {
	if r.Continue && (len(r.paused) > 0 || r.Journal.Gate != "") {
		return "vmswap apply --continue " + r.planFile()
	}
	if r.Finish {
		return "vmswap apply --finish " + r.planFile()
	}
	return "vmswap apply " + r.planFile()
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
	r.Journal.locked(func() { r.Journal.Status = StatusInterrupted })
	next := fmt.Sprintf("interrupted during %s; nothing was rolled back. Continue with: %s (or undo with: vmswap rollback %s)", stepName, r.applyCommand(), r.planFile())
	if err := sr.save(); err != nil {
		next = fmt.Sprintf("interrupted during %s, and the journal could not be written (%v): check what the run created before running vmswap again", stepName, err)
	}
	return ExitAttention, next
}

func stopProbe(sr *swapRun) {
	if sr.probe != nil {
		s := sr.probe.Stop()
		sr.st.Probe = &s
		sr.probe = nil
		if w := s.Writes; w != nil {
			ev := Event{Event: "writes", Swap: sr.name(), Status: "ok", Message: w.String()}
			if w.LostUploads+w.LostSessions > 0 {
				ev.Status = "lost"
			}
			sr.r.emit(ev)
		}
	}
}

func writesOf(p *probe.Summary) *probe.Writes {
	if p == nil {
		return nil
	}
	return p.Writes
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
	src := s.fromFleet(ctx, ref)
	if src == nil {
		var err error
		if src, err = s.comp.GetServer(ctx, ref); err != nil {
			return nil, err
		}
	}
	s.src = src
	return src, nil
}

// fromFleet returns the source from a list of the fleet's tag, which the
// swaps of a wave starting together share, or nil when the plan has no
// fleet, the provider lists no tags, or the list does not name ref once:
// the caller reads the server alone. A list that does not name ref at
// all is noted (s.leftFleet): the source left the fleet's tag.
func (s *swapRun) fromFleet(ctx context.Context, ref string) *provider.Server {
	f := s.r.Doc.Plan.Fleet
	tl, ok := s.comp.(provider.TaggedLister)
	if f == nil || f.Provider != s.sw.Source.Provider || !ok {
		return nil
	}
	srv, n, err := tagged(ctx, tl, fleetTag(s.r.Doc.Plan), ref)
	s.leftFleet = err == nil && n == 0
	return srv
}

// tagged returns the one server carrying tag whose ID or name is ref (nil
// unless there is exactly one), and how many there are.
func tagged(ctx context.Context, tl provider.TaggedLister, tag, ref string) (*provider.Server, int, error) {
	list, err := tl.ServersTagged(ctx, tag)
	if err != nil {
		return nil, 0, err
	}
	var found *provider.Server
	n := 0
	for i := range list {
		if list[i].ID == ref || list[i].Name == ref {
			found, n = &list[i], n+1
		}
	}
	if n != 1 {
		found = nil
	}
	return found, n, nil
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
	// No URL in the plan: the port the load balancer sends to, as read
	// in this process or, resumed, as the plan observed it.
	pool := s.pool
	if o := s.r.Doc.Plan.Observed; pool == nil && o != nil && s.i < len(o.Swaps) {
		pool = o.Swaps[s.i].Pool
	}
	if pool != nil && pool.ServerPort > 0 && pool.ServerPort != 80 {
		return &url.URL{Scheme: "http", Host: net.JoinHostPort("localhost", strconv.Itoa(pool.ServerPort)), Path: "/"}
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
// pinAddr is where the swap's HTTP checks of the server at ip are sent:
// the override, or the IP with each URL's own port.
func (s *swapRun) pinAddr(ip string) string {
	if s.sw.Verify.ConnectAddress != "" {
		return s.sw.Verify.ConnectAddress
	}
	return ip
}

// addrOf is the server's service address: the override, or the IP with
// the port of the swap's first URL.
func (s *swapRun) addrOf(ip string) string {
	if s.sw.Verify.ConnectAddress != "" {
		return s.sw.Verify.ConnectAddress
	}
	return net.JoinHostPort(ip, portOf(s.serviceURL()))
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
	}
	wctx, cancel := context.WithTimeout(ctx, s.timeout())
	defer cancel()
	gone, err := s.recheckSource(wctx)
	if err != nil {
		return err
	}
	if fresh && s.probe != nil {
		if !gone {
			// A source deleted by someone fails the probe too: then the
			// new server is the only one left, and traffic goes to it.
			if err := s.probeWorksBefore(); err != nil {
				return err
			}
		}
		s.probe.Mark("cutover")
	}
	defer func() {
		if s.probe != nil {
			s.probe.Mark("observe")
		}
	}()
	if err := s.kind.forward(wctx, s); err != nil {
		return err
	}
	if err := s.joinHeldTags(wctx, true); err != nil {
		return err
	}
	// The source gets no new traffic from here: its hold starts now.
	s.leftAt = s.r.clock().Now()
	if err := s.runHooks(ctx, "after_cutover"); err != nil {
		return errors.Join(ErrAfterCutover, err)
	}
	return nil
}

// recheckSource reads the source once more before traffic moves (a
// fleet's wave shares the read: the list of its tag). A volume someone
// attached to it since preflight holds data the new server, made from a
// snapshot, does not have; another run's claim means someone removed this
// run's and another run is swapping the same server: either way traffic
// stays. This run's claim, removed by someone, is put back. A source gone
// (reported as gone) is left to the cutover.
func (s *swapRun) recheckSource(ctx context.Context) (gone bool, err error) {
	src := s.fromFleet(ctx, s.st.SourceID)
	if src == nil {
		if src, err = s.comp.GetServer(ctx, s.st.SourceID); errors.Is(err, provider.ErrNotFound) {
			return true, nil
		} else if err != nil {
			return false, err
		}
	}
	return src.Status == provider.StatusGone, s.recheckRead(ctx, src)
}

// recheckRead is recheckSource's verdict on the source as read.
func (s *swapRun) recheckRead(ctx context.Context, src *provider.Server) error {
	if p := volumeProblem(src); p != "" {
		return fmt.Errorf("since the swap began, %s", p)
	}
	if src.Status != provider.StatusRunning && src.Status != provider.StatusGone {
		// Off since preflight (a wave prepared ahead waits a while before
		// its cutover): someone is doing something with it.
		return fmt.Errorf("%s is %s, not running as it was at preflight: traffic stays where it is; once it runs again, apply upgrades it", src.Name, src.Status)
	}
	if s.st.Claim == "" {
		return nil
	}
	mine := strings.TrimPrefix(s.st.Claim, claimPrefix)
	if others := slices.DeleteFunc(claimsOn(src), func(r string) bool { return r == mine }); len(others) > 0 {
		how := "put there during this run"
		if !slices.Contains(claimsOn(src), mine) {
			how = "after someone removed this run's claim"
		}
		return errors.Join(ErrClaimed, fmt.Errorf("%s is claimed by run %s too (%s): two runs would move one server's traffic, so this one leaves it where it is", src.Name, strings.Join(others, ", "), how))
	}
	if !slices.Contains(claimsOn(src), mine) {
		s.r.emit(Event{Event: "warning", Swap: s.name(), Message: fmt.Sprintf("someone removed this run's claim (tag %s) from %s; it is put back", s.st.Claim, src.Name)})
		if err := s.comp.TagServer(ctx, src.ID, s.st.Claim); err != nil {
			return fmt.Errorf("claim %s again: %w", src.Name, err)
		}
	}
	return nil
}

func orDur(d plans.Duration, def time.Duration) time.Duration {
	if d > 0 {
		return d.D()
	}
	return def
}

// joinHeldTags gives the new server the tags other load balancers select
// their members by (join), or takes them away again (rollback). Joining is
// a journalled sub-step; leaving undoes it whenever it was attempted.
func (s *swapRun) joinHeldTags(ctx context.Context, join bool) error {
	if len(s.st.HeldTags) == 0 || s.st.NewID == "" {
		return nil
	}
	if join {
		return s.once(subHeldTags, func() error {
			s.progress("tagging %s with %v: the load balancers that select by them now send it traffic too", s.st.NewName, s.st.HeldTags)
			for _, t := range s.st.HeldTags {
				if err := s.comp.TagServer(ctx, s.st.NewID, t); err != nil {
					return err
				}
			}
			return nil
		})
	}
	if !slices.Contains(s.st.Intents, subHeldTags) {
		return nil
	}
	for _, t := range s.st.HeldTags {
		if err := s.comp.UntagServer(ctx, s.st.NewID, t); err != nil {
			return fmt.Errorf("%s is still tagged %s, so a load balancer selecting by it sends it traffic: %w", s.st.NewName, t, err)
		}
	}
	return nil
}

// continued reports whether this invocation is apply --continue for this
// swap: it was paused when the run went on. A swap that pauses later in the
// same invocation waits for its own --continue.
func (s *swapRun) continued() bool { return s.r.Continue && s.r.paused[s.i] }

// noteCreated records a server this run created, by ID and address.
func (r *Runner) noteCreated(id, ip string) {
	r.createdMu.Lock()
	defer r.createdMu.Unlock()
	if id != "" {
		r.created["id:"+id] = true
	}
	if ip != "" {
		r.created["addr:"+ip] = true
	}
}

func (r *Runner) isCreated(key string) bool {
	r.createdMu.Lock()
	defer r.createdMu.Unlock()
	return r.created[key]
}

// fleetBudget applies the probe's error budget to the whole fleet: each
// swap's failures may be within it while all of them together are not.
func (r *Runner) fleetBudget() string {
	var failed, total int
	var budget plans.Budget
	set := false
	for i, st := range r.Journal.Swaps {
		f, n := exposed(st.Probe)
		failed, total = failed+f, total+n
		if p := r.Doc.Plan.Swaps[i].Probe; p != nil && !set {
			budget, set = p.ErrorBudget, true
		}
	}
	if failed == 0 || !budget.Breached(int64(failed), int64(total)) {
		return ""
	}
	return fmt.Sprintf("every server is upgraded, but %d of %d probe requests failed across the fleet (budget %s): check the site now (each swap's errors are in the journal); `vmswap rollback %s` switches every server back", failed, total, budget, r.planFile())
}

// changedAnything reports whether this run changed anything in the cloud,
// in this process or in one before it that was stopped: a swap of this
// run (not one an earlier run finished) made a call or did a step beyond
// preflight.
func (r *Runner) changedAnything() bool {
	if r.changed.Load() {
		return true
	}
	for _, st := range r.Journal.Swaps {
		l := st.Steps["preflight"]
		if l == nil || l.Start.Before(r.Journal.Started) {
			continue // not started, or finished by an earlier run
		}
		if len(st.Intents) > 0 || slices.ContainsFunc(st.Done, func(d string) bool { return d != "preflight" }) {
			return true
		}
	}
	return false
}

// waveAborted is the error that stops a swap whose wave-mate failed
// (strategy.on_failure: rollback_wave), at the next point where stopping
// moves no traffic: before the old server leaves the pool, during
// observe.
func (s *swapRun) waveAborted() error {
	if s.abort != nil && s.abort.Load() && !s.rollingBack && s.prepFor > 0 {
		return errors.Join(ErrWaveFailed, fmt.Errorf("wave %d, which it was being prepared for, will not start: the wave before it, or another swap of wave %d, failed", s.prepFor, s.prepFor))
	}
	if s.abort != nil && s.abort.Load() && !s.rollingBack {
		return errors.Join(ErrWaveFailed, fmt.Errorf("another swap of its wave failed (strategy.on_failure: rollback_wave)"))
	}
	return nil
}
