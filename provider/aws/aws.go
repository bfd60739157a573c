// Package aws is vmswap's compute driver for EC2 (aws-sdk-go-v2): instances
// imaged with CreateImage and NoReboot (crash-consistent, the instance keeps
// serving), replaced by RunInstances with a ClientToken unique to the step,
// and Elastic IPs. Waits use the SDK's own waiters; retries its standard
// retryer. SDK types stay inside this package.
package aws

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	sdk "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"
	"github.com/aws/smithy-go/middleware"

	"github.com/vmswap/vmswap/provider"
)

// Config holds every setting of the AWS drivers.
type Config struct {
	// Region; empty: the default chain's (AWS_REGION, the profile).
	Region string
	// Endpoint overrides every service's endpoint (moto, a proxy). Empty:
	// AWS_ENDPOINT_URL or the real endpoints.
	Endpoint string
	// Credentials; nil: the default chain (environment, profile, role).
	Credentials sdk.CredentialsProvider
	// APIOptions are added to every client's middleware stack (the tests
	// record the operations called with one).
	APIOptions []func(*middleware.Stack) error
	// PollInterval caps the waiters' delay. Zero: the SDK's.
	PollInterval time.Duration
	// Progress receives what is being waited on. May be nil.
	Progress provider.Progress
}

// LoadConfig resolves cfg into an SDK configuration with the standard
// retryer (429s and 5xx with backoff, bounded attempts).
func LoadConfig(ctx context.Context, cfg Config) (sdk.Config, error) {
	opts := []func(*config.LoadOptions) error{
		config.WithRetryer(func() sdk.Retryer { return retry.NewStandard(func(o *retry.StandardOptions) { o.MaxAttempts = 6 }) }),
	}
	if cfg.Region != "" {
		opts = append(opts, config.WithRegion(cfg.Region))
	}
	if cfg.Credentials != nil {
		opts = append(opts, config.WithCredentialsProvider(cfg.Credentials))
	}
	if cfg.Endpoint != "" {
		opts = append(opts, config.WithBaseEndpoint(cfg.Endpoint))
	}
	c, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return sdk.Config{}, fmt.Errorf("aws: %w", err)
	}
	if c.Region == "" {
		return sdk.Config{}, errors.New("aws: no region: set region in the provider block, or AWS_REGION")
	}
	c.APIOptions = append(c.APIOptions, cfg.APIOptions...)
	return c, nil
}

// Driver implements provider.Compute and provider.IPAssigner on EC2.
type Driver struct {
	c    *ec2.Client
	cfg  Config
	prog provider.Progress
}

var (
	_ provider.Compute    = (*Driver)(nil)
	_ provider.IPAssigner = (*Driver)(nil)
)

// New returns a driver for the resolved SDK configuration.
func New(sc sdk.Config, cfg Config) *Driver {
	prog := cfg.Progress
	if prog == nil {
		prog = func(string, ...any) {}
	}
	return &Driver{c: ec2.NewFromConfig(sc), cfg: cfg, prog: prog}
}

// apiErr prefixes err, maps not-found codes to provider.ErrNotFound and says
// what to do about refused credentials.
func apiErr(err error, format string, args ...any) error {
	what := fmt.Sprintf(format, args...)
	var ae smithy.APIError
	if errors.As(err, &ae) {
		code := ae.ErrorCode()
		switch {
		case strings.HasSuffix(code, ".NotFound") || strings.HasSuffix(code, ".Malformed") && strings.Contains(code, "ID"):
			return fmt.Errorf("aws: %s: %w (%s)", what, provider.ErrNotFound, code)
		case code == "AuthFailure" || code == "UnauthorizedOperation" || code == "InvalidClientTokenId" || code == "SignatureDoesNotMatch":
			return fmt.Errorf("aws: %s: %s: check the credentials (AWS_PROFILE, AWS_ACCESS_KEY_ID, ...) and the IAM policy in the README", what, code)
		}
		return fmt.Errorf("aws: %s: %s: %s", what, code, ae.ErrorMessage())
	}
	return fmt.Errorf("aws: %s: %w", what, err)
}

