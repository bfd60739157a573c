package plans

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzCheck: no plan file, however broken, panics the parser or the
// validator, and every problem found has a position.
func FuzzCheck(f *testing.F) {
	files, _ := filepath.Glob("../examples/*.yaml")
	for _, file := range files {
		if b, err := os.ReadFile(file); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte("version: 1\nswaps: [{observe: 2m, probe: {error_budget: '1%'}}]\n"))
	f.Add([]byte("version: 1\nproviders: {a: &x {type: digitalocean}, b: *x}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		_, err := Check("fuzz.yaml", data)
		if es, ok := err.(Errors); ok {
			for _, e := range es {
				if e.Msg == "" {
					t.Fatalf("empty message in %v", es)
				}
			}
		}
	})
}

// FuzzDurationAndBudget: the custom scalars reject garbage without panics.
func FuzzDurationAndBudget(f *testing.F) {
	for _, s := range []string{"90s", "1h30m", "-1s", "0", "1%", "101%", "0.1%", "abc", "1e400%"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		doc := []byte("version: 1\nswaps:\n  - observe: \"" + escape(s) + "\"\n    probe: {url: 'http://x/', error_budget: \"" + escape(s) + "\"}\n")
		if d, err := Parse("f.yaml", doc); err == nil && d != nil {
			if d.Plan.Swaps[0].Observe < 0 {
				t.Fatalf("negative duration accepted from %q", s)
			}
			b := d.Plan.Swaps[0].Probe.ErrorBudget
			if b.Count < 0 || b.Ratio < 0 || b.Ratio > 1 {
				t.Fatalf("budget %+v accepted from %q", b, s)
			}
		}
	})
}

func escape(s string) string {
	out := make([]rune, 0, len(s))
	for _, r := range s {
		if r == '"' || r == '\\' || r < 0x20 || r == 0x7f || r > 0xfffd {
			continue
		}
		out = append(out, r)
	}
	return string(out)
}
