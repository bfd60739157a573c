package provider_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vmswap/vmswap/provider"
)

// op is an operation that is done took after it started.
func op(start time.Time, took time.Duration, checks *int) func() (bool, error) {
	return func() (bool, error) {
		*checks++
		return time.Since(start) >= took, nil
	}
}

func TestExpectedLearnsFromTheFirstOperation(t *testing.T) {
	var e provider.Expected
	ctx := context.Background()
	const took, interval = 300 * time.Millisecond, 10 * time.Millisecond

	first := 0
	start := time.Now()
	if err := e.Poll(ctx, "snapshot", start, interval, op(start, took, &first)); err != nil {
		t.Fatal(err)
	}
	if first < 4 {
		t.Fatalf("the first operation was checked %d times: it should have been polled from its start", first)
	}
	if got := e.Get("snapshot"); got < took || got > took+interval*10 {
		t.Fatalf("learned %s for an operation that took %s", got, took)
	}
	// The next ones of the kind are asked about when they should be done:
	// once or twice each, not from their start.
	for i := range 5 {
		n := 0
		start := time.Now()
		if err := e.Poll(ctx, "snapshot", start, interval, op(start, took, &n)); err != nil {
			t.Fatal(err)
		}
		if n > 2 {
			t.Fatalf("operation %d was checked %d times, knowing it takes about %s", i+2, n, e.Get("snapshot"))
		}
	}
	if e.Get("boot") != 0 {
		t.Fatal("another kind was given an expectation")
	}
}

func TestExpectedFollowsAFasterProvider(t *testing.T) {
	var e provider.Expected
	ctx := context.Background()
	n := 0
	start := time.Now()
	e.Poll(ctx, "boot", start, 5*time.Millisecond, op(start, 100*time.Millisecond, &n))
	learned := e.Get("boot")
	for range 60 {
		start := time.Now()
		e.Poll(ctx, "boot", start, 5*time.Millisecond, op(start, 20*time.Millisecond, &n))
	}
	if got := e.Get("boot"); got >= learned/2 {
		t.Fatalf("after sixty boots of 20ms the expectation is still %s (was %s)", got, learned)
	}
}

func TestExpectedEndsWithItsContext(t *testing.T) {
	var e provider.Expected
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err := e.Poll(ctx, "x", time.Now(), time.Millisecond, func() (bool, error) { return false, nil })
	if err != context.DeadlineExceeded {
		t.Fatalf("got %v", err)
	}
}

func TestSharedReadsNeverReturnAnOlderRead(t *testing.T) {
	var s provider.SharedReads[int64]
	var version, calls atomic.Int64
	release := make(chan struct{})
	read := func(context.Context) (int64, error) {
		calls.Add(1)
		v := version.Load()
		<-release
		return v, nil
	}
	ctx := context.Background()
	// A read under way sees version 0.
	first := make(chan int64)
	go func() { v, _ := s.Do(ctx, "lb", read); first <- v }()
	for calls.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	// Then a caller changes the thing and reads: it must not get the
	// read that began before its change.
	version.Store(1)
	later := make(chan int64, 10)
	for range 10 {
		go func() { v, _ := s.Do(ctx, "lb", read); later <- v }()
	}
	time.Sleep(20 * time.Millisecond)
	close(release)
	if v := <-first; v != 0 {
		t.Fatalf("first read: %d", v)
	}
	for range 10 {
		if v := <-later; v != 1 {
			t.Fatalf("a caller that asked after the change got version %d", v)
		}
	}
	if n := calls.Load(); n != 2 {
		t.Fatalf("eleven callers made %d calls, want 2", n)
	}
}