func tag(tags []types.Tag, key string) string {
	for _, t := range tags {
		if sdk.ToString(t.Key) == key {
			return sdk.ToString(t.Value)
		}
	}
	return ""
}

// ipv6Of is the instance's IPv6 address: the primary one, else the first
// of its primary network interface (EC2 IPv6 addresses are public).
func ipv6Of(in *types.Instance) string {
	if a := sdk.ToString(in.Ipv6Address); a != "" {
		return a
	}
	for _, ni := range in.NetworkInterfaces {
		if ni.Attachment != nil && sdk.ToInt32(ni.Attachment.DeviceIndex) != 0 {
			continue
		}
		for _, a := range ni.Ipv6Addresses {
			if v := sdk.ToString(a.Ipv6Address); v != "" {
				return v
			}
		}
	}
	return ""
}

func toServer(in *types.Instance) *provider.Server {
	s := &provider.Server{ID: sdk.ToString(in.InstanceId), Name: tag(in.Tags, "Name"), Size: string(in.InstanceType), PublicIP: sdk.ToString(in.PublicIpAddress),
		PublicIPv6: ipv6Of(in)}
	if s.Name == "" {
		s.Name = s.ID
	}
	if in.Placement != nil {
		s.Region = sdk.ToString(in.Placement.AvailabilityZone)
	}
	switch in.State.Name {
	case types.InstanceStateNameRunning:
		s.Status = provider.StatusRunning
	case types.InstanceStateNameStopped:
		s.Status = provider.StatusOff
	case types.InstanceStateNameShuttingDown, types.InstanceStateNameTerminated:
		s.Status = provider.StatusGone
	default:
		s.Status = provider.StatusPending
	}
	for _, t := range in.Tags {
		s.Tags = append(s.Tags, sdk.ToString(t.Key)+"="+sdk.ToString(t.Value))
	}
	return s
}

func (d *Driver) describe(ctx context.Context, in *ec2.DescribeInstancesInput) ([]types.Instance, error) {
	var out []types.Instance
	p := ec2.NewDescribeInstancesPaginator(d.c, in)
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, err
		}
		for _, r := range page.Reservations {
			for _, i := range r.Instances {
				if i.State != nil && i.State.Name != types.InstanceStateNameTerminated && i.State.Name != types.InstanceStateNameShuttingDown {
					out = append(out, i)
				}
			}
		}
	}
	return out, nil
}

func (d *Driver) instance(ctx context.Context, id string) (*types.Instance, error) {
	list, err := d.describe(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{id}})
	if err != nil {
		return nil, apiErr(err, "describe instance %s", id)
	}
	if len(list) == 0 {
		return nil, fmt.Errorf("aws: instance %s: %w", id, provider.ErrNotFound)
	}
	return &list[0], nil
}

// GetServer implements provider.ServerGetter: an instance by ID (i-...) or
// by its Name tag.
// https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_DescribeInstances.html
func (d *Driver) GetServer(ctx context.Context, ref string) (*provider.Server, error) {
	if strings.HasPrefix(ref, "i-") {
		in, err := d.instance(ctx, ref)
		if err != nil {
			return nil, err
		}
		return toServer(in), nil
	}
	list, err := d.describe(ctx, &ec2.DescribeInstancesInput{Filters: []types.Filter{{Name: sdk.String("tag:Name"), Values: []string{ref}}}})
	if err != nil {
		return nil, apiErr(err, "find instance %q", ref)
	}
	switch len(list) {
	case 0:
		return nil, fmt.Errorf("aws: instance named %q: %w", ref, provider.ErrNotFound)
	case 1:
		return toServer(&list[0]), nil
	}
	return nil, fmt.Errorf("aws: %d instances are named %q: name the source by instance ID", len(list), ref)
}

