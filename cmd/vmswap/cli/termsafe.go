package cli

import (
	"fmt"
	"io"
	"unicode"
	"unicode/utf8"
)

// termSafe is a writer for what people read: control characters (but
// newline and tab), invalid UTF-8 and bidirectional overrides in names that
// came from a plan or a provider are written as \uXXXX, so that a server
// named with an escape sequence cannot retitle, recolour or rewrite the
// operator's terminal. Inside a JSON string the escape decodes to the same
// character.
type termSafe struct{ w io.Writer }

func (t termSafe) Write(p []byte) (int, error) {
	if clean(p) {
		return t.w.Write(p)
	}
	out := make([]byte, 0, len(p)+16)
	for i := 0; i < len(p); {
		r, n := utf8.DecodeRune(p[i:])
		switch {
		case r == utf8.RuneError && n <= 1:
			out = append(out, `\ufffd`...)
		case unsafeRune(r):
			out = fmt.Appendf(out, `\u%04x`, r)
		default:
			out = append(out, p[i:i+n]...)
		}
		i += n
	}
	if _, err := t.w.Write(out); err != nil {
		return 0, err
	}
	return len(p), nil
}

func clean(p []byte) bool {
	for _, b := range p {
		if b >= utf8.RuneSelf || b < 0x20 && b != '\n' && b != '\t' || b == 0x7f {
			return false
		}
	}
	return true
}

func unsafeRune(r rune) bool {
	if r == '\n' || r == '\t' {
		return false
	}
	return unicode.IsControl(r) || r >= 0x202a && r <= 0x202e || r >= 0x2066 && r <= 0x2069
}