func TestSharedReadsCallerGivesUp(t *testing.T) {
	var s provider.SharedReads[int]
	block := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	go func() { time.Sleep(10 * time.Millisecond); cancel() }()
	_, err := s.Do(ctx, "k", func(context.Context) (int, error) { <-block; return 1, nil })
	if err != context.Canceled {
		t.Fatalf("got %v", err)
	}
	// The read goes on for whoever else waits on it.
	done := make(chan int)
	go func() {
		v, _ := s.Do(context.Background(), "k", func(context.Context) (int, error) { return 2, nil })
		done <- v
	}()
	close(block)
	if v := <-done; v != 2 {
		t.Fatalf("a later caller got %d, want its own fresh read 2", v)
	}
}

func TestSharedReadsMaxAge(t *testing.T) {
	s := provider.SharedReads[int]{MaxAge: time.Hour}
	calls := 0
	read := func(context.Context) (int, error) { calls++; return calls, nil }
	ctx := context.Background()
	a, _ := s.Do(ctx, "ips", read)
	b, _ := s.Do(ctx, "ips", read)
	if a != 1 || b != 1 || calls != 1 {
		t.Fatalf("within MaxAge: got %d then %d after %d calls", a, b, calls)
	}
	s.Forget("ips")
	if c, _ := s.Do(ctx, "ips", read); c != 2 {
		t.Fatalf("after Forget: got %d, want a new read", c)
	}
	if _, err := s.Do(ctx, "lbs", func(context.Context) (int, error) { return 0, context.DeadlineExceeded }); err == nil {
		t.Fatal("no error")
	}
	if v, err := s.Do(ctx, "lbs", read); err != nil || v != 3 {
		t.Fatalf("a failed read was kept: %d %v", v, err)
	}
}

func TestExpectedKindless(t *testing.T) {
	var e provider.Expected
	n := 0
	start := time.Now()
	if err := e.Poll(context.Background(), "", start, time.Millisecond, op(start, 20*time.Millisecond, &n)); err != nil {
		t.Fatal(err)
	}
	if e.Get("") != 0 {
		t.Fatal("the kind \"\" was learned")
	}
}