// GetSize implements provider.SizeGetter with DescribeInstanceTypes. EBS-only
// types report no disk: the root volume comes from the image.
// https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_DescribeInstanceTypes.html
func (d *Driver) GetSize(ctx context.Context, slug string) (*provider.Size, error) {
	out, err := d.c.DescribeInstanceTypes(ctx, &ec2.DescribeInstanceTypesInput{InstanceTypes: []types.InstanceType{types.InstanceType(slug)}})
	if err != nil {
		var ae smithy.APIError
		if errors.As(err, &ae) && strings.Contains(ae.ErrorCode(), "InvalidInstanceType") {
			return nil, fmt.Errorf("aws: instance type %q: %w", slug, provider.ErrNotFound)
		}
		return nil, apiErr(err, "describe instance type %s", slug)
	}
	if len(out.InstanceTypes) == 0 {
		return nil, fmt.Errorf("aws: instance type %q: %w", slug, provider.ErrNotFound)
	}
	it := out.InstanceTypes[0]
	s := &provider.Size{Slug: slug}
	if it.VCpuInfo != nil {
		s.VCPUs = int(sdk.ToInt32(it.VCpuInfo.DefaultVCpus))
	}
	if it.MemoryInfo != nil {
		s.MemoryMB = int(sdk.ToInt64(it.MemoryInfo.SizeInMiB))
	}
	if it.NetworkInfo != nil && it.NetworkInfo.Ipv6Supported != nil {
		s.NoIPv6 = !*it.NetworkInfo.Ipv6Supported
	}
	return s, nil
}

func (d *Driver) image(ctx context.Context, in *ec2.DescribeImagesInput) (*types.Image, error) {
	out, err := d.c.DescribeImages(ctx, in)
	if err != nil {
		return nil, apiErr(err, "describe images")
	}
	if len(out.Images) == 0 {
		return nil, nil
	}
	return &out.Images[0], nil
}

func toImage(im *types.Image) *provider.Image {
	out := &provider.Image{ID: sdk.ToString(im.ImageId), Name: sdk.ToString(im.Name)}
	for _, b := range im.BlockDeviceMappings {
		if b.Ebs != nil && sdk.ToString(b.DeviceName) == sdk.ToString(im.RootDeviceName) {
			out.MinDiskGB = int(sdk.ToInt32(b.Ebs.VolumeSize))
		}
	}
	return out
}

// FindImage implements provider.Snapshotter.
func (d *Driver) FindImage(ctx context.Context, name string) (*provider.Image, error) {
	im, err := d.image(ctx, &ec2.DescribeImagesInput{Owners: []string{"self"}, Filters: []types.Filter{{Name: sdk.String("name"), Values: []string{name}}}})
	if err != nil || im == nil {
		return nil, err
	}
	return toImage(im), nil
}

