package aws_test

import (
	"context"
	"testing"
	"time"

	sdk "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/vmswap/vmswap/dns/dnstest"
	"github.com/vmswap/vmswap/dns/route53"
	"github.com/vmswap/vmswap/loadbalancer"
	"github.com/vmswap/vmswap/loadbalancer/awselb"
	"github.com/vmswap/vmswap/loadbalancer/lbtest"
	"github.com/vmswap/vmswap/provider"
	"github.com/vmswap/vmswap/provider/aws"
	"github.com/vmswap/vmswap/provider/aws/mototest"
)

// TestComputeAgainstMoto: image, launch (twice with one token: one
// instance), wait, stop, start, Elastic IP, terminate, deregister.
func TestComputeAgainstMoto(t *testing.T) {
	srv := mototest.Start(t)
	w := mototest.NewWorld(t, srv)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	d := aws.New(w.Config, aws.Config{PollInterval: 50 * time.Millisecond})
	src, err := d.GetServer(ctx, "web-1")
	if err != nil || src.ID != w.InstanceID || src.Status != provider.StatusRunning || src.Size != "t3.small" {
		t.Fatalf("GetServer: %+v %v", src, err)
	}
	size, err := d.GetSize(ctx, "m5.large")
	if err != nil || size.VCPUs != 2 || size.MemoryMB != 8192 {
		t.Fatalf("GetSize: %+v %v", size, err)
	}
	var op string
	img, err := d.Snapshot(ctx, src, provider.SnapshotSpec{Name: "vmswap-web-1-20261122-000000-test", Started: func(o string) { op = o }})
	if err != nil || img.ID == "" || op != img.ID {
		t.Fatalf("Snapshot: %+v %v (op %s)", img, err, op)
	}
	again, err := d.Snapshot(ctx, src, provider.SnapshotSpec{Name: "vmswap-web-1-20261122-000000-test"})
	if err != nil || again.ID != img.ID {
		t.Fatalf("second Snapshot made another image: %+v %v", again, err)
	}
	spec := provider.LaunchSpec{Source: src, Image: img, Size: "m5.large", Name: "web-1-new", Token: "run1-0", Tags: []string{"vmswap:test"}}
	n1, err := d.Launch(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	n2, err := d.Launch(ctx, spec)
	if err != nil || n2.ID != n1.ID {
		t.Fatalf("a second Launch with the same token: %+v %v", n2, err)
	}
	run, err := d.WaitRunning(ctx, n1.ID)
	if err != nil || run.Size != "m5.large" || run.Name != "web-1-new" {
		t.Fatalf("WaitRunning: %+v %v", run, err)
	}
	servers, images, err := d.FindTagged(ctx, "vmswap:test")
	if err != nil || len(servers) != 1 || servers[0].ID != n1.ID {
		t.Fatalf("FindTagged: %v %v %v", servers, images, err)
	}
	if err := d.AssignIP(ctx, w.EIP, n1.ID); err != nil {
		t.Fatal(err)
	}
	if got, _ := d.AssignedTo(ctx, w.EIP); got != n1.ID {
		t.Fatalf("EIP points at %s", got)
	}
	if err := d.PowerOff(ctx, src.ID, time.Minute); err != nil {
		t.Fatal(err)
	}
	if s, _ := d.GetServer(ctx, src.ID); s.Status != provider.StatusOff {
		t.Fatalf("after PowerOff: %s", s.Status)
	}
	if err := d.PowerOn(ctx, src.ID); err != nil {
		t.Fatal(err)
	}
	if err := d.DeleteServer(ctx, n1.ID); err != nil {
		t.Fatal(err)
	}
	if err := d.DeleteImage(ctx, img.ID); err != nil {
		t.Fatal(err)
	}
	if got, err := d.FindImage(ctx, img.Name); err != nil || got != nil {
		t.Fatalf("image after delete: %+v %v", got, err)
	}
}

func TestTargetGroupConformance(t *testing.T) {
	srv := mototest.Start(t)
	w := mototest.NewWorld(t, srv)
	d := aws.New(w.Config, aws.Config{PollInterval: 50 * time.Millisecond})
	ctx := context.Background()
	src, _ := d.GetServer(ctx, "web-1")
	img, err := d.Snapshot(ctx, src, provider.SnapshotSpec{Name: "vmswap-web-1-x-test"})
	if err != nil {
		t.Fatal(err)
	}
	n, err := d.Launch(ctx, provider.LaunchSpec{Source: src, Image: img, Size: "t3.large", Name: "web-2", Token: "tg-0"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.WaitRunning(ctx, n.ID); err != nil {
		t.Fatal(err)
	}
	lbtest.Run(t, awselb.New(w.Config, 50*time.Millisecond, 0, nil), w.TargetGroup, loadbalancer.Member{ServerID: w.InstanceID}, loadbalancer.Member{ServerID: n.ID})
}

func TestRoute53Conformance(t *testing.T) {
	srv := mototest.Start(t)
	w := mototest.NewWorld(t, srv)
	// moto's zones delegate to nameservers that do not exist: INSYNC only.
	dnstest.Run(t, route53.New(w.Config, route53.NoNameserver, 50*time.Millisecond, nil), w.Record, []string{w.InstanceIP}, 60)
}

// TestLaunchKeepsIPv6: a source with an IPv6 address (a subnet with an
// IPv6 block) gets a new instance with one too, so a dual-stack name's AAAA
// set can move to it.
func TestLaunchKeepsIPv6(t *testing.T) {
	srv := mototest.Start(t)
	w := mototest.NewWorld(t, srv)
	ctx := context.Background()
	e := ec2.NewFromConfig(w.Config)
	src0, err := e.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{w.InstanceID}})
	if err != nil {
		t.Fatal(err)
	}
	inst := src0.Reservations[0].Instances[0]
	if _, err := e.AssociateSubnetCidrBlock(ctx, &ec2.AssociateSubnetCidrBlockInput{SubnetId: inst.SubnetId, Ipv6CidrBlock: sdk.String("2001:db8:1::/64")}); err != nil {
		t.Fatal(err)
	}
	run, err := e.RunInstances(ctx, &ec2.RunInstancesInput{ImageId: inst.ImageId, InstanceType: inst.InstanceType, MinCount: sdk.Int32(1), MaxCount: sdk.Int32(1),
		SubnetId: inst.SubnetId, Ipv6AddressCount: sdk.Int32(1),
		TagSpecifications: []types.TagSpecification{{ResourceType: types.ResourceTypeInstance, Tags: []types.Tag{{Key: sdk.String("Name"), Value: sdk.String("web-6")}}}}})
	if err != nil {
		t.Fatal(err)
	}
	d := aws.New(w.Config, aws.Config{PollInterval: 50 * time.Millisecond})
	src, err := d.GetServer(ctx, *run.Instances[0].InstanceId)
	if err != nil || src.PublicIPv6 == "" {
		t.Fatalf("a dual-stack source: %+v %v", src, err)
	}
	img, err := d.Snapshot(ctx, src, provider.SnapshotSpec{Name: "vmswap-web-6-x-test"})
	if err != nil {
		t.Fatal(err)
	}
	n, err := d.Launch(ctx, provider.LaunchSpec{Source: src, Image: img, Size: "t3.large", Name: "web-6-new", Token: "v6-0"})
	if err != nil {
		t.Fatal(err)
	}
	got, err := d.WaitRunning(ctx, n.ID)
	if err != nil || got.PublicIPv6 == "" || got.PublicIPv6 == src.PublicIPv6 {
		t.Fatalf("the new instance's IPv6: %q (source %q), %v", got.PublicIPv6, src.PublicIPv6, err)
	}
}
