package mototest

import (
	"context"
	"testing"

	sdk "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	elb "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"
	elbtypes "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2/types"
	r53 "github.com/aws/aws-sdk-go-v2/service/route53"
	r53types "github.com/aws/aws-sdk-go-v2/service/route53/types"
)

// World is what an AWS account holds before a swap: web-1 (an instance
// with a key pair, a security group, monitoring and tags) behind an ALB
// target group, named by a Route 53 record, and holding an Elastic IP.
type World struct {
	Config      sdk.Config
	InstanceID  string
	InstanceIP  string
	TargetGroup string
	Zone        string // example.test
	Record      string // www.example.test
	EIP         string
}

// SDKConfig is an SDK configuration for the server.
func (s *Server) SDKConfig() sdk.Config {
	return sdk.Config{Region: "us-east-1", Credentials: credentials.NewStaticCredentialsProvider("testing", "testing", ""), BaseEndpoint: sdk.String(s.URL)}
}

// NewWorld builds the world in moto.
func NewWorld(t testing.TB, s *Server) *World {
	t.Helper()
	ctx := context.Background()
	w := &World{Config: s.SDKConfig(), Zone: "example.test", Record: "www.example.test"}
	e := ec2.NewFromConfig(w.Config)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	vpcs, err := e.DescribeVpcs(ctx, &ec2.DescribeVpcsInput{})
	must(err)
	vpc := vpcs.Vpcs[0].VpcId
	subnets, err := e.DescribeSubnets(ctx, &ec2.DescribeSubnetsInput{Filters: []ec2types.Filter{{Name: sdk.String("vpc-id"), Values: []string{*vpc}}}})
	must(err)
	sg, err := e.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{GroupName: sdk.String("web"), Description: sdk.String("web"), VpcId: vpc})
	must(err)
	_, err = e.CreateKeyPair(ctx, &ec2.CreateKeyPairInput{KeyName: sdk.String("ops")})
	must(err)
	imgs, err := e.DescribeImages(ctx, &ec2.DescribeImagesInput{Owners: []string{"amazon"}})
	must(err)
	run, err := e.RunInstances(ctx, &ec2.RunInstancesInput{ImageId: imgs.Images[0].ImageId, InstanceType: ec2types.InstanceTypeT3Small, MinCount: sdk.Int32(1), MaxCount: sdk.Int32(1),
		SubnetId: subnets.Subnets[0].SubnetId, SecurityGroupIds: []string{*sg.GroupId}, KeyName: sdk.String("ops"), Monitoring: &ec2types.RunInstancesMonitoringEnabled{Enabled: sdk.Bool(true)},
		TagSpecifications: []ec2types.TagSpecification{{ResourceType: ec2types.ResourceTypeInstance, Tags: []ec2types.Tag{{Key: sdk.String("Name"), Value: sdk.String("web-1")}, {Key: sdk.String("team"), Value: sdk.String("shop")}}}}})
	must(err)
	w.InstanceID = *run.Instances[0].InstanceId
	d, err := e.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{w.InstanceID}})
	must(err)
	w.InstanceIP = sdk.ToString(d.Reservations[0].Instances[0].PublicIpAddress)

	l := elb.NewFromConfig(w.Config)
	var subnetIDs []string
	for _, sn := range subnets.Subnets[:2] {
		subnetIDs = append(subnetIDs, *sn.SubnetId)
	}
	lb, err := l.CreateLoadBalancer(ctx, &elb.CreateLoadBalancerInput{Name: sdk.String("shop"), Subnets: subnetIDs, SecurityGroups: []string{*sg.GroupId}})
	must(err)
	tg, err := l.CreateTargetGroup(ctx, &elb.CreateTargetGroupInput{Name: sdk.String("web"), Protocol: elbtypes.ProtocolEnumHttp, Port: sdk.Int32(80), VpcId: vpc,
		HealthCheckPath: sdk.String("/health"), TargetType: elbtypes.TargetTypeEnumInstance})
	must(err)
	w.TargetGroup = *tg.TargetGroups[0].TargetGroupArn
	_, err = l.ModifyTargetGroupAttributes(ctx, &elb.ModifyTargetGroupAttributesInput{TargetGroupArn: sdk.String(w.TargetGroup),
		Attributes: []elbtypes.TargetGroupAttribute{{Key: sdk.String("deregistration_delay.timeout_seconds"), Value: sdk.String("5")}}})
	must(err)
	_, err = l.CreateListener(ctx, &elb.CreateListenerInput{LoadBalancerArn: lb.LoadBalancers[0].LoadBalancerArn, Protocol: elbtypes.ProtocolEnumHttp, Port: sdk.Int32(80),
		DefaultActions: []elbtypes.Action{{Type: elbtypes.ActionTypeEnumForward, TargetGroupArn: sdk.String(w.TargetGroup)}}})
	must(err)
	_, err = l.RegisterTargets(ctx, &elb.RegisterTargetsInput{TargetGroupArn: sdk.String(w.TargetGroup), Targets: []elbtypes.TargetDescription{{Id: sdk.String(w.InstanceID)}}})
	must(err)

	addr, err := e.AllocateAddress(ctx, &ec2.AllocateAddressInput{Domain: ec2types.DomainTypeVpc})
	must(err)
	w.EIP = *addr.PublicIp
	_, err = e.AssociateAddress(ctx, &ec2.AssociateAddressInput{AllocationId: addr.AllocationId, InstanceId: sdk.String(w.InstanceID)})
	must(err)
	// The Elastic IP is now the instance's public address: the record names it.
	w.InstanceIP = w.EIP

	r := r53.NewFromConfig(w.Config)
	hz, err := r.CreateHostedZone(ctx, &r53.CreateHostedZoneInput{Name: sdk.String(w.Zone), CallerReference: sdk.String("vmswap-test")})
	must(err)
	_, err = r.ChangeResourceRecordSets(ctx, &r53.ChangeResourceRecordSetsInput{HostedZoneId: hz.HostedZone.Id, ChangeBatch: &r53types.ChangeBatch{Changes: []r53types.Change{{
		Action: r53types.ChangeActionCreate, ResourceRecordSet: &r53types.ResourceRecordSet{Name: sdk.String(w.Record + "."), Type: r53types.RRTypeA, TTL: sdk.Int64(60),
			ResourceRecords: []r53types.ResourceRecord{{Value: sdk.String(w.InstanceIP)}}}}}}})
	must(err)

	return w
}
