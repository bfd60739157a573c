package cli

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/vmswap/vmswap/plans/runner"
)

// TestTermSafe: escape sequences, other controls, bidi overrides and
// invalid UTF-8 are written as \uXXXX; text, newlines, tabs and other
// scripts pass untouched; an escaped JSON string decodes to the same name.
func TestTermSafe(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"web-1 done (1.2s)\n", "web-1 done (1.2s)\n"},
		{"swap\tweb-1 — Größe 日本\n", "swap\tweb-1 — Größe 日本\n"},
		{"web-\x1b]0;pwned\x07-1\n", `web-\u001b]0;pwned\u0007-1` + "\n"},
		{"a\rb\x7fc\u0085d\n", `a\u000db\u007fc\u0085d` + "\n"},
		{"evil\u202egnp.exe", `evil\u202egnp.exe`},
		{"bad\xff\x9bbyte", `bad\ufffd\ufffdbyte`},
	} {
		var b bytes.Buffer
		n, err := termSafe{&b}.Write([]byte(tc.in))
		if err != nil || n != len(tc.in) || b.String() != tc.want {
			t.Errorf("%q: wrote %q (%d, %v), want %q", tc.in, b.String(), n, err, tc.want)
		}
	}
	var b bytes.Buffer
	termSafe{&b}.Write([]byte("{\"swap\":\"web-\u0085\"}"))
	var v struct{ Swap string }
	if err := json.Unmarshal(b.Bytes(), &v); err != nil || v.Swap != "web-\u0085" {
		t.Fatalf("JSON through termSafe: %s -> %+v %v", b.String(), v, err)
	}
}

// TestProgressOfAWave: the swaps of a wave each print their own progress
// lines, even when they differ only in numbers and come within a second;
// one swap's repeated wait is shown once a second.
func TestProgressOfAWave(t *testing.T) {
	var errb bytes.Buffer
	p, err := newPrinter(&IOStreams{Out: &bytes.Buffer{}, ErrOut: &errb}, "text")
	if err != nil {
		t.Fatal(err)
	}
	p.emit(runner.Event{Event: "progress", Swap: "f2", Message: "adding f2-764c4d to load balancer 86db"})
	p.emit(runner.Event{Event: "progress", Swap: "f3", Message: "adding f3-764c4d to load balancer 86db"})
	p.emit(runner.Event{Event: "progress", Swap: "f3", Message: "waiting for load balancer 86db to find f3-764c4d healthy (1s)"})
	p.emit(runner.Event{Event: "progress", Swap: "f3", Message: "waiting for load balancer 86db to find f3-764c4d healthy (2s)"})
	out := errb.String()
	for _, want := range []string{"f2: adding f2-764c4d", "f3: adding f3-764c4d", "healthy (1s)"} {
		if !strings.Contains(out, want) {
			t.Fatalf("missing %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "healthy (2s)") {
		t.Fatalf("a repeated wait within a second was shown twice:\n%s", out)
	}
}
