package runner

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
)

// This file: a fleet's next wave prepared ahead. Its swaps run preflight,
// snapshot, launch, ready and verify while the wave before them moves
// traffic and is observed, so that each wave after the first only moves
// traffic. Nothing users see changes: the new servers wait out of every
// pool, and the sources still serve. The next wave is prepared only once
// every swap of the current one is past verify (the sizes and images are
// proven), never across a gate, and a wave that fails rolls back what was
// prepared for the next.

// exitPrepared is a swap stopped by its preparation before catchup: it
// goes on in its own wave.
const exitPrepared = -2

// preparation is a wave being prepared, in the background.
type preparation struct {
	wave  int // 0-based
	runs  map[int]*swapRun
	codes map[int]int
	nexts map[int]string
	abort atomic.Bool
	done  chan struct{}
}

// prepareAhead reports whether wave w+1 of waves is prepared while wave w
// runs: a fleet plan (prepare: ahead, its default), a next wave, and no
// stop for a person between them (a strategy gate, or a swap of wave w
// that may pause for a decision), which would leave new servers waiting.
func (r *Runner) prepareAhead(w int, waves [][]int) bool {
	st := r.Doc.Plan.Strategy
	if st == nil || st.Prepare == "in_wave" || w+1 >= len(waves) || st.GateAfter(w, len(waves)) {
		return false
	}
	for _, i := range waves[w] {
		sw := r.Doc.Plan.Swaps[i]
		if len(sw.Gates) > 0 || sw.Divergence != nil && sw.Divergence.OnFound == "stop" {
			return false
		}
	}
	return true
}

// prepare starts preparing wave w (0-based) of n: its swaps that are not
// done run up to their catchup step, at once.
func (r *Runner) prepare(ctx context.Context, w, n int, idx []int) *preparation {
	p := &preparation{wave: w, runs: map[int]*swapRun{}, codes: map[int]int{}, nexts: map[int]string{}, done: make(chan struct{})}
	var todo []*swapRun
	for _, i := range idx {
		if sr := r.swapRun(i); sr.st.Status != StatusSucceeded {
			sr.prepare, sr.abort, sr.prepFor = true, &p.abort, w+1
			p.runs[i] = sr
			todo = append(todo, sr)
		}
	}
	if len(todo) == 0 {
		close(p.done)
		return p
	}
	names := make([]string, len(todo))
	idxs := make([]int, len(todo))
	for k, sr := range todo {
		names[k], idxs[k] = sr.name(), sr.i
	}
	r.emit(Event{Event: "wave", Wave: w + 1, Status: "preparing", Message: fmt.Sprintf("wave %d/%d: preparing %s (snapshot, launch, verify) while wave %d moves traffic", w+1, n, strings.Join(names, ", "), w)})
	r.Journal.concurrent(idxs)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, sr := range todo {
		wg.Add(1)
		go func() {
			defer wg.Done()
			code, next := r.runSwap(ctx, sr)
			sr.prepare, sr.prepFor = false, 0
			mu.Lock()
			p.codes[sr.i], p.nexts[sr.i] = code, next
			mu.Unlock()
			if code != exitPrepared && code != ExitOK && code != exitNotStarted {
				r.swapOutcome(sr, code)
				if st := r.Doc.Plan.Strategy; st.OnFailure != "finish_wave" {
					p.abort.Store(true) // as its wave would: the others stop
				}
			}
		}()
	}
	go func() {
		wg.Wait()
		r.Journal.done(idxs)
		close(p.done)
	}()
	return p
}

// wait returns once the preparation ended. A nil preparation is none.
func (p *preparation) wait() {
	if p != nil {
		<-p.done
	}
}

// run is swap i as its wave runs it: the one prepared, or a fresh one.
func (p *preparation) run(r *Runner, i int) *swapRun {
	if p != nil {
		if sr := p.runs[i]; sr != nil {
			return sr
		}
	}
	return r.swapRun(i)
}

// result is how swap i's preparation ended, if it was prepared.
func (p *preparation) result(i int) (int, bool) {
	if p == nil {
		return 0, false
	}
	code, ok := p.codes[i]
	return code, ok
}

// abandon ends a preparation whose wave will not run now: the prepared
// swaps stop at their next step. With keep (the run was interrupted or
// paused, and goes on later) they are left interrupted, to be resumed;
// otherwise (the wave before failed) what they made is rolled back, as a
// failed wave's swaps are.
func (r *Runner) abandon(p *preparation, keep bool, why string) {
	if p == nil {
		return
	}
	p.abort.Store(true)
	p.wait()
	for _, i := range slices.Sorted(maps.Keys(p.runs)) {
		sr := p.runs[i]
		if p.codes[i] != exitPrepared {
			continue // ended on its own: rolled back, refused or pending
		}
		if keep {
			sr.st.Status = StatusInterrupted
			if err := sr.save(); err != nil {
				r.emit(Event{Event: "warning", Swap: sr.name(), Message: fmt.Sprintf("the journal could not record that %s stopped after verify: %v", sr.name(), err)})
			}
			continue
		}
		sr.st.Error = why
		code, _ := r.rollback(sr, errors.Join(ErrWaveFailed, errors.New(why)))
		r.swapOutcome(sr, code)
	}
}
