// Package digitalocean is vmswap's DNS driver for DigitalOcean domains (godo).
package digitalocean

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/digitalocean/godo"

	"github.com/vmswap/vmswap/dns"
	"github.com/vmswap/vmswap/dns/authority"
	"github.com/vmswap/vmswap/provider"
)

// DefaultNameserver is DigitalOcean's authoritative nameserver.
const DefaultNameserver = "ns1.digitalocean.com:53"

// Config holds every setting of the driver.
type Config struct {
	// Client is a godo client (provider/digitalocean.NewClient).
	Client *godo.Client
	// Nameserver is the authoritative server asked whether a change is
	// served (host:port). Empty: DefaultNameserver.
	Nameserver string
	// PollInterval is how often the nameserver is asked. Zero: 2s.
	PollInterval time.Duration
	// Progress receives what is being waited on. May be nil.
	Progress provider.Progress
}

// Provider implements dns.Provider.
type Provider struct {
	cfg Config
	// zones remembers the domain each name was found in: a run reads a
	// record several times, and the domain holding it does not move.
	zones sync.Map // name -> zone
}

var _ dns.Provider = (*Provider)(nil)

// New returns a Provider for cfg.
func New(cfg Config) *Provider {
	if cfg.Nameserver == "" {
		cfg.Nameserver = DefaultNameserver
	}
	if cfg.PollInterval == 0 {
		cfg.PollInterval = 2 * time.Second
	}
	return &Provider{cfg: cfg}
}

// zoneOf returns the account's domain that holds name (the longest match).
// https://docs.digitalocean.com/reference/api/api-reference/#operation/domains_list
func (p *Provider) zoneOf(ctx context.Context, name string) (string, error) {
	if z, ok := p.zones.Load(name); ok {
		return z.(string), nil
	}
	doms, _, err := p.cfg.Client.Domains.List(ctx, &godo.ListOptions{PerPage: 200})
	if err != nil {
		return "", fmt.Errorf("digitalocean: list domains: %w", err)
	}
	best := ""
	for _, d := range doms {
		if (name == d.Name || strings.HasSuffix(name, "."+d.Name)) && len(d.Name) > len(best) {
			best = d.Name
		}
	}
	if best == "" {
		return "", fmt.Errorf("digitalocean: no domain in this account holds %s: %w", name, provider.ErrNotFound)
	}
	p.zones.Store(name, best)
	return best, nil
}

func relName(name, zone string) string {
	if name == zone {
		return "@"
	}
	return strings.TrimSuffix(name, "."+zone)
}

// records reads the set of name and type. The first read of a name tries
// the domain one label up (www.example.com in example.com, the usual
// case), which costs no call if right; a domain that does not exist or
// has no such set there sends it to the list of the account's domains.
func (p *Provider) records(ctx context.Context, name, typ string) (string, []godo.DomainRecord, error) {
	name = strings.TrimSuffix(strings.ToLower(name), ".")
	if _, known := p.zones.Load(name); !known {
		if _, parent, ok := strings.Cut(name, "."); ok && strings.Contains(parent, ".") {
			recs, resp, err := p.cfg.Client.Domains.RecordsByTypeAndName(ctx, parent, typ, name, &godo.ListOptions{PerPage: 200})
			switch {
			case err == nil && len(recs) > 0:
				p.zones.Store(name, parent)
				return parent, recs, nil
			case err != nil && (resp == nil || resp.StatusCode != http.StatusNotFound):
				return "", nil, fmt.Errorf("digitalocean: list %s records of %s: %w", typ, name, err)
			}
		}
	}
	zone, err := p.zoneOf(ctx, name)
	if err != nil {
		return "", nil, err
	}
	recs, _, err := p.cfg.Client.Domains.RecordsByTypeAndName(ctx, zone, typ, name, &godo.ListOptions{PerPage: 200})
	if err != nil {
		return "", nil, fmt.Errorf("digitalocean: list %s records of %s: %w", typ, name, err)
	}
	return zone, recs, nil
}

