package provider

import (
	"context"
	"sync"
	"time"
)

// Expected remembers how long each kind of provider operation took (a
// snapshot, a boot, a shutdown), so that the next one of the kind is first
// asked about when it should be done rather than polled from its start.
// A fleet's canary teaches its waves: every poll a swap in a wave does not
// make is a call the rate limit leaves to the others. The kind should say
// what the duration depends on (a snapshot's disk size). Safe for
// concurrent use; the zero value knows nothing and polls as Poll does; the
// kind "" is never learned.
type Expected struct {
	// Ceiling, when set, is the longest an operation of the kind is
	// believed to take: Teach drops a value above it (a damaged cache
	// file would otherwise have a rename waited for for hours).
	Ceiling func(kind string) time.Duration

	mu sync.Mutex
	d  map[string]*expectation
}

type expectation struct {
	took   time.Duration
	shrunk time.Time // when an operation was last found done at the first check
	streak int       // such operations in a row, since took last changed
	// proven is the time from start to the last check that found an
	// operation of the kind done: a time it is known to take no longer
	// than, which is what a later run is taught (took may have been
	// shortened below it, to follow a provider grown faster).
	proven time.Duration
	// atFirst is whether that check was the first: then the operation
	// may well have been done sooner.
	atFirst bool
}

// Poll waits for an operation of the kind that started at start, as Poll
// does, except that the first check waits an interval after start or,
// once the kind has been seen to take longer, until it should be done.
//
// What it sees becomes the kind's expectation: the time from start to the
// check that found it done being asked (not answered: a check a rate limit
// held back learns nothing from the wait). Two operations in a row done at
// the first check make the expectation a little shorter, so that a
// provider grown faster is followed. Operations that were under way
// together (a wave's snapshots) count once: they are one piece of
// evidence, and ten shortenings at once would have the next wave asking
// too early.
//
// An operation not done when first asked is asked again after a
// twentieth of the expectation (at least interval), then less often: a
// boot of 40 s late by a few seconds costs a read or two, not ten.
func (e *Expected) Poll(ctx context.Context, kind string, start time.Time, interval time.Duration, check func() (bool, error)) error {
	first := true
	wrapped := func() (bool, error) {
		asked := time.Now()
		done, err := check()
		if err != nil {
			return done, err
		}
		if done {
			e.learn(kind, start, asked.Sub(start), first)
		}
		first = false
		return done, nil
	}
	expect := e.Get(kind)
	at := start.Add(max(expect, interval))
	if dl, ok := ctx.Deadline(); ok && at.After(dl.Add(-interval)) {
		// An expectation longer than the wait may last (one an earlier
		// run taught on a slower day) must not let it end unasked.
		at = dl.Add(-interval)
	}
	if err := Sleep(ctx, time.Until(at)); err != nil {
		return err
	}
	return Poll(ctx, max(interval, expect/20), wrapped)
}

// TookAtMost tells what the provider itself says the last operation of
// the kind took at most (its own start and end times), which may be far
// less than when it was found done: an operation a slower day's
// expectation first asked about late is not kept as that slow.
func (e *Expected) TookAtMost(kind string, d time.Duration) {
	if e == nil || kind == "" || d <= 0 {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if x := e.d[kind]; x != nil && x.proven > d {
		x.proven, x.atFirst = d, false
		x.took = min(x.took, d)
	}
}

// Get returns what the kind is expected to take, zero if unknown.
func (e *Expected) Get(kind string) time.Duration {
	if e == nil {
		return 0
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if x := e.d[kind]; x != nil {
		return x.took
	}
	return 0
}

func (e *Expected) learn(kind string, start time.Time, took time.Duration, first bool) {
	if e == nil || kind == "" {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.d == nil {
		e.d = map[string]*expectation{}
	}
	x := e.d[kind]
	if x == nil {
		x = &expectation{}
		e.d[kind] = x
	}
	x.proven, x.atFirst = took, first
	if first && x.took > 0 {
		// Done when first asked: it may be done sooner next time. Twice
		// in a row says so; once may be an operation that just made it
		// (the next, asked sooner, would be asked twice). Operations that
		// ran beside this one count once.
		if start.After(x.shrunk) {
			x.shrunk = time.Now()
			if x.streak++; x.streak == 2 {
				x.took -= x.took / 32
				x.streak = 0
			}
		}
		return
	}
	x.took, x.streak = took, 0
}

// Learned returns, for each kind seen done, how long it was last seen to
// take at most: what a later run may be taught. An operation found done
// at the first check may have been done before it, so its time is
// returned a little shorter, as the next operation in this process would
// be asked about: a later run that asks too early pays a call and learns
// the time again. (A kind only taught and never seen is not returned: it
// was learned by another run.)
func (e *Expected) Learned() map[string]time.Duration {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make(map[string]time.Duration, len(e.d))
	for k, x := range e.d {
		switch {
		case x.proven <= 0:
		case x.atFirst:
			out[k] = x.proven - x.proven/32
		default:
			out[k] = x.proven
		}
	}
	return out
}

// Teach makes each kind expected to take what an earlier run saw, unless
// this process has seen the kind itself: what it sees outranks what it
// was told. Kinds taught and not done when first asked are relearned as
// any other.
func (e *Expected) Teach(m map[string]time.Duration) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for k, d := range m {
		if k == "" || d <= 0 || e.Ceiling != nil && d > e.Ceiling(k) {
			continue
		}
		if e.d == nil {
			e.d = map[string]*expectation{}
		}
		if e.d[k] == nil {
			e.d[k] = &expectation{took: d}
		}
	}
}
