package registry

import (
	"slices"
	"sort"
	"testing"

	"github.com/vmswap/vmswap/plans"
)

// TestEveryTypeHasABuilder: the provider types a plan may name and the
// builders registered here are the same set.
func TestEveryTypeHasABuilder(t *testing.T) {
	var got []string
	for k := range builders {
		got = append(got, k)
	}
	sort.Strings(got)
	if want := plans.DriverTypes(); !slices.Equal(got, want) {
		t.Fatalf("builders for %v, types %v", got, want)
	}
}