// A check held back (by a rate limit's wait) must not teach the wait: the
// canary of a fleet once taught its waves a 44 s shutdown that way.
func TestExpectedLearnsNothingFromAHeldBackCheck(t *testing.T) {
	var e provider.Expected
	const interval, took, held = 10 * time.Millisecond, 30 * time.Millisecond, 400 * time.Millisecond
	start := time.Now()
	calls := 0
	err := e.Poll(context.Background(), "shutdown", start, interval, func() (bool, error) {
		calls++
		if calls == 2 {
			time.Sleep(held) // the limiter holds this request back
		}
		return time.Since(start) >= took, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := e.Get("shutdown"); got >= took+2*interval {
		t.Fatalf("learned %s for an operation done within %s whose check was held back %s", got, took+interval, held)
	}
	if e.Get("shutdown") == 0 {
		t.Fatal("learned nothing at all")
	}
}

// TestExpectedShrinksOnceForAWave: ten operations under way together, each
// done when first asked, shorten the expectation once, not ten times (the
// next wave would ask too early and poll), and one that is late is asked
// again after a fraction of the expectation, not every interval.
func TestExpectedShrinksOnceForAWave(t *testing.T) {
	var e provider.Expected
	ctx := context.Background()
	const took, interval = 200 * time.Millisecond, time.Millisecond
	n := 0
	start := time.Now()
	e.Poll(ctx, "snapshot", start, interval, op(start, took, &n))
	learned := e.Get("snapshot")
	done := make(chan int)
	for range 10 {
		go func() {
			n := 0
			start := time.Now()
			e.Poll(ctx, "snapshot", start, interval, func() (bool, error) { n++; return time.Since(start) >= took, nil })
			done <- n
		}()
	}
	for range 10 {
		if n := <-done; n != 1 {
			t.Fatalf("an operation of the wave was checked %d times", n)
		}
	}
	if got, want := e.Get("snapshot"), learned-learned/32; got < want {
		t.Fatalf("the wave shortened the expectation from %s to %s (once would be %s)", learned, got, want)
	}
	// One that takes a quarter longer: a few reads, not one per interval.
	late := 0
	start = time.Now()
	e.Poll(ctx, "snapshot", start, interval, op(start, learned*5/4, &late))
	if late > 6 {
		t.Fatalf("an operation 25%% late was checked %d times", late)
	}
}

// TestExpectedTaughtByAnEarlierRun: a kind taught is asked about once,
// when it should be done; what is learned is returned for the next run,
// a little shorter when found done at the first check (it may have been
// done sooner), as it is when the check came after the operation; a kind
// only taught is not returned; what the provider says an operation took
// bounds what is kept.
func TestExpectedTaughtByAnEarlierRun(t *testing.T) {
	var e provider.Expected
	ctx := context.Background()
	const took, interval = 200 * time.Millisecond, 10 * time.Millisecond
	e.Teach(map[string]time.Duration{"snapshot": 250 * time.Millisecond, "boot": time.Hour, "": time.Second, "x": -1})
	n := 0
	start := time.Now()
	if err := e.Poll(ctx, "snapshot", start, interval, op(start, took, &n)); err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Fatalf("a taught snapshot was checked %d times", n)
	}
	got := e.Learned()
	if len(got) != 1 || got["snapshot"] < 250*time.Millisecond*31/32 || got["snapshot"] > 300*time.Millisecond*31/32 {
		t.Fatalf("learned %v", got)
	}
	// Seen in this process: a teaching does not overrule it.
	e.Teach(map[string]time.Duration{"snapshot": time.Hour})
	if e.Get("snapshot") > time.Second {
		t.Fatalf("taught over what was seen: %s", e.Get("snapshot"))
	}
	// Not done at the first check: the time of the check that found it.
	e.Teach(map[string]time.Duration{"rename": 20 * time.Millisecond})
	start = time.Now()
	e.Poll(ctx, "rename", start, interval, op(start, 100*time.Millisecond, &n))
	if r := e.Learned()["rename"]; r < 100*time.Millisecond || r > 200*time.Millisecond {
		t.Fatalf("rename learned as %s", r)
	}
	// Taught as slow, found done when first asked, and the provider says
	// it took far less: the next run is taught that.
	e.Teach(map[string]time.Duration{"shutdown": 300 * time.Millisecond})
	start = time.Now()
	e.Poll(ctx, "shutdown", start, interval, op(start, 20*time.Millisecond, &n))
	e.TookAtMost("shutdown", 40*time.Millisecond)
	if s := e.Learned()["shutdown"]; s != 40*time.Millisecond {
		t.Fatalf("shutdown learned as %s, the provider said at most 40ms", s)
	}
}

// TestExpectedAsksBeforeItsDeadline: an expectation longer than the wait
// may last (taught on a slower day) still gets a check before the
// context's deadline, which finds the operation done.
func TestExpectedAsksBeforeItsDeadline(t *testing.T) {
	var e provider.Expected
	e.Teach(map[string]time.Duration{"boot": time.Hour})
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	n := 0
	start := time.Now()
	if err := e.Poll(ctx, "boot", start, 20*time.Millisecond, op(start, 50*time.Millisecond, &n)); err != nil {
		t.Fatalf("a boot of 50ms, taught as an hour, within 300ms: %v after %d checks", err, n)
	}
}

// TestExpectedCeiling: a taught value above the kind's ceiling (a damaged
// cache) is not used; one below it is.
func TestExpectedCeiling(t *testing.T) {
	e := provider.Expected{Ceiling: func(string) time.Duration { return time.Minute }}
	e.Teach(map[string]time.Duration{"rename": 2 * time.Hour, "boot": 40 * time.Second})
	if e.Get("rename") != 0 || e.Get("boot") != 40*time.Second {
		t.Fatalf("rename %s, boot %s", e.Get("rename"), e.Get("boot"))
	}
}
