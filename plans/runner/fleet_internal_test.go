package runner

import (
	"slices"
	"testing"
	"time"
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
