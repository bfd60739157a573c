// Package cloudflare is vmswap's DNS driver for Cloudflare, on cloudflare-go
// v6 (the current major version, generated from Cloudflare's OpenAPI spec;
// the v0 line is the legacy client). The SDK stays inside this package.
//
// Only the dns and zones services are linked: importing the SDK's root
// package would link every Cloudflare service (some 100 MB of code), which
// is why lego dropped the SDK; constructing the two services directly keeps
// vmswap's binary and memory small.
//
// A record's content is changed with PATCH, so proxying, TTL, comment and
// tags are kept. A proxied record takes effect at Cloudflare's edge (clients
// never see or cache the origin address), so the change is served when the
// API shows it; an unproxied one when the zone's authoritative nameserver
// answers it.
package cloudflare

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"reflect"
	"slices"
	"strings"
	"time"

	cfdns "github.com/cloudflare/cloudflare-go/v6/dns"
	"github.com/cloudflare/cloudflare-go/v6/option"
	"github.com/cloudflare/cloudflare-go/v6/zones"

	"github.com/vmswap/vmswap/dns"
	"github.com/vmswap/vmswap/dns/authority"
	"github.com/vmswap/vmswap/provider"
)

// TokenVar is the environment variable holding the API token.
const TokenVar = "CLOUDFLARE_API_TOKEN"

// Config holds every setting of the driver.
type Config struct {
	// Token is an API token with Zone:Read and DNS:Edit. Never logged.
	Token string
	// BaseURL overrides the API endpoint (the lab). Empty: the real API.
	BaseURL string
	// HTTPClient is the transport. Nil: the SDK's default.
	HTTPClient *http.Client
	// Nameserver is the authoritative server (host:port) asked whether an
	// unproxied change is served. Empty: the zone's first Cloudflare
	// nameserver on port 53.
	Nameserver string
	// PollInterval of the waits. Zero: 2s.
	PollInterval time.Duration
	// Progress receives what is being waited on. May be nil.
	Progress provider.Progress
}

// ConfigFromEnv reads the token from CLOUDFLARE_API_TOKEN.
func ConfigFromEnv() (Config, error) {
	t := strings.TrimSpace(os.Getenv(TokenVar))
	if t == "" {
		return Config{}, fmt.Errorf("cloudflare: no API token: set %s to a token with Zone:Read and DNS:Edit", TokenVar)
	}
	return Config{Token: t}, nil
}

// Provider implements dns.Provider.
type Provider struct {
	cfg       Config
	recordSvc *cfdns.RecordService
	zones     *zones.ZoneService
}

var _ dns.Provider = (*Provider)(nil)

// New returns a Provider for cfg. It never reads the environment.
func New(cfg Config) (*Provider, error) {
	if cfg.Token == "" {
		return nil, fmt.Errorf("cloudflare: no API token: set %s", TokenVar)
	}
	if cfg.PollInterval == 0 {
		cfg.PollInterval = 2 * time.Second
	}
	// The SDK retries 429 and 5xx itself, honouring Retry-After. Its
	// defaults (which read CLOUDFLARE_* variables) are not used: the
	// Config says everything.
	opts := []option.RequestOption{option.WithEnvironmentProduction(), option.WithAPIToken(cfg.Token), option.WithMaxRetries(5)}
	if cfg.BaseURL != "" {
		u := cfg.BaseURL
		if !strings.HasSuffix(u, "/") {
			u += "/"
		}
		opts = append(opts, option.WithBaseURL(u))
	}
	if cfg.HTTPClient != nil {
		opts = append(opts, option.WithHTTPClient(cfg.HTTPClient))
	}
	return &Provider{cfg: cfg, recordSvc: cfdns.NewRecordService(opts...), zones: zones.NewZoneService(opts...)}, nil
}

// statusOf returns the HTTP status of an SDK API error (0 for others). The
// SDK's error type lives in its root package, which this driver does not
// link; its StatusCode field is read instead.
func statusOf(err error) int {
	for e := err; e != nil; e = errors.Unwrap(e) {
		v := reflect.ValueOf(e)
		if v.Kind() == reflect.Pointer && v.Elem().Kind() == reflect.Struct {
			if f := v.Elem().FieldByName("StatusCode"); f.IsValid() && f.Kind() == reflect.Int {
				return int(f.Int())
			}
		}
	}
	return 0
}

