// Package hetzner is vmswap's DNS driver for Hetzner DNS in the Cloud API
// (zones and rrsets, hcloud-go). A record set's values are replaced with
// the set_records action, which keeps its TTL; the change is served once
// the zone's authoritative nameservers answer it.
package hetzner

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/hetznercloud/hcloud-go/v2/hcloud"

	"github.com/vmswap/vmswap/dns"
	"github.com/vmswap/vmswap/dns/authority"
	"github.com/vmswap/vmswap/provider"
	hz "github.com/vmswap/vmswap/provider/hetzner"
)

// Config holds every setting of the driver.
type Config struct {
	// Client is an hcloud-go client (provider/hetzner.NewClient).
	Client *hcloud.Client
	// Nameserver is the authoritative server asked whether a change is
	// served (host:port). Empty: the zone's first assigned nameserver on
	// port 53.
	Nameserver string
	// PollInterval is how often the nameserver is asked. Zero: 2s.
	PollInterval time.Duration
	// Progress receives what is being waited on. May be nil.
	Progress provider.Progress
}

// Provider implements dns.Provider.
type Provider struct{ cfg Config }

var _ dns.Provider = (*Provider)(nil)

// New returns a Provider for cfg.
func New(cfg Config) *Provider {
	if cfg.PollInterval == 0 {
		cfg.PollInterval = 2 * time.Second
	}
	return &Provider{cfg: cfg}
}

func canon(name string) string { return strings.TrimSuffix(strings.ToLower(name), ".") }

// zoneOf returns the project's zone that holds name (the longest match).
// https://docs.hetzner.cloud/reference/cloud#zones-list-zones
func (p *Provider) zoneOf(ctx context.Context, name string) (*hcloud.Zone, error) {
	zones, err := p.cfg.Client.Zone.All(ctx)
	if err != nil {
		return nil, hz.Wrap(err, "list zones")
	}
	var best *hcloud.Zone
	for _, z := range zones {
		zn := canon(z.Name)
		if (name == zn || strings.HasSuffix(name, "."+zn)) && (best == nil || len(zn) > len(canon(best.Name))) {
			best = z
		}
	}
	if best == nil {
		return nil, fmt.Errorf("hetzner: no zone in this project holds %s: %w", name, provider.ErrNotFound)
	}
	return best, nil
}

func relName(name, zone string) string {
	if name == zone {
		return "@"
	}
	return strings.TrimSuffix(name, "."+zone)
}

// rrset reads the record set of name and type, and its zone.
// https://docs.hetzner.cloud/reference/cloud#zone-rrsets-get-an-rrset
func (p *Provider) rrset(ctx context.Context, name, typ string) (*hcloud.Zone, *hcloud.ZoneRRSet, error) {
	name = canon(name)
	z, err := p.zoneOf(ctx, name)
	if err != nil {
		return nil, nil, err
	}
	rr, _, err := p.cfg.Client.Zone.GetRRSetByNameAndType(ctx, z, relName(name, canon(z.Name)), hcloud.ZoneRRSetType(typ))
	if err != nil {
		return nil, nil, hz.Wrap(err, "get %s record %s", typ, name)
	}
	if rr == nil || len(rr.Records) == 0 {
		return nil, nil, fmt.Errorf("hetzner: no %s record %s: %w", typ, name, provider.ErrNotFound)
	}
	rr.Zone = z
	return z, rr, nil
}

// value turns a record value as the API holds it (zone-file presentation:
// a CNAME's target ends with a dot) into vmswap's form, and back.
func value(typ, v string) string {
	if typ == "CNAME" {
		return canon(v)
	}
	if ip := net.ParseIP(v); ip != nil {
		return ip.String()
	}
	return v
}

func apiValue(typ, v string) string {
	if typ == "CNAME" && !strings.HasSuffix(v, ".") {
		return v + "."
	}
	return v
}

