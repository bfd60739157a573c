// Package awselb is vmswap's load-balancer driver for ELBv2 target groups
// (Application and Network Load Balancers), on aws-sdk-go-v2. A pool is a
// target group (by ARN); members are instance targets. The new instance is
// registered and waited on until healthy; the old one deregistered and
// waited on until the target group's deregistration delay (read from its
// attributes) has drained it.
package awselb

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	sdk "github.com/aws/aws-sdk-go-v2/aws"
	elb "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"
	"github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2/types"
	"github.com/aws/smithy-go"

	"github.com/vmswap/vmswap/loadbalancer"
	"github.com/vmswap/vmswap/provider"
)

// Provider implements loadbalancer.Provider and loadbalancer.HealthReporter.
type Provider struct {
	c             *elb.Client
	poll          time.Duration
	progress      provider.Progress
	adds, removes *provider.Batcher
}

var (
	_ loadbalancer.Provider       = (*Provider)(nil)
	_ loadbalancer.HealthReporter = (*Provider)(nil)
)

// New returns a Provider for a resolved SDK configuration.
// With a batch window, the targets that swaps running at once (a fleet's
// wave) register or deregister within it go in one call.
func New(sc sdk.Config, poll, batchWindow time.Duration, progress provider.Progress) *Provider {
	if progress == nil {
		progress = func(string, ...any) {}
	}
	p := &Provider{c: elb.NewFromConfig(sc), poll: poll, progress: progress}
	p.adds = &provider.Batcher{Window: batchWindow, Send: func(ctx context.Context, tg string, ids []string) error {
		if _, err := p.c.RegisterTargets(ctx, &elb.RegisterTargetsInput{TargetGroupArn: sdk.String(tg), Targets: targets(ids)}); err != nil {
			return apiErr(err, "register %s in %s", strings.Join(ids, ", "), tg)
		}
		return nil
	}}
	p.removes = &provider.Batcher{Window: batchWindow, Send: func(ctx context.Context, tg string, ids []string) error {
		if _, err := p.c.DeregisterTargets(ctx, &elb.DeregisterTargetsInput{TargetGroupArn: sdk.String(tg), Targets: targets(ids)}); err != nil {
			return apiErr(err, "deregister %s from %s", strings.Join(ids, ", "), tg)
		}
		return nil
	}}
	return p
}

func targets(ids []string) []types.TargetDescription {
	out := make([]types.TargetDescription, len(ids))
	for i, id := range ids {
		out[i] = types.TargetDescription{Id: sdk.String(id)}
	}
	return out
}

func apiErr(err error, format string, args ...any) error {
	what := fmt.Sprintf(format, args...)
	var ae smithy.APIError
	if errors.As(err, &ae) {
		if ae.ErrorCode() == "TargetGroupNotFound" || ae.ErrorCode() == "LoadBalancerNotFound" {
			return fmt.Errorf("aws: %s: %w", what, provider.ErrNotFound)
		}
		return fmt.Errorf("aws: %s: %s: %s", what, ae.ErrorCode(), ae.ErrorMessage())
	}
	return fmt.Errorf("aws: %s: %w", what, err)
}

func (p *Provider) health(ctx context.Context, tg string, targets ...types.TargetDescription) ([]types.TargetHealthDescription, error) {
	out, err := p.c.DescribeTargetHealth(ctx, &elb.DescribeTargetHealthInput{TargetGroupArn: sdk.String(tg), Targets: targets})
	if err != nil {
		return nil, apiErr(err, "describe target health of %s", tg)
	}
	return out.TargetHealthDescriptions, nil
}

