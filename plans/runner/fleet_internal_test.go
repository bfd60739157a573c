package runner

import (
	"slices"
	"testing"
)

func TestNaturalCompare(t *testing.T) {
	names := []string{"web-10", "web-2", "web-1", "db", "web-02b", "web-2a", "web-"}
	slices.SortFunc(names, naturalCompare)
	want := []string{"db", "web-", "web-1", "web-2", "web-2a", "web-02b", "web-10"}
	if !slices.Equal(names, want) {
		t.Fatalf("got %v, want %v", names, want)
	}
}