// Snapshot implements provider.Snapshotter with CreateImage and NoReboot:
// the default reboots the instance; with NoReboot it keeps serving and the
// image is crash-consistent (quiesce with a `sync` over SSH first if that
// matters). Image names are unique per account, which makes a retried or
// resumed call find its image. The image and its snapshots carry the
// source's vmswap tags.
// https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_CreateImage.html
func (d *Driver) Snapshot(ctx context.Context, s *provider.Server, spec provider.SnapshotSpec) (*provider.Image, error) {
	name, started := spec.Name, spec.Started
	img, err := d.FindImage(ctx, name)
	if err != nil {
		return nil, err
	}
	var id string
	switch {
	case img != nil:
		id = img.ID
	case spec.AwaitOnly:
		return nil, nil
	default:
		tags := []types.Tag{{Key: sdk.String("Name"), Value: sdk.String(name)}}
		if p := planTag(name); p != "" {
			tags = append(tags, types.Tag{Key: sdk.String("vmswap"), Value: sdk.String(p)})
		}
		out, err := d.c.CreateImage(ctx, &ec2.CreateImageInput{InstanceId: sdk.String(s.ID), Name: sdk.String(name), NoReboot: sdk.Bool(true),
			Description:       sdk.String("vmswap image of " + s.Name),
			TagSpecifications: []types.TagSpecification{{ResourceType: types.ResourceTypeImage, Tags: tags}}})
		if err != nil {
			var ae smithy.APIError
			if errors.As(err, &ae) && ae.ErrorCode() == "InvalidAMIName.Duplicate" {
				return d.Snapshot(ctx, s, provider.SnapshotSpec{Name: name, Started: started})
			}
			return nil, apiErr(err, "create image of %s", s.ID)
		}
		id = sdk.ToString(out.ImageId)
	}
	if started != nil {
		started(id)
	}
	d.prog("aws: waiting for image %s to be available", id)
	w := ec2.NewImageAvailableWaiter(d.c, func(o *ec2.ImageAvailableWaiterOptions) {
		if d.cfg.PollInterval > 0 {
			o.MinDelay, o.MaxDelay = d.cfg.PollInterval, 10*d.cfg.PollInterval
		}
	})
	if err := w.Wait(ctx, &ec2.DescribeImagesInput{ImageIds: []string{id}}, 4*time.Hour); err != nil {
		return nil, apiErr(err, "wait for image %s", id)
	}
	im, err := d.image(ctx, &ec2.DescribeImagesInput{ImageIds: []string{id}})
	if err != nil || im == nil {
		return nil, fmt.Errorf("aws: image %s vanished after becoming available: %v", id, err)
	}
	// The image's EBS snapshots carry its tags too, so orphans are found.
	// (Tagged here rather than in CreateImage's TagSpecifications, which
	// not every EC2 implementation accepts for snapshots.)
	var snaps []string
	for _, b := range im.BlockDeviceMappings {
		if b.Ebs != nil && b.Ebs.SnapshotId != nil {
			snaps = append(snaps, *b.Ebs.SnapshotId)
		}
	}
	if len(snaps) > 0 && len(im.Tags) > 0 {
		if _, err := d.c.CreateTags(ctx, &ec2.CreateTagsInput{Resources: snaps, Tags: im.Tags}); err != nil {
			return nil, apiErr(err, "tag the snapshots of image %s", id)
		}
	}
	return toImage(im), nil
}

// planTag extracts the plan ID vmswap puts at the end of image names.
func planTag(imageName string) string {
	if i := strings.LastIndex(imageName, "-"); i > 0 && strings.HasPrefix(imageName, "vmswap-") {
		return imageName[i+1:]
	}
	return ""
}

// DeleteImage implements provider.Snapshotter: deregister the image and
// delete its EBS snapshots. One already gone is not an error.
// https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_DeregisterImage.html
func (d *Driver) DeleteImage(ctx context.Context, id string) error {
	im, err := d.image(ctx, &ec2.DescribeImagesInput{ImageIds: []string{id}})
	if err != nil {
		if errors.Is(err, provider.ErrNotFound) {
			return nil
		}
		return err
	}
	if im == nil {
		return nil
	}
	if _, err := d.c.DeregisterImage(ctx, &ec2.DeregisterImageInput{ImageId: sdk.String(id)}); err != nil && !errors.Is(apiErr(err, ""), provider.ErrNotFound) {
		return apiErr(err, "deregister image %s", id)
	}
	for _, b := range im.BlockDeviceMappings {
		if b.Ebs != nil && b.Ebs.SnapshotId != nil {
			if _, err := d.c.DeleteSnapshot(ctx, &ec2.DeleteSnapshotInput{SnapshotId: b.Ebs.SnapshotId}); err != nil && !errors.Is(apiErr(err, ""), provider.ErrNotFound) {
				return apiErr(err, "delete snapshot %s of image %s", sdk.ToString(b.Ebs.SnapshotId), id)
			}
		}
	}
	return nil
}

const tokenKey = "vmswap-launch"

// FindLaunched implements provider.Launcher.
func (d *Driver) FindLaunched(ctx context.Context, spec provider.LaunchSpec) (*provider.Server, error) {
	list, err := d.describe(ctx, &ec2.DescribeInstancesInput{Filters: []types.Filter{{Name: sdk.String("tag:" + tokenKey), Values: []string{spec.Token}}}})
	if err != nil {
		return nil, apiErr(err, "find launched instance")
	}
	if len(list) == 0 {
		return nil, nil
	}
	return toServer(&list[0]), nil
}