// apiError turns an SDK error into one a person can act on, without
// echoing the request's headers.
func apiError(err error, format string, args ...any) error {
	what := fmt.Sprintf(format, args...)
	if code := statusOf(err); code != 0 {
		switch code {
		case 401, 403:
			return fmt.Errorf("cloudflare: %s: the API refused the token (%d): check %s (it needs Zone:Read and DNS:Edit)", what, code, TokenVar)
		case 404:
			return fmt.Errorf("cloudflare: %s: %w", what, provider.ErrNotFound)
		}
		msg := err.Error()
		if i := strings.Index(msg, "\n"); i > 0 {
			msg = msg[:i]
		}
		return fmt.Errorf("cloudflare: %s: HTTP %d: %s", what, code, msg)
	}
	return fmt.Errorf("cloudflare: %s: %w", what, err)
}

// zone finds the zone holding name: the longest of its suffixes that is a
// zone of the account.
// https://developers.cloudflare.com/api/resources/zones/methods/list/
func (p *Provider) zone(ctx context.Context, name string) (*zones.Zone, error) {
	labels := strings.Split(name, ".")
	for i := 0; i < len(labels)-1; i++ {
		cand := strings.Join(labels[i:], ".")
		var q zones.ZoneListParams
		q.Name.Value, q.Name.Present = cand, true
		page, err := p.zones.List(ctx, q)
		if err != nil {
			return nil, apiError(err, "find the zone of %s", name)
		}
		for _, z := range page.Result {
			if z.Name == cand {
				return &z, nil
			}
		}
	}
	return nil, fmt.Errorf("cloudflare: no zone of this account holds %s: %w", name, provider.ErrNotFound)
}

func (p *Provider) records(ctx context.Context, name, typ string) (*zones.Zone, []cfdns.RecordResponse, error) {
	name = strings.TrimSuffix(strings.ToLower(name), ".")
	z, err := p.zone(ctx, name)
	if err != nil {
		return nil, nil, err
	}
	// The params' fields are the SDK's param.Field (an internal type): set
	// Value and Present, as its F helper does.
	var q cfdns.RecordListParams
	q.ZoneID.Value, q.ZoneID.Present = z.ID, true
	var n cfdns.RecordListParamsName
	n.Exact.Value, n.Exact.Present = name, true
	q.Name.Value, q.Name.Present = n, true
	q.Type.Value, q.Type.Present = cfdns.RecordListParamsType(typ), true
	page, err := p.recordSvc.List(ctx, q)
	if err != nil {
		return nil, nil, apiError(err, "list %s records of %s", typ, name)
	}
	return z, page.Result, nil
}

func toRecord(name, typ string, rs []cfdns.RecordResponse) *dns.Record {
	// The set is proxied only if every record is: an unproxied one is
	// answered to clients, who cache it for its TTL, so the set's TTL is the
	// longest of the unproxied records'.
	out := &dns.Record{Name: name, Type: typ, Proxied: true}
	for _, r := range rs {
		out.Values = append(out.Values, r.Content)
		ttl := dns.Seconds(r.TTL)
		if ttl == 1 {
			ttl = 300 // "automatic" is 300s for unproxied records
		}
		switch {
		case !r.Proxied && out.Proxied:
			out.Proxied, out.TTL = false, ttl
		case r.Proxied == out.Proxied:
			out.TTL = max(out.TTL, ttl)
		}
	}
	slices.Sort(out.Values)
	return out
}

// GetRecord implements dns.RecordGetter.
// https://developers.cloudflare.com/api/resources/dns/subresources/records/methods/list/
func (p *Provider) GetRecord(ctx context.Context, name, typ string) (*dns.Record, error) {
	_, rs, err := p.records(ctx, name, typ)
	if err != nil {
		return nil, err
	}
	if len(rs) == 0 {
		return nil, fmt.Errorf("cloudflare: no %s record %s: %w", typ, name, provider.ErrNotFound)
	}
	return toRecord(strings.TrimSuffix(strings.ToLower(name), "."), typ, rs), nil
}

