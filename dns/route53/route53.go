// Package route53 is vmswap's DNS driver for Amazon Route 53 (aws-sdk-go-v2):
// UPSERT the record set, wait for the change to be INSYNC (the SDK's
// waiter), then for the zone's authoritative nameserver to answer it.
package route53

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	sdk "github.com/aws/aws-sdk-go-v2/aws"
	r53 "github.com/aws/aws-sdk-go-v2/service/route53"
	"github.com/aws/aws-sdk-go-v2/service/route53/types"
	"github.com/aws/smithy-go"

	"github.com/vmswap/vmswap/dns"
	"github.com/vmswap/vmswap/dns/authority"
	"github.com/vmswap/vmswap/provider"
)

// NoNameserver, as the nameserver, skips the authoritative check: for
// emulators (moto) whose zones' nameservers are not real.
const NoNameserver = "none"

// Provider implements dns.Provider.
type Provider struct {
	c          *r53.Client
	nameserver string
	poll       time.Duration
	progress   provider.Progress

	mu      sync.Mutex
	changes map[string]string // record name -> last change ID
}

var _ dns.Provider = (*Provider)(nil)

// New returns a Provider. nameserver (host:port) is asked whether a change
// is served; empty: the zone's first delegation nameserver; NoNameserver:
// INSYNC only.
func New(sc sdk.Config, nameserver string, poll time.Duration, progress provider.Progress) *Provider {
	if poll == 0 {
		poll = 2 * time.Second
	}
	return &Provider{c: r53.NewFromConfig(sc), nameserver: nameserver, poll: poll, progress: progress, changes: map[string]string{}}
}

func apiErr(err error, format string, args ...any) error {
	what := fmt.Sprintf(format, args...)
	var ae smithy.APIError
	if errors.As(err, &ae) {
		if ae.ErrorCode() == "NoSuchHostedZone" {
			return fmt.Errorf("aws: %s: %w", what, provider.ErrNotFound)
		}
		return fmt.Errorf("aws: %s: %s: %s", what, ae.ErrorCode(), ae.ErrorMessage())
	}
	return fmt.Errorf("aws: %s: %w", what, err)
}

// zone finds the hosted zone holding name (the longest match).
// https://docs.aws.amazon.com/Route53/latest/APIReference/API_ListHostedZonesByName.html
func (p *Provider) zone(ctx context.Context, name string) (*types.HostedZone, error) {
	labels := strings.Split(name, ".")
	for i := 0; i < len(labels)-1; i++ {
		cand := strings.Join(labels[i:], ".") + "."
		out, err := p.c.ListHostedZonesByName(ctx, &r53.ListHostedZonesByNameInput{DNSName: sdk.String(cand), MaxItems: sdk.Int32(1)})
		if err != nil {
			return nil, apiErr(err, "find the hosted zone of %s", name)
		}
		if len(out.HostedZones) > 0 && sdk.ToString(out.HostedZones[0].Name) == cand {
			return &out.HostedZones[0], nil
		}
	}
	return nil, fmt.Errorf("aws: no hosted zone holds %s: %w", name, provider.ErrNotFound)
}

func fqdn(name string) string { return strings.TrimSuffix(strings.ToLower(name), ".") + "." }

// GetRecord implements dns.RecordGetter.
// https://docs.aws.amazon.com/Route53/latest/APIReference/API_ListResourceRecordSets.html
func (p *Provider) GetRecord(ctx context.Context, name, typ string) (*dns.Record, error) {
	z, err := p.zone(ctx, strings.TrimSuffix(strings.ToLower(name), "."))
	if err != nil {
		return nil, err
	}
	out, err := p.c.ListResourceRecordSets(ctx, &r53.ListResourceRecordSetsInput{HostedZoneId: z.Id, StartRecordName: sdk.String(fqdn(name)), StartRecordType: types.RRType(typ), MaxItems: sdk.Int32(1)})
	if err != nil {
		return nil, apiErr(err, "read %s %s", name, typ)
	}
	for _, rs := range out.ResourceRecordSets {
		if strings.EqualFold(sdk.ToString(rs.Name), fqdn(name)) && string(rs.Type) == typ {
			rec := &dns.Record{Name: strings.TrimSuffix(strings.ToLower(name), "."), Type: typ, TTL: dns.Seconds(sdk.ToInt64(rs.TTL))}
			for _, rr := range rs.ResourceRecords {
				rec.Values = append(rec.Values, sdk.ToString(rr.Value))
			}
			slices.Sort(rec.Values)
			return rec, nil
		}
	}
	return nil, fmt.Errorf("aws: no %s record %s: %w", typ, name, provider.ErrNotFound)
}

