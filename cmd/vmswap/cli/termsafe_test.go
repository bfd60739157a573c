package cli

import (
	"bytes"
	"encoding/json"
	"testing"
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
