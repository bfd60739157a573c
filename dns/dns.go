// Package dns defines what vmswap needs from a DNS provider to move traffic by
// changing a record: read it, replace its values, and wait until the
// authoritative servers answer the new values. Drivers live in subpackages.
//
// Every method honours ctx, is safe for concurrent use, and returns errors
// that never contain credentials.
package dns

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"
)

// Record is a record set: every value of one name and type.
type Record struct {
	// Name is fully qualified, without the trailing dot: www.example.com.
	Name string `json:"name" yaml:"name"`
	// Type is A, AAAA or CNAME.
	Type   string   `json:"type" yaml:"type"`
	Values []string `json:"values" yaml:"values"`
	TTL    Seconds  `json:"ttl" yaml:"ttl"`
	// Proxied is true for a record served through the provider's proxy
	// (Cloudflare): clients never see or cache the values.
	Proxied bool `json:"proxied,omitempty" yaml:"proxied,omitempty"`
	// Expect, when not nil, makes SetRecord a compare-and-swap: the set is
	// changed only if it holds exactly these values now. It is an input of
	// SetRecord only.
	Expect []string `json:"-" yaml:"-"`
}

// ErrChanged is returned (wrapped) by SetRecord when the set no longer
// holds the values in Record.Expect: someone else changed it. Nothing was
// changed.
var ErrChanged = errors.New("the record set changed since it was read")

// Unchanged reports whether have holds exactly expect (in any order), for
// drivers checking Record.Expect. A nil expect always holds.
func Unchanged(have, expect []string) bool {
	if expect == nil {
		return true
	}
	return slices.Equal(slices.Sorted(slices.Values(have)), slices.Sorted(slices.Values(expect)))
}

// CheckSet is how every driver's SetRecord starts once it has read the set
// (have): done when the set already holds rec.Values (a repeated call), an
// error wrapping ErrChanged when it holds something else than rec.Expect,
// else neither and the driver changes the set.
func CheckSet(driver string, rec Record, have []string) (done bool, err error) {
	if Unchanged(have, rec.Values) {
		return true, nil
	}
	if !Unchanged(have, rec.Expect) {
		return false, fmt.Errorf("%s: %s %s holds %v, not %v as read before: %w", driver, rec.Name, rec.Type, have, rec.Expect, ErrChanged)
	}
	return false, nil
}

// Seconds is a TTL.
type Seconds int

// Duration returns the TTL as a time.Duration.
func (s Seconds) Duration() time.Duration { return time.Duration(s) * time.Second }

// RecordGetter reads record sets.
type RecordGetter interface {
	// GetRecord returns the record set of name and type, or an error
	// wrapping provider.ErrNotFound.
	GetRecord(ctx context.Context, name, typ string) (*Record, error)
}

// RecordSetter replaces record sets.
type RecordSetter interface {
	// SetRecord replaces the values of the record set rec.Name/rec.Type with
	// rec.Values, keeping its TTL and every other setting (proxying,
	// comments). It returns the record set as the provider now holds it.
	// A set that already holds rec.Values is left as it is (a repeated call
	// is safe). With rec.Expect, a set holding anything else than Expect
	// (or rec.Values) is not changed and the error wraps ErrChanged. A
	// failed call may have changed the set: read it again.
	SetRecord(ctx context.Context, rec Record) (*Record, error)
}

// ServedWaiter waits for a change to reach the authoritative servers.
type ServedWaiter interface {
	// WaitServed waits until the zone's authoritative servers answer
	// rec.Values for rec.Name.
	WaitServed(ctx context.Context, rec Record) error
}

// Provider is everything a DNS cutover needs.
type Provider interface {
	RecordGetter
	RecordSetter
	ServedWaiter
}
