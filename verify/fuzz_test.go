package verify

import (
	"math"
	"testing"
)

// FuzzParseThreshold: no input panics, and an accepted threshold has a
// known operator and a finite, non-negative value.
func FuzzParseThreshold(f *testing.F) {
	for _, s := range []string{">= 7.5GiB", "> 150GB", "4", "== 2", "<= 1.5 TiB", ">= .", "> 1e309", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		th, err := ParseThreshold(s)
		if err != nil {
			return
		}
		switch th.Op {
		case ">=", ">", "<=", "<", "==":
		default:
			t.Fatalf("%q: operator %q", s, th.Op)
		}
		if math.IsNaN(th.Value) || math.IsInf(th.Value, 0) || th.Value < 0 {
			t.Fatalf("%q: value %v", s, th.Value)
		}
	})
}
