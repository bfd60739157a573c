// Package authority asks a zone's authoritative nameserver directly what it
// answers for a name, bypassing every cache. DNS drivers use it to wait until
// a change is served.
package authority

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// Lookup returns the values the server (host:port) answers for name and type
// (A, AAAA, CNAME), sorted, and the answer's TTL.
func Lookup(ctx context.Context, server, name, typ string) ([]string, uint32, error) {
	qt, ok := dns.StringToType[strings.ToUpper(typ)]
	if !ok {
		return nil, 0, fmt.Errorf("dns: unknown record type %q", typ)
	}
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qt)
	m.RecursionDesired = false
	c := &dns.Client{Timeout: 3 * time.Second}
	if _, _, err := net.SplitHostPort(server); err != nil {
		server = net.JoinHostPort(server, "53")
	}
	r, _, err := c.ExchangeContext(ctx, m, server)
	if err != nil {
		return nil, 0, fmt.Errorf("dns: ask %s for %s %s: %w", server, name, typ, err)
	}
	if r.Truncated {
		c.Net = "tcp"
		if r, _, err = c.ExchangeContext(ctx, m, server); err != nil {
			return nil, 0, fmt.Errorf("dns: ask %s for %s %s over TCP: %w", server, name, typ, err)
		}
	}
	var vals []string
	var ttl uint32
	for _, rr := range r.Answer {
		if rr.Header().Rrtype != qt {
			continue
		}
		ttl = rr.Header().Ttl
		switch v := rr.(type) {
		case *dns.A:
			vals = append(vals, v.A.String())
		case *dns.AAAA:
			vals = append(vals, v.AAAA.String())
		case *dns.CNAME:
			vals = append(vals, strings.TrimSuffix(v.Target, "."))
		}
	}
	slices.Sort(vals)
	return vals, ttl, nil
}

// WaitServed polls server every interval until it answers exactly want for
// name and type, calling progress with what it answers meanwhile.
func WaitServed(ctx context.Context, server, name, typ string, want []string, interval time.Duration, progress func(string, ...any)) error {
	want = slices.Sorted(slices.Values(want))
	t := time.NewTicker(interval)
	defer t.Stop()
	last := "it answers nothing yet"
	for {
		got, _, err := Lookup(ctx, server, name, typ)
		if err == nil && slices.Equal(got, want) {
			return nil
		}
		if err == nil {
			last = fmt.Sprint("it answers ", got)
		} else if !ending(ctx) {
			// Not what it answered before: it answers nothing now.
			last = "it did not answer the last question"
		}
		if progress != nil {
			if err != nil {
				progress("dns: %s: %v", server, err)
			} else {
				progress("dns: %s answers %s %s = %v, waiting for %v", server, name, typ, got, want)
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("dns: waiting for %s to serve %s %s %v (%s): %w", server, name, typ, want, last, ctx.Err())
		case <-t.C:
		}
	}
}

// ending reports whether ctx has ended or reached its deadline: a
// question cut short by the deadline (its socket's read deadline fires an
// instant before the context's timer) says nothing of the server.
func ending(ctx context.Context) bool {
	dl, ok := ctx.Deadline()
	return ctx.Err() != nil || ok && !time.Now().Before(dl)
}