// Pool implements loadbalancer.MemberLister. Draining targets are not
// members: they get no new requests. The address is the load balancer's
// DNS name.
// https://docs.aws.amazon.com/elasticloadbalancing/latest/APIReference/API_DescribeTargetHealth.html
func (p *Provider) Pool(ctx context.Context, tg string) (*loadbalancer.Pool, error) {
	hs, err := p.health(ctx, tg)
	if err != nil {
		return nil, err
	}
	pool := &loadbalancer.Pool{ID: tg, Members: []loadbalancer.Member{}}
	for _, h := range hs {
		if h.TargetHealth != nil && h.TargetHealth.State == types.TargetHealthStateEnumDraining {
			continue
		}
		pool.Members = append(pool.Members, loadbalancer.Member{ServerID: sdk.ToString(h.Target.Id)})
	}
	out, err := p.c.DescribeTargetGroups(ctx, &elb.DescribeTargetGroupsInput{TargetGroupArns: []string{tg}})
	if err != nil {
		return nil, apiErr(err, "describe target group %s", tg)
	}
	if len(out.TargetGroups) > 0 && len(out.TargetGroups[0].LoadBalancerArns) > 0 {
		lbs, err := p.c.DescribeLoadBalancers(ctx, &elb.DescribeLoadBalancersInput{LoadBalancerArns: out.TargetGroups[0].LoadBalancerArns[:1]})
		if err == nil && len(lbs.LoadBalancers) > 0 {
			pool.Address = sdk.ToString(lbs.LoadBalancers[0].DNSName)
		}
	}
	return pool, nil
}

// AddMember implements loadbalancer.MemberAdder with RegisterTargets on the
// target group's port. Registering a registered target changes nothing.
// https://docs.aws.amazon.com/elasticloadbalancing/latest/APIReference/API_RegisterTargets.html
func (p *Provider) AddMember(ctx context.Context, tg string, m loadbalancer.Member) error {
	return p.adds.Do(ctx, tg, m.ServerID)
}

// MemberHealthy implements loadbalancer.HealthReporter.
func (p *Provider) MemberHealthy(ctx context.Context, tg string, m loadbalancer.Member) (bool, error) {
	hs, err := p.health(ctx, tg, types.TargetDescription{Id: sdk.String(m.ServerID)})
	if err != nil {
		return false, err
	}
	for _, h := range hs {
		if sdk.ToString(h.Target.Id) == m.ServerID && h.TargetHealth != nil {
			return h.TargetHealth.State == types.TargetHealthStateEnumHealthy, nil
		}
	}
	return false, nil
}

// deregistrationDelay reads the target group's deregistration delay.
// https://docs.aws.amazon.com/elasticloadbalancing/latest/APIReference/API_DescribeTargetGroupAttributes.html
func (p *Provider) deregistrationDelay(ctx context.Context, tg string) (time.Duration, error) {
	out, err := p.c.DescribeTargetGroupAttributes(ctx, &elb.DescribeTargetGroupAttributesInput{TargetGroupArn: sdk.String(tg)})
	if err != nil {
		return 0, apiErr(err, "describe attributes of %s", tg)
	}
	for _, a := range out.Attributes {
		if sdk.ToString(a.Key) == "deregistration_delay.timeout_seconds" {
			n, _ := strconv.Atoi(sdk.ToString(a.Value))
			return time.Duration(n) * time.Second, nil
		}
	}
	return 300 * time.Second, nil // ELBv2's default
}

// RemoveMember implements loadbalancer.MemberRemover: DeregisterTargets,
// then wait (the SDK's waiter) until the target is gone, for up to the
// deregistration delay plus a margin: requests in flight finish on it.
// https://docs.aws.amazon.com/elasticloadbalancing/latest/APIReference/API_DeregisterTargets.html
func (p *Provider) RemoveMember(ctx context.Context, tg string, m loadbalancer.Member) error {
	delay, err := p.deregistrationDelay(ctx, tg)
	if err != nil {
		return err
	}
	target := types.TargetDescription{Id: sdk.String(m.ServerID)}
	all, err := p.health(ctx, tg)
	if err != nil {
		return err
	}
	if !slices.ContainsFunc(all, func(h types.TargetHealthDescription) bool { return sdk.ToString(h.Target.Id) == m.ServerID }) {
		return nil // already gone
	}
	if err := p.removes.Do(ctx, tg, m.ServerID); err != nil {
		return err
	}
	p.progress("aws: draining %s from %s (deregistration delay %s)", m.ServerID, tg, delay)
	w := elb.NewTargetDeregisteredWaiter(p.c, func(o *elb.TargetDeregisteredWaiterOptions) {
		if p.poll > 0 {
			o.MinDelay, o.MaxDelay = p.poll, 10*p.poll
		}
	})
	if err := w.Wait(ctx, &elb.DescribeTargetHealthInput{TargetGroupArn: sdk.String(tg), Targets: []types.TargetDescription{target}}, delay+2*time.Minute); err != nil {
		return apiErr(err, "wait for %s to drain from %s", m.ServerID, tg)
	}
	return nil
}