func (p *Provider) toRecord(name, typ string, z *hcloud.Zone, rr *hcloud.ZoneRRSet) *dns.Record {
	ttl := z.TTL
	if rr.TTL != nil {
		ttl = *rr.TTL
	}
	out := &dns.Record{Name: canon(name), Type: typ, TTL: dns.Seconds(ttl)}
	for _, r := range rr.Records {
		out.Values = append(out.Values, value(typ, r.Value))
	}
	slices.Sort(out.Values)
	return out
}

// GetRecord implements dns.RecordGetter.
func (p *Provider) GetRecord(ctx context.Context, name, typ string) (*dns.Record, error) {
	z, rr, err := p.rrset(ctx, name, typ)
	if err != nil {
		return nil, err
	}
	return p.toRecord(name, typ, z, rr), nil
}

// SetRecord implements dns.RecordSetter with set_records: the whole set in
// one action, its TTL and labels kept. Hetzner has no conditional update,
// so Record.Expect is compared just before the action.
// https://docs.hetzner.cloud/reference/cloud#zone-rrset-actions-set-records-of-an-rrset
func (p *Provider) SetRecord(ctx context.Context, rec dns.Record) (*dns.Record, error) {
	var out *dns.Record
	err := hz.Converge(ctx, p.cfg.Progress, "set "+rec.Type+" record "+rec.Name, func() error {
		var err error
		out, err = p.setRecord(ctx, rec)
		return err
	})
	return out, err
}

func (p *Provider) setRecord(ctx context.Context, rec dns.Record) (*dns.Record, error) {
	z, rr, err := p.rrset(ctx, rec.Name, rec.Type)
	if err != nil {
		return nil, err
	}
	have := p.toRecord(rec.Name, rec.Type, z, rr)
	done, err := dns.CheckSet("hetzner", rec, have.Values)
	if err != nil {
		return nil, err
	}
	if done {
		return have, nil
	}
	var recs []hcloud.ZoneRRSetRecord
	for _, v := range rec.Values {
		// Comments stay on the values that stay.
		r := hcloud.ZoneRRSetRecord{Value: apiValue(rec.Type, v)}
		for _, old := range rr.Records {
			if value(rec.Type, old.Value) == value(rec.Type, v) {
				r.Comment = old.Comment
			}
		}
		recs = append(recs, r)
	}
	a, _, err := p.cfg.Client.Zone.SetRRSetRecords(ctx, rr, hcloud.ZoneRRSetSetRecordsOpts{Records: recs})
	if err != nil {
		return nil, hz.Wrap(err, "set %s record %s", rec.Type, rec.Name)
	}
	if err := hz.WaitAction(ctx, p.cfg.Client, p.cfg.Progress, fmt.Sprintf("set %s record %s", rec.Type, rec.Name), a); err != nil {
		return nil, err
	}
	return p.GetRecord(ctx, rec.Name, rec.Type)
}

// WaitServed implements dns.ServedWaiter by asking the zone's
// authoritative nameservers, each in turn: the change is served once every
// one of them answers it (or the configured Nameserver does).
func (p *Provider) WaitServed(ctx context.Context, rec dns.Record) error {
	servers := []string{p.cfg.Nameserver}
	if p.cfg.Nameserver == "" {
		z, err := p.zoneOf(ctx, canon(rec.Name))
		if err != nil {
			return err
		}
		if len(z.AuthoritativeNameservers.Assigned) == 0 {
			return fmt.Errorf("hetzner: zone %s has no authoritative nameserver assigned", z.Name)
		}
		servers = servers[:0]
		for _, ns := range z.AuthoritativeNameservers.Assigned {
			servers = append(servers, net.JoinHostPort(canon(ns), "53"))
		}
	}
	for _, ns := range servers {
		err := authority.WaitServed(ctx, ns, rec.Name, rec.Type, rec.Values, p.cfg.PollInterval, p.cfg.Progress)
		if err != nil && !errors.Is(err, context.Canceled) {
			return fmt.Errorf("hetzner: %w", err)
		}
		if err != nil {
			return err
		}
	}
	return nil
}
