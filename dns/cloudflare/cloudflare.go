// Package cloudflare is vmswap's DNS driver for Cloudflare, on cloudflare-go
// v6 (the current major version, generated from Cloudflare's OpenAPI spec;
// the v0 line is the legacy client). The SDK stays inside this package.
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
	"slices"
	"strings"
	"time"

	cf "github.com/cloudflare/cloudflare-go/v6"
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
	cfg Config
	c   *cf.Client
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
	// The SDK retries 429 and 5xx itself, honouring Retry-After.
	opts := []option.RequestOption{option.WithAPIToken(cfg.Token), option.WithMaxRetries(5)}
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
	return &Provider{cfg: cfg, c: cf.NewClient(opts...)}, nil
}

// apiError turns an SDK error into one a person can act on, without
// echoing the request's headers.
func apiError(err error, format string, args ...any) error {
	what := fmt.Sprintf(format, args...)
	var ae *cf.Error
	if errors.As(err, &ae) {
		switch ae.StatusCode {
		case 401, 403:
			return fmt.Errorf("cloudflare: %s: the API refused the token (%d): check %s (it needs Zone:Read and DNS:Edit)", what, ae.StatusCode, TokenVar)
		case 404:
			return fmt.Errorf("cloudflare: %s: %w", what, provider.ErrNotFound)
		}
		msg := ae.Error()
		if i := strings.Index(msg, "\n"); i > 0 {
			msg = msg[:i]
		}
		return fmt.Errorf("cloudflare: %s: HTTP %d: %s", what, ae.StatusCode, msg)
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
		page, err := p.c.Zones.List(ctx, zones.ZoneListParams{Name: cf.F(cand)})
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
	page, err := p.c.DNS.Records.List(ctx, cfdns.RecordListParams{
		ZoneID: cf.F(z.ID),
		Name:   cf.F(cfdns.RecordListParamsName{Exact: cf.F(name)}),
		Type:   cf.F(cfdns.RecordListParamsType(typ)),
	})
	if err != nil {
		return nil, nil, apiError(err, "list %s records of %s", typ, name)
	}
	return z, page.Result, nil
}

func toRecord(name, typ string, rs []cfdns.RecordResponse) *dns.Record {
	out := &dns.Record{Name: name, Type: typ}
	for _, r := range rs {
		out.Values = append(out.Values, r.Content)
		out.Proxied = out.Proxied || r.Proxied
		ttl := int(r.TTL)
		if ttl == 1 {
			ttl = 300 // "automatic" is 300s for unproxied records
		}
		out.TTL = dns.Seconds(ttl)
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
	if rec.Type != "A" {
		return nil, fmt.Errorf("cloudflare: vmswap sets A records; %s is %s", rec.Name, rec.Type)
	}
	z, rs, err := p.records(ctx, rec.Name, rec.Type)
	if err != nil {
		return nil, err
	}
	if len(rs) == 0 {
		return nil, fmt.Errorf("cloudflare: no %s record %s to update: %w", rec.Type, rec.Name, provider.ErrNotFound)
	}
	first := rs[0]
	want := slices.Clone(rec.Values)
	var stale []cfdns.RecordResponse
	for _, r := range rs {
		if i := slices.Index(want, r.Content); i >= 0 {
			want = slices.Delete(want, i, i+1)
		} else {
			stale = append(stale, r)
		}
	}
	for _, v := range want {
		if len(stale) > 0 {
			if _, err := p.c.DNS.Records.Edit(ctx, stale[0].ID, cfdns.RecordEditParams{ZoneID: cf.F(z.ID),
				Body: cfdns.ARecordParam{Content: cf.F(v)}}); err != nil {
				return nil, apiError(err, "update %s %s", rec.Type, rec.Name)
			}
			stale = stale[1:]
			continue
		}
		if _, err := p.c.DNS.Records.New(ctx, cfdns.RecordNewParams{ZoneID: cf.F(z.ID), Body: cfdns.ARecordParam{
			Name: cf.F(first.Name), Type: cf.F(cfdns.ARecordTypeA), Content: cf.F(v), TTL: cf.F(first.TTL), Proxied: cf.F(first.Proxied)}}); err != nil {
			return nil, apiError(err, "create %s %s", rec.Type, rec.Name)
		}
	}
	for _, r := range stale {
		if _, err := p.c.DNS.Records.Delete(ctx, r.ID, cfdns.RecordDeleteParams{ZoneID: cf.F(z.ID)}); err != nil {
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
