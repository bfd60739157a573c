// Package verify proves a new server is right before traffic reaches it: disk,
// memory and CPU as seen from inside over SSH, HTTP(S) requests sent to its
// address with the public Host header and TLS SNI, and a comparison of the
// old and new servers' answers. A failed step reports every failure at once.
package verify

import (
	"fmt"
	"math"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// Threshold is a comparison such as ">= 7.5GiB" or "> 2". Sizes take decimal
// (KB, MB, GB, TB) and binary (KiB, MiB, GiB, TiB) units; a bare number is
// a count or a byte count.
type Threshold struct {
	Op    string  // >=, >, <=, <, ==
	Value float64 // in bytes for sizes
	Text  string  // as written
	unit  string  // as written, lower case; "" for a bare number
}

// HasUnit reports whether the threshold was written with a unit.
func (t Threshold) HasUnit() bool { return t.unit != "" }

var units = map[string]float64{
	"": 1, "b": 1,
	"kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12,
	"k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12,
	"kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40,
}

// ParseThreshold parses a threshold. The error says what is expected.
func ParseThreshold(s string) (Threshold, error) {
	t := Threshold{Text: strings.TrimSpace(s)}
	rest := t.Text
	for _, op := range []string{">=", "<=", "==", ">", "<", "="} {
		if strings.HasPrefix(rest, op) {
			t.Op, rest = op, strings.TrimSpace(rest[len(op):])
			break
		}
	}
	if t.Op == "" {
		t.Op = ">="
	}
	if t.Op == "=" {
		t.Op = "=="
	}
	i := 0
	for i < len(rest) && (rest[i] >= '0' && rest[i] <= '9' || rest[i] == '.') {
		i++
	}
	num, unit := rest[:i], strings.ToLower(strings.TrimSpace(rest[i:]))
	v, err := strconv.ParseFloat(num, 64)
	if err != nil || num == "" || math.IsInf(v, 0) || math.IsNaN(v) {
		return Threshold{}, fmt.Errorf("threshold %q: want an operator and a number, like \">= 7.5GiB\" or \">= 4\"", s)
	}
	mult, ok := units[unit]
	if !ok {
		return Threshold{}, fmt.Errorf("threshold %q: unknown unit %q (use B, KB, MB, GB, TB, KiB, MiB, GiB or TiB)", s, strings.TrimSpace(rest[i:]))
	}
	t.Value, t.unit = v*mult, unit
	return t, nil
}

// Holds reports whether v satisfies the threshold.
func (t Threshold) Holds(v float64) bool {
	switch t.Op {
	case ">":
		return v > t.Value
	case "<=":
		return v <= t.Value
	case "<":
		return v < t.Value
	case "==":
		return v == t.Value
	}
	return v >= t.Value
}

// HumanBytes formats n bytes with a binary unit, as thresholds are written.
func HumanBytes(n float64) string {
	for _, u := range []struct {
		name string
		size float64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n >= u.size {
			return strconv.FormatFloat(n/u.size, 'f', 2, 64) + u.name
		}
	}
	return strconv.FormatFloat(n, 'f', 0, 64) + "B"
}

// UnmarshalYAML implements yaml.Unmarshaler.
func (t *Threshold) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("threshold: want a string like \">= 7.5GiB\"")
	}
	v, err := ParseThreshold(n.Value)
	if err != nil {
		return err
	}
	*t = v
	return nil
}

// MarshalYAML implements yaml.Marshaler.
func (t Threshold) MarshalYAML() (any, error) { return t.Text, nil }

// String returns the threshold as written.
func (t Threshold) String() string { return t.Text }
