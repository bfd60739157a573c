// Package rfc2136 is vmswap's DNS driver for self-hosted authoritative
// servers (BIND, Knot, PowerDNS) through RFC 2136 dynamic updates signed with
// TSIG (RFC 8945), on miekg/dns.
//
// A record set is replaced in one update message whose prerequisite is that
// it still holds the values vmswap read: if someone changed it meanwhile, the
// server refuses the update (NXRRSET) and nothing changes.
package rfc2136

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/vmswap/vmswap/dns"
	"github.com/vmswap/vmswap/dns/authority"
	"github.com/vmswap/vmswap/provider"
)

// SecretVar is the environment variable holding the TSIG secret (base64).
const SecretVar = "RFC2136_TSIG_SECRET"

// Config holds every setting of the driver.
type Config struct {
	// Server is the primary nameserver (host:port) that takes updates and
	// answers for the zone.
	Server string
	// TSIGKey is the key's name; TSIGSecret its base64 secret (never logged).
	TSIGKey, TSIGSecret string
	// TSIGAlgorithm: hmac-sha256 (default), hmac-sha512, ...
	TSIGAlgorithm string
	// PollInterval of the waits. Zero: 1s.
	PollInterval time.Duration
	// Progress receives what is being waited on. May be nil.
	Progress provider.Progress
}

// ConfigFromEnv reads the secret from RFC2136_TSIG_SECRET.
func ConfigFromEnv(server, key string) (Config, error) {
	s := strings.TrimSpace(os.Getenv(SecretVar))
	if s == "" {
		return Config{}, fmt.Errorf("rfc2136: no TSIG secret: set %s", SecretVar)
	}
	return Config{Server: server, TSIGKey: key, TSIGSecret: s}, nil
}

// Provider implements dns.Provider.
type Provider struct {
	cfg Config
	alg string
	key string
}

var _ dns.Provider = (*Provider)(nil)

// New returns a Provider for cfg.
func New(cfg Config) (*Provider, error) {
	if _, _, err := net.SplitHostPort(cfg.Server); err != nil {
		return nil, fmt.Errorf("rfc2136: server %q: want host:port", cfg.Server)
	}
	if cfg.TSIGKey == "" || cfg.TSIGSecret == "" {
		return nil, fmt.Errorf("rfc2136: updates must be signed: set tsig_key in the provider block and %s", SecretVar)
	}
	alg := map[string]string{"": mdns.HmacSHA256, "hmac-sha256": mdns.HmacSHA256, "hmac-sha512": mdns.HmacSHA512, "hmac-sha384": mdns.HmacSHA384, "hmac-sha1": mdns.HmacSHA1}[strings.ToLower(cfg.TSIGAlgorithm)]
	if alg == "" {
		return nil, fmt.Errorf("rfc2136: TSIG algorithm %q: use hmac-sha256, hmac-sha384, hmac-sha512 or hmac-sha1", cfg.TSIGAlgorithm)
	}
	if cfg.PollInterval == 0 {
		cfg.PollInterval = time.Second
	}
	return &Provider{cfg: cfg, alg: alg, key: mdns.Fqdn(cfg.TSIGKey)}, nil
}

func (p *Provider) exchange(ctx context.Context, m *mdns.Msg, signed bool) (*mdns.Msg, error) {
	c := &mdns.Client{Net: "tcp", Timeout: 5 * time.Second}
	if signed {
		c.TsigSecret = map[string]string{p.key: p.cfg.TSIGSecret}
		m.SetTsig(p.key, p.alg, 300, time.Now().Unix())
	}
	r, _, err := c.ExchangeContext(ctx, m, p.cfg.Server)
	if signed && errors.Is(err, mdns.ErrAuth) {
		return nil, fmt.Errorf("rfc2136: %s rejected the TSIG signature of key %s: check tsig_key, tsig_algorithm and %s", p.cfg.Server, p.cfg.TSIGKey, SecretVar)
	}
	if err != nil {
		// Never include the message: it carries the TSIG MAC.
		return nil, fmt.Errorf("rfc2136: %s: %w", p.cfg.Server, err)
	}
	return r, nil
}

// zone finds the zone holding name from the SOA in the server's answer.
func (p *Provider) zone(ctx context.Context, name string) (string, error) {
	m := new(mdns.Msg)
	m.SetQuestion(mdns.Fqdn(name), mdns.TypeSOA)
	r, err := p.exchange(ctx, m, false)
	if err != nil {
		return "", err
	}
	for _, rr := range append(r.Answer, r.Ns...) {
		if soa, ok := rr.(*mdns.SOA); ok {
			return soa.Hdr.Name, nil
		}
	}
	return "", fmt.Errorf("rfc2136: %s is not authoritative for %s: %w", p.cfg.Server, name, provider.ErrNotFound)
}