// SetRecord implements dns.RecordSetter: the first record whose content
// must change is PATCHed (keeping proxied, TTL, comment and tags), records
// no longer wanted are deleted, and missing values are created like the
// first record. Each call converges, so a retried set is safe.
// https://developers.cloudflare.com/api/resources/dns/subresources/records/methods/edit/
func (p *Provider) SetRecord(ctx context.Context, rec dns.Record) (*dns.Record, error) {
	if rec.Type != "A" && rec.Type != "AAAA" {
		return nil, fmt.Errorf("cloudflare: vmswap sets A and AAAA records; %s is %s", rec.Name, rec.Type)
	}
	z, rs, err := p.records(ctx, rec.Name, rec.Type)
	if err != nil {
		return nil, err
	}
	if len(rs) == 0 {
		return nil, fmt.Errorf("cloudflare: no %s record %s to update: %w", rec.Type, rec.Name, provider.ErrNotFound)
	}
	var have []string
	for _, r := range rs {
		have = append(have, r.Content)
	}
	// Cloudflare has no conditional update: compared just before the edits.
	done, err := dns.CheckSet("cloudflare", rec, have)
	if err != nil {
		return nil, err
	}
	if done {
		return p.GetRecord(ctx, rec.Name, rec.Type)
	}
	first := rs[0]
	update, create, remove := dns.Diff(rs, func(r cfdns.RecordResponse) string { return r.Content }, rec.Values)
	for _, c := range update {
		var e cfdns.RecordEditParams
		e.ZoneID.Value, e.ZoneID.Present = z.ID, true
		// PATCH: only the content; proxied, TTL, comment, tags stay.
		if rec.Type == "AAAA" {
			var body cfdns.AAAARecordParam
			body.Content.Value, body.Content.Present = c.Value, true
			e.Body = body
		} else {
			var body cfdns.ARecordParam
			body.Content.Value, body.Content.Present = c.Value, true
			e.Body = body
		}
		if _, err := p.recordSvc.Edit(ctx, c.Record.ID, e); err != nil {
			return nil, apiError(err, "update %s %s", rec.Type, rec.Name)
		}
	}
	for _, v := range create {
		var np cfdns.RecordNewParams
		np.ZoneID.Value, np.ZoneID.Present = z.ID, true
		if rec.Type == "AAAA" {
			var body cfdns.AAAARecordParam
			body.Content.Value, body.Content.Present = v, true
			body.Name.Value, body.Name.Present = first.Name, true
			body.Type.Value, body.Type.Present = cfdns.AAAARecordTypeAAAA, true
			body.TTL.Value, body.TTL.Present = first.TTL, true
			body.Proxied.Value, body.Proxied.Present = first.Proxied, true
			np.Body = body
		} else {
			var body cfdns.ARecordParam
			body.Content.Value, body.Content.Present = v, true
			body.Name.Value, body.Name.Present = first.Name, true
			body.Type.Value, body.Type.Present = cfdns.ARecordTypeA, true
			body.TTL.Value, body.TTL.Present = first.TTL, true
			body.Proxied.Value, body.Proxied.Present = first.Proxied, true
			np.Body = body
		}
		if _, err := p.recordSvc.New(ctx, np); err != nil {
			return nil, apiError(err, "create %s %s", rec.Type, rec.Name)
		}
	}
	for _, r := range remove {
		var dp cfdns.RecordDeleteParams
		dp.ZoneID.Value, dp.ZoneID.Present = z.ID, true
		if _, err := p.recordSvc.Delete(ctx, r.ID, dp); err != nil {
			return nil, apiError(err, "delete %s %s (%s)", rec.Type, rec.Name, r.Content)
		}
	}
	return p.GetRecord(ctx, rec.Name, rec.Type)
}

// WaitServed implements dns.ServedWaiter. Proxied: until the API shows the
// values (the edge serves what the API holds). Unproxied: until the zone's
// authoritative nameserver answers them.
func (p *Provider) WaitServed(ctx context.Context, rec dns.Record) error {
	cur, err := p.GetRecord(ctx, rec.Name, rec.Type)
	if err != nil {
		return err
	}
	if cur.Proxied {
		return provider.Poll(ctx, p.cfg.PollInterval, func() (bool, error) {
			cur, err := p.GetRecord(ctx, rec.Name, rec.Type)
			if err != nil {
				return false, err
			}
			return slices.Equal(cur.Values, slices.Sorted(slices.Values(rec.Values))), nil
		})
	}
	ns := p.cfg.Nameserver
	if ns == "" {
		z, err := p.zone(ctx, strings.TrimSuffix(strings.ToLower(rec.Name), "."))
		if err != nil {
			return err
		}
		if len(z.NameServers) == 0 {
			return fmt.Errorf("cloudflare: zone %s reports no nameservers: set nameserver in the provider block", z.Name)
		}
		ns = net.JoinHostPort(z.NameServers[0], "53")
	}
	if err := authority.WaitServed(ctx, ns, rec.Name, rec.Type, rec.Values, p.cfg.PollInterval, p.cfg.Progress); err != nil {
		return fmt.Errorf("cloudflare: %w", err)
	}
	return nil
}