// Launch implements provider.Launcher with RunInstances from the image and
// the target type, copying the source's subnet, security groups, key pair,
// IAM instance profile, monitoring, EBS optimisation, placement and tags,
// with a root volume at least the image's. ClientToken makes EC2 itself
// return the same instance for a retried request; the token is also a tag
// so a resumed run finds it.
// https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_RunInstances.html
func (d *Driver) Launch(ctx context.Context, spec provider.LaunchSpec) (*provider.Server, error) {
	if !spec.First {
		if s, err := d.FindLaunched(ctx, spec); err != nil || s != nil {
			return s, err
		}
	}
	src, err := d.instance(ctx, spec.Source.ID)
	if err != nil {
		return nil, err
	}
	in := &ec2.RunInstancesInput{
		ImageId: sdk.String(spec.Image.ID), InstanceType: types.InstanceType(spec.Size), MinCount: sdk.Int32(1), MaxCount: sdk.Int32(1),
		ClientToken: sdk.String(spec.Token), SubnetId: src.SubnetId, KeyName: src.KeyName, EbsOptimized: src.EbsOptimized,
	}
	for _, g := range src.SecurityGroups {
		in.SecurityGroupIds = append(in.SecurityGroupIds, sdk.ToString(g.GroupId))
	}
	if ipv6Of(src) != "" {
		// A dual-stack source: its DNS names may have AAAA records that
		// must move to the new instance too.
		in.Ipv6AddressCount = sdk.Int32(1)
	}
	if src.IamInstanceProfile != nil {
		in.IamInstanceProfile = &types.IamInstanceProfileSpecification{Arn: src.IamInstanceProfile.Arn}
	}
	if src.Monitoring != nil {
		in.Monitoring = &types.RunInstancesMonitoringEnabled{Enabled: sdk.Bool(src.Monitoring.State == types.MonitoringStateEnabled)}
	}
	if src.Placement != nil && in.SubnetId == nil {
		in.Placement = &types.Placement{AvailabilityZone: src.Placement.AvailabilityZone, Tenancy: src.Placement.Tenancy}
	}
	tags := []types.Tag{{Key: sdk.String("Name"), Value: sdk.String(spec.Name)}, {Key: sdk.String(tokenKey), Value: sdk.String(spec.Token)}}
	for _, t := range src.Tags {
		k := sdk.ToString(t.Key)
		if k != "Name" && !strings.HasPrefix(k, "vmswap") && !strings.HasPrefix(k, "aws:") {
			tags = append(tags, t)
		}
	}
	for _, t := range spec.Tags {
		k, v, _ := strings.Cut(t, ":")
		tags = slices.DeleteFunc(tags, func(x types.Tag) bool { return sdk.ToString(x.Key) == k })
		tags = append(tags, types.Tag{Key: sdk.String(k), Value: sdk.String(v)})
	}
	if spec.Claim != "" {
		// As TagServer puts it: the whole tag is the key.
		tags = append(tags, types.Tag{Key: sdk.String(spec.Claim), Value: sdk.String("")})
	}
	in.TagSpecifications = []types.TagSpecification{{ResourceType: types.ResourceTypeInstance, Tags: tags}, {ResourceType: types.ResourceTypeVolume, Tags: tags}}
	if spec.Image.MinDiskGB > 0 {
		root := sdk.String("/dev/xvda")
		if im, err := d.image(ctx, &ec2.DescribeImagesInput{ImageIds: []string{spec.Image.ID}}); err == nil && im != nil && im.RootDeviceName != nil {
			root = im.RootDeviceName
		}
		in.BlockDeviceMappings = []types.BlockDeviceMapping{{DeviceName: root, Ebs: &types.EbsBlockDevice{VolumeSize: sdk.Int32(int32(spec.Image.MinDiskGB)), DeleteOnTermination: sdk.Bool(true)}}}
	}
	out, err := d.c.RunInstances(ctx, in)
	if err != nil {
		if s, ferr := d.FindLaunched(ctx, spec); ferr == nil && s != nil {
			return s, nil
		}
		return nil, apiErr(err, "run instance %s (%s)", spec.Name, spec.Size)
	}
	return toServer(&out.Instances[0]), nil
}

