package runner

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/vmswap/vmswap/plans"
)

func TestNaturalCompare(t *testing.T) {
	names := []string{"web-10", "web-2", "web-1", "db", "web-02b", "web-2a", "web-"}
	slices.SortFunc(names, naturalCompare)
	want := []string{"db", "web-", "web-1", "web-2", "web-2a", "web-02b", "web-10"}
	if !slices.Equal(names, want) {
		t.Fatalf("got %v, want %v", names, want)
	}
}

func TestKeepUntilRounding(t *testing.T) {
	now := time.Date(2026, 12, 2, 16, 3, 27, 0, time.UTC)
	for _, c := range []struct {
		keep time.Duration
		want string
	}{
		{24 * time.Hour, "2026-12-03T16:10:00Z"}, // ten minutes: a wave shares the tag
		{time.Hour, "2026-12-02T17:06:00Z"},      // a tenth of an hour
		{time.Second, "2026-12-02T16:03:28Z"},    // too short to round
		{10 * time.Second, "2026-12-02T16:03:37Z"},
	} {
		got := keepUntil(now, c.keep)
		if got.Format(time.RFC3339) != c.want || got.Before(now.Add(c.keep)) {
			t.Errorf("keep %s from %s: until %s, want %s", c.keep, now.Format(time.RFC3339), got.Format(time.RFC3339), c.want)
		}
	}
}

// sleeps is a clock that records what it is asked to wait, and waits none.
type sleeps struct {
	now   time.Time
	slept []time.Duration
}

func (c *sleeps) Now() time.Time { return c.now }
func (c *sleeps) Sleep(_ context.Context, d time.Duration) error {
	c.slept = append(c.slept, d)
	return nil
}

// TestHoldAfterBackResumed: a rollback killed while it kept the new server
// up for cached DNS answers, resumed, keeps it up for what is left of the
// hold; it deleted the server at once, while resolvers still had its
// address.
func TestHoldAfterBackResumed(t *testing.T) {
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		desc string
		back time.Time
		want []time.Duration
	}{
		{"killed 10s into a hold of 31s", now.Add(-10 * time.Second), []time.Duration{21 * time.Second}},
		{"resumed after the hold ended", now.Add(-time.Minute), nil},
		{"a journal from before the time was kept", time.Time{}, nil},
	} {
		clk := &sleeps{now: now}
		s := &swapRun{r: &Runner{Clock: clk, Emit: func(Event) {}}, sw: &plans.Swap{Name: "web-1"}, kind: &dnsCutover{c: &plans.DNSCutover{Grace: plans.Duration(time.Second)}},
			st: &SwapState{NewID: "2", NewName: "web-1-abc", OldTTL: 30, TrafficBackAt: c.back}}
		s.holdAfterBack(context.Background())
		if !slices.Equal(clk.slept, c.want) {
			t.Errorf("%s: slept %v, want %v", c.desc, clk.slept, c.want)
		}
	}
}