// SetRecord implements dns.RecordSetter with one UPSERT that keeps the TTL.
// https://docs.aws.amazon.com/Route53/latest/APIReference/API_ChangeResourceRecordSets.html
func (p *Provider) SetRecord(ctx context.Context, rec dns.Record) (*dns.Record, error) {
	cur, err := p.GetRecord(ctx, rec.Name, rec.Type)
	if err != nil {
		return nil, err
	}
	z, err := p.zone(ctx, strings.TrimSuffix(strings.ToLower(rec.Name), "."))
	if err != nil {
		return nil, err
	}
	done, err := dns.CheckSet("route53", rec, cur.Values)
	if err != nil {
		return nil, err
	}
	if done {
		return cur, nil
	}
	set := func(values []string) *types.ResourceRecordSet {
		rs := &types.ResourceRecordSet{Name: sdk.String(fqdn(rec.Name)), Type: types.RRType(rec.Type), TTL: sdk.Int64(int64(cur.TTL))}
		for _, v := range values {
			rs.ResourceRecords = append(rs.ResourceRecords, types.ResourceRecord{Value: sdk.String(v)})
		}
		return rs
	}
	// With Expect, one batch DELETEs exactly the expected set and CREATEs
	// the new one: Route 53 applies both or neither, and refuses the batch
	// if the set holds anything else by then. Without, an UPSERT.
	changes := []types.Change{{Action: types.ChangeActionUpsert, ResourceRecordSet: set(rec.Values)}}
	if rec.Expect != nil {
		changes = []types.Change{{Action: types.ChangeActionDelete, ResourceRecordSet: set(rec.Expect)}, {Action: types.ChangeActionCreate, ResourceRecordSet: set(rec.Values)}}
	}
	out, err := p.c.ChangeResourceRecordSets(ctx, &r53.ChangeResourceRecordSetsInput{HostedZoneId: z.Id, ChangeBatch: &types.ChangeBatch{
		Comment: sdk.String("vmswap cutover"), Changes: changes}})
	var ib *types.InvalidChangeBatch
	if err != nil && rec.Expect != nil && errors.As(err, &ib) {
		now, gerr := p.GetRecord(ctx, rec.Name, rec.Type)
		if gerr != nil || !dns.Unchanged(now.Values, rec.Expect) {
			return nil, fmt.Errorf("route53: %s %s no longer holds %v (%v): %w", rec.Name, rec.Type, rec.Expect, apiErr(err, "change"), dns.ErrChanged)
		}
		// The set holds exactly Expect, yet the batch was refused (moto
		// refused the DELETE of a set an earlier batch of ours had
		// created): what the batch meant is an UPSERT of the set just
		// read, and the window left is this read.
		out, err = p.c.ChangeResourceRecordSets(ctx, &r53.ChangeResourceRecordSetsInput{HostedZoneId: z.Id, ChangeBatch: &types.ChangeBatch{
			Comment: sdk.String("vmswap cutover"), Changes: []types.Change{{Action: types.ChangeActionUpsert, ResourceRecordSet: set(rec.Values)}}}})
	}
	if err != nil {
		return nil, apiErr(err, "change %s %s", rec.Name, rec.Type)
	}
	p.mu.Lock()
	p.changes[fqdn(rec.Name)] = sdk.ToString(out.ChangeInfo.Id)
	p.mu.Unlock()
	return p.GetRecord(ctx, rec.Name, rec.Type)
}

// WaitServed implements dns.ServedWaiter: GetChange INSYNC (the SDK's
// ResourceRecordSetsChanged waiter), then the authoritative answer.
// https://docs.aws.amazon.com/Route53/latest/APIReference/API_GetChange.html
func (p *Provider) WaitServed(ctx context.Context, rec dns.Record) error {
	p.mu.Lock()
	id := p.changes[fqdn(rec.Name)]
	p.mu.Unlock()
	if id != "" {
		w := r53.NewResourceRecordSetsChangedWaiter(p.c, func(o *r53.ResourceRecordSetsChangedWaiterOptions) {
			o.MinDelay, o.MaxDelay = p.poll, 10*p.poll
		})
		if err := w.Wait(ctx, &r53.GetChangeInput{Id: sdk.String(id)}, time.Hour); err != nil {
			return apiErr(err, "wait for change %s", id)
		}
	}
	ns := p.nameserver
	switch ns {
	case NoNameserver:
		cur, err := p.GetRecord(ctx, rec.Name, rec.Type)
		if err != nil {
			return err
		}
		if !slices.Equal(cur.Values, slices.Sorted(slices.Values(rec.Values))) {
			return fmt.Errorf("aws: %s holds %v, not %v", rec.Name, cur.Values, rec.Values)
		}
		return nil
	case "":
		z, err := p.zone(ctx, strings.TrimSuffix(strings.ToLower(rec.Name), "."))
		if err != nil {
			return err
		}
		// The apex NS record set is the zone's delegation.
		out, err := p.c.ListResourceRecordSets(ctx, &r53.ListResourceRecordSetsInput{HostedZoneId: z.Id, StartRecordName: z.Name, StartRecordType: types.RRTypeNs, MaxItems: sdk.Int32(1)})
		if err != nil || len(out.ResourceRecordSets) == 0 || out.ResourceRecordSets[0].Type != types.RRTypeNs || len(out.ResourceRecordSets[0].ResourceRecords) == 0 {
			return fmt.Errorf("aws: cannot read the nameservers of %s: set nameserver in the provider block: %v", sdk.ToString(z.Name), err)
		}
		ns = net.JoinHostPort(strings.TrimSuffix(sdk.ToString(out.ResourceRecordSets[0].ResourceRecords[0].Value), "."), "53")
	}
	if err := authority.WaitServed(ctx, ns, rec.Name, rec.Type, rec.Values, p.poll, p.progress); err != nil {
		return fmt.Errorf("aws: %w", err)
	}
	return nil
}