// WaitRunning implements provider.Launcher: the running waiter, then the
// status-checks waiter, as the console's "2/2 checks passed".
func (d *Driver) WaitRunning(ctx context.Context, id string) (*provider.Server, error) {
	d.prog("aws: waiting for %s to run and pass its status checks", id)
	opt := func(min, max *time.Duration) {
		if d.cfg.PollInterval > 0 {
			*min, *max = d.cfg.PollInterval, 10*d.cfg.PollInterval
		}
	}
	if err := ec2.NewInstanceRunningWaiter(d.c, func(o *ec2.InstanceRunningWaiterOptions) { opt(&o.MinDelay, &o.MaxDelay) }).
		Wait(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{id}}, 2*time.Hour); err != nil {
		return nil, apiErr(err, "wait for %s to run", id)
	}
	if err := ec2.NewInstanceStatusOkWaiter(d.c, func(o *ec2.InstanceStatusOkWaiterOptions) { opt(&o.MinDelay, &o.MaxDelay) }).
		Wait(ctx, &ec2.DescribeInstanceStatusInput{InstanceIds: []string{id}}, 2*time.Hour); err != nil {
		return nil, apiErr(err, "wait for %s's status checks", id)
	}
	in, err := d.instance(ctx, id)
	if err != nil {
		return nil, err
	}
	return toServer(in), nil
}

// PowerOff implements provider.PowerController: StopInstances (a clean OS
// shutdown), then a forced stop if it has not stopped after timeout.
func (d *Driver) PowerOff(ctx context.Context, id string, timeout time.Duration) error {
	in, err := d.instance(ctx, id)
	if err != nil {
		return err
	}
	if in.State.Name == types.InstanceStateNameStopped {
		return nil
	}
	if _, err := d.c.StopInstances(ctx, &ec2.StopInstancesInput{InstanceIds: []string{id}}); err != nil {
		return apiErr(err, "stop %s", id)
	}
	w := ec2.NewInstanceStoppedWaiter(d.c)
	if err := w.Wait(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{id}}, timeout); err == nil {
		return nil
	}
	d.prog("aws: %s did not stop within %s; forcing it", id, timeout)
	if _, err := d.c.StopInstances(ctx, &ec2.StopInstancesInput{InstanceIds: []string{id}, Force: sdk.Bool(true)}); err != nil {
		return apiErr(err, "force stop %s", id)
	}
	return apiErr(w.Wait(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{id}}, 30*time.Minute), "wait for %s to stop", id)
}

// PowerOn implements provider.PowerController.
func (d *Driver) PowerOn(ctx context.Context, id string) error {
	if _, err := d.c.StartInstances(ctx, &ec2.StartInstancesInput{InstanceIds: []string{id}}); err != nil {
		return apiErr(err, "start %s", id)
	}
	if err := ec2.NewInstanceRunningWaiter(d.c).Wait(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{id}}, time.Hour); err != nil {
		return apiErr(err, "wait for %s to run", id)
	}
	return nil
}

// DeleteServer implements provider.Deleter with TerminateInstances.
func (d *Driver) DeleteServer(ctx context.Context, id string) error {
	if _, err := d.c.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{id}}); err != nil && !errors.Is(apiErr(err, ""), provider.ErrNotFound) {
		return apiErr(err, "terminate %s", id)
	}
	return nil
}

// TagServer implements provider.Tagger: the whole tag is the key, so that
// two runs' claims are two tags, never one overwriting the other.
// https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_CreateTags.html
func (d *Driver) TagServer(ctx context.Context, id, tag string) error {
	if _, err := d.c.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{id}, Tags: []types.Tag{{Key: sdk.String(tag), Value: sdk.String("")}}}); err != nil {
		return apiErr(err, "tag %s with %s", id, tag)
	}
	return nil
}

// RenameServer implements provider.Renamer: an instance's name is its Name
// tag.
// https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_CreateTags.html
func (d *Driver) RenameServer(ctx context.Context, id, name string) error {
	if _, err := d.c.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{id}, Tags: []types.Tag{{Key: sdk.String("Name"), Value: sdk.String(name)}}}); err != nil {
		return apiErr(err, "rename %s to %s", id, name)
	}
	return nil
}