// read returns the record set's RRs.
func (p *Provider) read(ctx context.Context, name, typ string) ([]mdns.RR, error) {
	qt, ok := mdns.StringToType[typ]
	if !ok {
		return nil, fmt.Errorf("rfc2136: unknown type %q", typ)
	}
	m := new(mdns.Msg)
	m.SetQuestion(mdns.Fqdn(name), qt)
	r, err := p.exchange(ctx, m, false)
	if err != nil {
		return nil, err
	}
	var rrs []mdns.RR
	for _, rr := range r.Answer {
		if rr.Header().Rrtype == qt && strings.EqualFold(rr.Header().Name, mdns.Fqdn(name)) {
			rrs = append(rrs, rr)
		}
	}
	return rrs, nil
}

func values(rrs []mdns.RR) []string {
	var out []string
	for _, rr := range rrs {
		switch v := rr.(type) {
		case *mdns.A:
			out = append(out, v.A.String())
		case *mdns.AAAA:
			out = append(out, v.AAAA.String())
		}
	}
	slices.Sort(out)
	return out
}

// GetRecord implements dns.RecordGetter.
func (p *Provider) GetRecord(ctx context.Context, name, typ string) (*dns.Record, error) {
	rrs, err := p.read(ctx, name, typ)
	if err != nil {
		return nil, err
	}
	if len(rrs) == 0 {
		return nil, fmt.Errorf("rfc2136: no %s record %s at %s: %w", typ, name, p.cfg.Server, provider.ErrNotFound)
	}
	return &dns.Record{Name: strings.TrimSuffix(strings.ToLower(name), "."), Type: typ, Values: values(rrs), TTL: dns.Seconds(rrs[0].Header().Ttl)}, nil
}

// ErrChanged is dns.ErrChanged: the record set no longer holds the values
// read before the update.
var ErrChanged = dns.ErrChanged

// SetRecord implements dns.RecordSetter with one signed update: require the
// values just read, delete the set, add the new values with the same TTL.
// https://www.rfc-editor.org/rfc/rfc2136#section-2.4.2
func (p *Provider) SetRecord(ctx context.Context, rec dns.Record) (*dns.Record, error) {
	zone, err := p.zone(ctx, rec.Name)
	if err != nil {
		return nil, err
	}
	old, err := p.read(ctx, rec.Name, rec.Type)
	if err != nil {
		return nil, err
	}
	if len(old) == 0 {
		return nil, fmt.Errorf("rfc2136: no %s record %s to update: %w", rec.Type, rec.Name, provider.ErrNotFound)
	}
	done, err := dns.CheckSet("rfc2136", rec, values(old))
	if err != nil {
		return nil, err
	}
	if done {
		return p.GetRecord(ctx, rec.Name, rec.Type)
	}
	ttl := old[0].Header().Ttl
	m := new(mdns.Msg)
	m.SetUpdate(zone)
	m.Used(old) // prerequisite: the set still holds exactly these values (Expect, when given)
	del, _ := mdns.NewRR(fmt.Sprintf("%s 0 IN %s 0.0.0.0", mdns.Fqdn(rec.Name), rec.Type))
	if rec.Type == "AAAA" {
		del, _ = mdns.NewRR(fmt.Sprintf("%s 0 IN AAAA ::", mdns.Fqdn(rec.Name)))
	}
	m.RemoveRRset([]mdns.RR{del})
	var add []mdns.RR
	for _, v := range rec.Values {
		rr, err := mdns.NewRR(fmt.Sprintf("%s %d IN %s %s", mdns.Fqdn(rec.Name), ttl, rec.Type, v))
		if err != nil {
			return nil, fmt.Errorf("rfc2136: value %q: %w", v, err)
		}
		add = append(add, rr)
	}
	m.Insert(add)
	r, err := p.exchange(ctx, m, true)
	if err != nil {
		return nil, err
	}
	switch r.Rcode {
	case mdns.RcodeSuccess:
	case mdns.RcodeNXRrset:
		return nil, fmt.Errorf("rfc2136: update %s %s: %w (the server holds other values now): read the world again", rec.Name, rec.Type, ErrChanged)
	case mdns.RcodeNotAuth, mdns.RcodeRefused:
		return nil, fmt.Errorf("rfc2136: update %s %s: %s refused it (%s): check tsig_key, %s and the zone's allow-update", rec.Name, rec.Type, p.cfg.Server, mdns.RcodeToString[r.Rcode], SecretVar)
	default:
		return nil, fmt.Errorf("rfc2136: update %s %s: %s", rec.Name, rec.Type, mdns.RcodeToString[r.Rcode])
	}
	return p.GetRecord(ctx, rec.Name, rec.Type)
}

// WaitServed implements dns.ServedWaiter: until the server answers the
// values (its SOA serial has moved with the update).
func (p *Provider) WaitServed(ctx context.Context, rec dns.Record) error {
	if err := authority.WaitServed(ctx, p.cfg.Server, rec.Name, rec.Type, rec.Values, p.cfg.PollInterval, p.cfg.Progress); err != nil {
		return fmt.Errorf("rfc2136: %w", err)
	}
	return nil
}
