package dns

import (
	"fmt"
	"testing"
)

func TestDiff(t *testing.T) {
	id := func(s string) string { return s }
	tests := []struct {
		desc, have, want, out string
	}{
		{"same", "a", "a", "update [] create [] remove []"},
		{"replace one", "a", "b", "update [{a b}] create [] remove []"},
		{"one to two", "a", "b c", "update [{a b}] create [c] remove []"},
		{"two to one, keeping the match", "a b", "b", "update [] create [] remove [a]"},
		{"two to two, one kept", "a b", "b c", "update [{a c}] create [] remove []"},
	}
	split := func(s string) []string {
		var out []string
		for _, f := range []rune(s) {
			if f != ' ' {
				out = append(out, string(f))
			}
		}
		return out
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			u, c, r := Diff(split(tt.have), id, split(tt.want))
			if got := fmt.Sprintf("update %v create %v remove %v", u, c, r); got != tt.out {
				t.Fatalf("%s", got)
			}
		})
	}
}