// UntagServer implements provider.Tagger.
// https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_DeleteTags.html
func (d *Driver) UntagServer(ctx context.Context, id, tag string) error {
	if _, err := d.c.DeleteTags(ctx, &ec2.DeleteTagsInput{Resources: []string{id}, Tags: []types.Tag{{Key: sdk.String(tag)}}}); err != nil && !errors.Is(apiErr(err, ""), provider.ErrNotFound) {
		return apiErr(err, "untag %s (%s)", id, tag)
	}
	return nil
}

// FindTagged implements provider.TagFinder; tag is "key:value".
func (d *Driver) FindTagged(ctx context.Context, t string) ([]provider.Server, []provider.Image, error) {
	k, v, _ := strings.Cut(t, ":")
	f := []types.Filter{{Name: sdk.String("tag:" + k), Values: []string{v}}}
	list, err := d.describe(ctx, &ec2.DescribeInstancesInput{Filters: f})
	if err != nil {
		return nil, nil, apiErr(err, "find instances tagged %s", t)
	}
	var servers []provider.Server
	for i := range list {
		servers = append(servers, *toServer(&list[i]))
	}
	out, err := d.c.DescribeImages(ctx, &ec2.DescribeImagesInput{Owners: []string{"self"}, Filters: f})
	if err != nil {
		return nil, nil, apiErr(err, "find images tagged %s", t)
	}
	var images []provider.Image
	for i := range out.Images {
		images = append(images, *toImage(&out.Images[i]))
	}
	return servers, images, nil
}

// FindTagPrefix implements provider.TagPrefixFinder: instances with a tag
// key starting with prefix (vmswap's marks are keys with empty values).
// https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_DescribeInstances.html
func (d *Driver) FindTagPrefix(ctx context.Context, prefix string) ([]provider.Server, error) {
	list, err := d.describe(ctx, &ec2.DescribeInstancesInput{Filters: []types.Filter{{Name: sdk.String("tag-key"), Values: []string{prefix + "*"}}}})
	if err != nil {
		return nil, apiErr(err, "find instances with a tag %s*", prefix)
	}
	var out []provider.Server
	for i := range list {
		out = append(out, *toServer(&list[i]))
	}
	return out, nil
}

// AssignedTo implements provider.IPAssigner for Elastic IPs.
// https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_DescribeAddresses.html
func (d *Driver) AssignedTo(ctx context.Context, ip string) (string, error) {
	out, err := d.c.DescribeAddresses(ctx, &ec2.DescribeAddressesInput{PublicIps: []string{ip}})
	if err != nil {
		return "", apiErr(err, "describe Elastic IP %s", ip)
	}
	if len(out.Addresses) == 0 {
		return "", fmt.Errorf("aws: Elastic IP %s: %w", ip, provider.ErrNotFound)
	}
	return sdk.ToString(out.Addresses[0].InstanceId), nil
}

// AssignIP implements provider.IPAssigner with AssociateAddress
// (reassociation allowed), confirmed by reading the association back.
// https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_AssociateAddress.html
func (d *Driver) AssignIP(ctx context.Context, ip, serverID string) error {
	out, err := d.c.DescribeAddresses(ctx, &ec2.DescribeAddressesInput{PublicIps: []string{ip}})
	if err != nil || len(out.Addresses) == 0 {
		return apiErr(err, "describe Elastic IP %s", ip)
	}
	a := out.Addresses[0]
	if sdk.ToString(a.InstanceId) == serverID {
		return nil
	}
	if _, err := d.c.AssociateAddress(ctx, &ec2.AssociateAddressInput{AllocationId: a.AllocationId, InstanceId: sdk.String(serverID), AllowReassociation: sdk.Bool(true)}); err != nil {
		return apiErr(err, "associate Elastic IP %s with %s", ip, serverID)
	}
	return provider.Poll(ctx, max(d.cfg.PollInterval, 100*time.Millisecond), func() (bool, error) {
		cur, err := d.AssignedTo(ctx, ip)
		return cur == serverID, err
	})
}