// GetRecord implements dns.RecordGetter.
// https://docs.digitalocean.com/reference/api/api-reference/#operation/domains_list_records
func (p *Provider) GetRecord(ctx context.Context, name, typ string) (*dns.Record, error) {
	_, recs, err := p.records(ctx, name, typ)
	if err != nil {
		return nil, err
	}
	if len(recs) == 0 {
		return nil, fmt.Errorf("digitalocean: no %s record %s: %w", typ, name, provider.ErrNotFound)
	}
	return toRecord(name, typ, recs), nil
}

func toRecord(name, typ string, recs []godo.DomainRecord) *dns.Record {
	out := &dns.Record{Name: strings.TrimSuffix(strings.ToLower(name), "."), Type: typ}
	for _, r := range recs {
		out.Values = append(out.Values, r.Data)
		// Each record has its TTL: the set is cached as long as the
		// longest of them.
		out.TTL = max(out.TTL, dns.Seconds(r.TTL))
	}
	slices.Sort(out.Values)
	return out
}

// SetRecord implements dns.RecordSetter. DigitalOcean stores one value per
// record: the first record is updated in place (PUT keeps its ID and TTL),
// extra ones deleted and missing ones created. Each call converges, so a
// retried or resumed set is safe. What is returned is what the edits
// answered: the set as it is after them.
// https://docs.digitalocean.com/reference/api/api-reference/#operation/domains_update_record
func (p *Provider) SetRecord(ctx context.Context, rec dns.Record) (*dns.Record, error) {
	zone, recs, err := p.records(ctx, rec.Name, rec.Type)
	if err != nil {
		return nil, err
	}
	if len(recs) == 0 {
		return nil, fmt.Errorf("digitalocean: no %s record %s to update: %w", rec.Type, rec.Name, provider.ErrNotFound)
	}
	var have []string
	for _, r := range recs {
		have = append(have, r.Data)
	}
	// DigitalOcean has no conditional update: the set is compared with
	// Expect just before the edits, so the window left is the time of
	// these few calls.
	done, err := dns.CheckSet("digitalocean", rec, have)
	if err != nil {
		return nil, err
	}
	if done {
		return toRecord(rec.Name, rec.Type, recs), nil
	}
	ttl := recs[0].TTL
	update, create, remove := dns.Diff(recs, func(r godo.DomainRecord) string { return r.Data }, rec.Values)
	rel := relName(strings.TrimSuffix(strings.ToLower(rec.Name), "."), zone)
	edit := func(v string) *godo.DomainRecordEditRequest {
		return &godo.DomainRecordEditRequest{Type: rec.Type, Name: rel, Data: v, TTL: ttl}
	}
	var after []godo.DomainRecord
	for _, c := range update {
		r, _, err := p.cfg.Client.Domains.EditRecord(ctx, zone, c.Record.ID, edit(c.Value))
		if err != nil {
			return nil, fmt.Errorf("digitalocean: update %s record %s: %w", rec.Type, rec.Name, err)
		}
		after = append(after, *r)
	}
	for _, v := range create {
		r, _, err := p.cfg.Client.Domains.CreateRecord(ctx, zone, edit(v))
		if err != nil {
			return nil, fmt.Errorf("digitalocean: create %s record %s: %w", rec.Type, rec.Name, err)
		}
		after = append(after, *r)
	}
	for _, r := range remove {
		if _, err := p.cfg.Client.Domains.DeleteRecord(ctx, zone, r.ID); err != nil {
			return nil, fmt.Errorf("digitalocean: delete %s record %s (%s): %w", rec.Type, rec.Name, r.Data, err)
		}
	}
	for _, r := range recs {
		// Kept as they were: a value both sets hold is left alone.
		if !slices.ContainsFunc(update, func(c dns.Change[godo.DomainRecord]) bool { return c.Record.ID == r.ID }) &&
			!slices.ContainsFunc(remove, func(x godo.DomainRecord) bool { return x.ID == r.ID }) {
			after = append(after, r)
		}
	}
	return toRecord(rec.Name, rec.Type, after), nil
}

// WaitServed implements dns.ServedWaiter by asking the authoritative server.
func (p *Provider) WaitServed(ctx context.Context, rec dns.Record) error {
	err := authority.WaitServed(ctx, p.cfg.Nameserver, rec.Name, rec.Type, rec.Values, p.cfg.PollInterval, p.cfg.Progress)
	if err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("digitalocean: %w", err)
	}
	return err
}
