package hetzner

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hetznercloud/hcloud-go/v2/hcloud"

	"github.com/vmswap/vmswap/provider"
)

var (
	_ provider.Compute          = (*Driver)(nil)
	_ provider.IPAssigner       = (*Driver)(nil)
	_ provider.EntrypointLister = (*Driver)(nil)
	_ provider.SizeLister       = (*Driver)(nil)
	_ provider.TagPrefixFinder  = (*Driver)(nil)
)

// Driver implements provider.Compute, and provider.IPAssigner for floating
// IPs.
var _ provider.TaggedLister = (*Driver)(nil)

type Driver struct {
	c    *hcloud.Client
	prog provider.Progress
	poll time.Duration

	mu    sync.Mutex
	seen  map[int64]*hcloud.Server // servers GetServer read, for Launch to copy
	types []*hcloud.ServerType     // the server types, read once per process
	// labels serialises read-modify-write of each server's labels within
	// this process (Hetzner replaces a server's labels whole).
	labels sync.Map // server ID -> *sync.Mutex
	// tagged shares the label-selected server lists that swaps asking at
	// once read (a wave's sources, its claims read back).
	tagged provider.SharedReads[[]*hcloud.Server]
}

// New returns a driver for cfg. It never reads the environment.
func New(cfg Config) (*Driver, error) {
	c, err := NewClient(cfg)
	if err != nil {
		return nil, err
	}
	prog := cfg.Progress
	if prog == nil {
		prog = func(string, ...any) {}
	}
	poll := cfg.PollInterval
	if poll <= 0 {
		poll = time.Second
	}
	return &Driver{c: c, prog: prog, poll: poll}, nil
}

// Client returns the hcloud-go client, for the other Hetzner drivers.
func (d *Driver) Client() *hcloud.Client { return d.c }

// Label turns one of vmswap's tags into a label (see the package comment).
func Label(tag string) (key, value string) {
	if run, ok := strings.CutPrefix(tag, "vmswap-claim:"); ok {
		return "vmswap-claim/" + run, ""
	}
	if k, v, ok := strings.Cut(tag, "="); ok {
		return k, v
	}
	if k, v, ok := strings.Cut(tag, ":"); ok {
		return k, v
	}
	return tag, ""
}

// Tag turns a label into the tag vmswap knows it by.
func Tag(key, value string) string {
	if run, ok := strings.CutPrefix(key, "vmswap-claim/"); ok {
		return "vmswap-claim:" + run
	}
	if strings.HasPrefix(key, "vmswap") {
		return key + ":" + value
	}
	if value == "" {
		return key
	}
	return key + "=" + value
}

var simpleSelector = regexp.MustCompile(`^[A-Za-z0-9]([-_./A-Za-z0-9]*[A-Za-z0-9])?(=([A-Za-z0-9]([-_.A-Za-z0-9]*[A-Za-z0-9])?)?)?$`)

// SelectorTag returns the tag a server must carry to match a load
// balancer's label selector, when one label does: "k=v" (or "k==v") and
// "k". Anything else (negations, sets, several terms) is not ok: vmswap
// cannot keep a new server out of such a pool until it is verified.
func SelectorTag(sel string) (string, bool) {
	sel = strings.ReplaceAll(strings.TrimSpace(sel), "==", "=")
	if !simpleSelector.MatchString(sel) {
		return "", false
	}
	return Tag(Label(sel)), true
}

// Selector is the label selector matching servers that carry tag.
func Selector(tag string) string {
	k, v := Label(tag)
	if v == "" {
		return k
	}
	return k + "=" + v
}

func tags(labels map[string]string) []string {
	out := make([]string, 0, len(labels))
	for k, v := range labels {
		out = append(out, Tag(k, v))
	}
	slices.Sort(out)
	return out
}

func serverID(id string) (int64, error) {
	n, err := strconv.ParseInt(id, 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("hetzner: %q is not a server ID", id)
	}
	return n, nil
}

func toServer(s *hcloud.Server) *provider.Server {
	out := &provider.Server{ID: strconv.FormatInt(s.ID, 10), Name: s.Name, Tags: tags(s.Labels)}
	switch s.Status {
	case hcloud.ServerStatusRunning:
		out.Status = provider.StatusRunning
	case hcloud.ServerStatusOff:
		out.Status = provider.StatusOff
	case hcloud.ServerStatusDeleting:
		out.Status = provider.StatusGone
	default:
		out.Status = provider.StatusPending
	}
	if t := s.ServerType; t != nil {
		out.Size, out.VCPUs, out.MemoryMB, out.DiskGB = t.Name, t.Cores, int(math.Round(float64(t.Memory)*1024)), t.Disk
	}
	if s.PrimaryDiskSize > 0 {
		out.DiskGB = s.PrimaryDiskSize
	}
	if s.Location != nil {
		out.Region = s.Location.Name
	}
	if !s.PublicNet.IPv4.IsUnspecified() {
		out.PublicIP = s.PublicNet.IPv4.IP.String()
	}
	if n := s.PublicNet.IPv6.Network; n != nil && !s.PublicNet.IPv6.IsUnspecified() {
		// Hetzner routes a /64 to the server; by convention it answers on ::1.
		ip := slices.Clone(n.IP.To16())
		ip[15] |= 1
		out.PublicIPv6, out.PublicIPv6Net = ip.String(), n.String()
	}
	for _, v := range s.Volumes {
		out.Volumes = append(out.Volumes, strconv.FormatInt(v.ID, 10))
	}
	return out
}

func (d *Driver) remember(s *hcloud.Server) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.seen == nil {
		d.seen = map[int64]*hcloud.Server{}
	}
	d.seen[s.ID] = s
}

// ServersTagged implements provider.TaggedLister: the servers whose
// labels carry the tag, one list for the callers asking at once.
// https://docs.hetzner.cloud/reference/cloud#servers-get-all-servers
func (d *Driver) ServersTagged(ctx context.Context, tag string) ([]provider.Server, error) {
	sel := Selector(tag)
	ss, err := d.tagged.Do(ctx, sel, func(ctx context.Context) ([]*hcloud.Server, error) {
		return d.c.Server.AllWithOpts(ctx, hcloud.ServerListOpts{ListOpts: hcloud.ListOpts{LabelSelector: sel}})
	})
	if err != nil {
		return nil, Wrap(err, "list servers labelled %s", sel)
	}
	out := make([]provider.Server, len(ss))
	for i, s := range ss {
		d.remember(s)
		out[i] = *toServer(s)
	}
	return out, nil
}

func (d *Driver) get(ctx context.Context, id int64) (*hcloud.Server, error) {
	s, _, err := d.c.Server.GetByID(ctx, id)
	if err != nil {
		return nil, Wrap(err, "get server %d", id)
	}
	if s == nil {
		return nil, fmt.Errorf("hetzner: server %d: %w", id, provider.ErrNotFound)
	}
	return s, nil
}

// GetServer implements provider.ServerGetter: a server by ID or name (names
// are unique in a Hetzner project).
// https://docs.hetzner.cloud/reference/cloud#servers-get-a-server
func (d *Driver) GetServer(ctx context.Context, ref string) (*provider.Server, error) {
	var s *hcloud.Server
	var err error
	if id, perr := strconv.ParseInt(ref, 10, 64); perr == nil {
		s, err = d.get(ctx, id)
	} else {
		s, _, err = d.c.Server.GetByName(ctx, ref)
		if err == nil && s == nil {
			return nil, fmt.Errorf("hetzner: server %q: %w", ref, provider.ErrNotFound)
		}
		if err != nil {
			err = Wrap(err, "find server %q", ref)
		}
	}
	if err != nil {
		return nil, err
	}
	d.remember(s)
	return toServer(s), nil
}

// serverTypes is the server type catalogue, read once per process.
// https://docs.hetzner.cloud/reference/cloud#server-types-list-server-types
func (d *Driver) serverTypes(ctx context.Context) ([]*hcloud.ServerType, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.types == nil {
		ts, err := d.c.ServerType.All(ctx)
		if err != nil {
			return nil, Wrap(err, "list server types")
		}
		d.types = ts
	}
	return d.types, nil
}

// toSize converts a server type, priced in the first location listed
// (prices differ a little by location).
func toSize(t *hcloud.ServerType) *provider.Size {
	sz := &provider.Size{Slug: t.Name, VCPUs: t.Cores, MemoryMB: int(math.Round(float64(t.Memory) * 1024)), DiskGB: t.Disk}
	if len(t.Pricings) > 0 {
		p := t.Pricings[0]
		monthly, _ := strconv.ParseFloat(p.Monthly.Gross, 64)
		hourly, _ := strconv.ParseFloat(p.Hourly.Gross, 64)
		if monthly > 0 && hourly > 0 {
			// Hetzner bills by the hour up to the monthly price, and bills
			// a server that is off as one that runs.
			sz.Price = &provider.Price{Monthly: monthly, Hourly: hourly, Currency: p.Monthly.Currency, MaxHoursPerMonth: int(math.Ceil(monthly / hourly)), BilledWhenOff: true}
			if sz.Price.Currency == "" {
				sz.Price.Currency = "EUR"
			}
		}
	}
	return sz
}

// GetSize implements provider.SizeGetter.
func (d *Driver) GetSize(ctx context.Context, slug string) (*provider.Size, error) {
	ts, err := d.serverTypes(ctx)
	if err != nil {
		return nil, err
	}
	var some []string
	for _, t := range ts {
		if t.Name == slug {
			return toSize(t), nil
		}
		if len(some) < 6 {
			some = append(some, t.Name)
		}
	}
	return nil, fmt.Errorf("hetzner: server type %q: %w (types include %s)", slug, provider.ErrNotFound, strings.Join(some, ", "))
}

// ListSizes implements provider.SizeLister.
func (d *Driver) ListSizes(ctx context.Context) ([]provider.Size, error) {
	ts, err := d.serverTypes(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]provider.Size, 0, len(ts))
	for _, t := range ts {
		out = append(out, *toSize(t))
	}
	return out, nil
}

// imagePlan finds the plan ID at the end of the name the runner gives an
// image: vmswap-SOURCE-YYYYMMDD-HHMMSS-PLAN.
var imagePlan = regexp.MustCompile(`^vmswap-.+-\d{8}-\d{6}-([a-z0-9][a-z0-9-]*)$`)

// findImage returns the snapshot whose description is name.
// https://docs.hetzner.cloud/reference/cloud#images-list-images
func (d *Driver) findImage(ctx context.Context, name string) (*hcloud.Image, error) {
	imgs, err := d.c.Image.AllWithOpts(ctx, hcloud.ImageListOpts{Type: []hcloud.ImageType{hcloud.ImageTypeSnapshot}})
	if err != nil {
		return nil, Wrap(err, "list snapshots")
	}
	for _, im := range imgs {
		if im.Description == name {
			return im, nil
		}
	}
	return nil, nil
}

func toImage(im *hcloud.Image) *provider.Image {
	return &provider.Image{ID: strconv.FormatInt(im.ID, 10), Name: im.Description, MinDiskGB: int(math.Ceil(float64(im.DiskSize)))}
}

// FindImage implements provider.Snapshotter: a snapshot by description
// (Hetzner snapshots have no name).
func (d *Driver) FindImage(ctx context.Context, name string) (*provider.Image, error) {
	im, err := d.findImage(ctx, name)
	if err != nil || im == nil {
		return nil, err
	}
	return toImage(im), nil
}

// Snapshot implements provider.Snapshotter with create_image: the server
// keeps running, and the image is crash-consistent. The image exists (as
// "creating") from the moment Hetzner accepts the action, so a retried or
// resumed call finds it by its description and waits for it rather than
// making a second one.
// https://docs.hetzner.cloud/reference/cloud#server-actions-create-image-from-a-server
func (d *Driver) Snapshot(ctx context.Context, s *provider.Server, spec provider.SnapshotSpec) (*provider.Image, error) {
	name, started := spec.Name, spec.Started
	id, err := serverID(s.ID)
	if err != nil {
		return nil, err
	}
	var im *hcloud.Image
	if !spec.First || spec.AwaitOnly {
		// Asked before (a resumed run): the image may exist.
		if im, err = d.findImage(ctx, name); err != nil {
			return nil, err
		}
	}
	if im == nil && spec.AwaitOnly {
		return nil, nil
	}
	if im == nil {
		labels := map[string]string{}
		if m := imagePlan.FindStringSubmatch(name); m != nil {
			// The plan's label, so that cleanup finds the image.
			labels["vmswap"] = m[1]
		}
		desc := name
		res, _, err := d.c.Server.CreateImage(ctx, &hcloud.Server{ID: id}, &hcloud.ServerCreateImageOpts{Type: hcloud.ImageTypeSnapshot, Description: &desc, Labels: labels})
		if err != nil {
			// The call may have made the image before failing.
			if im, ferr := d.findImage(ctx, name); ferr == nil && im != nil {
				return d.waitImage(ctx, im, started)
			}
			return nil, Wrap(err, "snapshot server %d", id)
		}
		if started != nil && res.Action != nil {
			started(strconv.FormatInt(res.Action.ID, 10))
		}
		if err := WaitAction(ctx, d.c, d.prog, fmt.Sprintf("snapshot of server %d", id), res.Action); err != nil {
			return nil, err
		}
		im = res.Image
	}
	return d.waitImage(ctx, im, started)
}

// waitImage waits until the snapshot is available.
func (d *Driver) waitImage(ctx context.Context, im *hcloud.Image, started func(string)) (*provider.Image, error) {
	if started != nil && im.Status != hcloud.ImageStatusAvailable {
		started("image-" + strconv.FormatInt(im.ID, 10))
	}
	start := time.Now()
	err := provider.Poll(ctx, d.poll, func() (bool, error) {
		got, _, err := d.c.Image.GetByID(ctx, im.ID)
		if err != nil {
			return false, Wrap(err, "get image %d", im.ID)
		}
		if got == nil {
			return false, fmt.Errorf("hetzner: image %d is gone: its creation failed (the server's create_image action says why) or someone deleted it", im.ID)
		}
		im = got
		if im.Status == hcloud.ImageStatusAvailable {
			return true, nil
		}
		d.prog("hetzner: image %d is %s (%s)", im.ID, im.Status, time.Since(start).Round(time.Second))
		return false, nil
	})
	if err != nil {
		return nil, err
	}
	return toImage(im), nil
}

// DeleteImage implements provider.Snapshotter.
// https://docs.hetzner.cloud/reference/cloud#images-delete-an-image
func (d *Driver) DeleteImage(ctx context.Context, id string) error {
	n, err := strconv.ParseInt(id, 10, 64)
	if err != nil {
		return fmt.Errorf("hetzner: %q is not an image ID", id)
	}
	if _, err := d.c.Image.Delete(ctx, &hcloud.Image{ID: n}); err != nil && !hcloud.IsError(err, hcloud.ErrorCodeNotFound) {
		return Wrap(err, "delete image %d", n)
	}
	return nil
}

// launchKey is the label that carries a launch token.
const launchKey = "vmswap-launch"

// FindLaunched implements provider.Launcher.
// https://docs.hetzner.cloud/reference/cloud#servers-list-servers
func (d *Driver) FindLaunched(ctx context.Context, spec provider.LaunchSpec) (*provider.Server, error) {
	ss, err := d.c.Server.AllWithOpts(ctx, hcloud.ServerListOpts{ListOpts: hcloud.ListOpts{LabelSelector: launchKey + "=" + spec.Token}})
	if err != nil {
		return nil, Wrap(err, "find launched server")
	}
	if len(ss) == 0 {
		return nil, nil
	}
	return toServer(ss[0]), nil
}

// Launch implements provider.Launcher: a server from the snapshot in the
// source's location, with its private networks, firewalls, placement group
// and labels. The source's SSH keys are in its authorized_keys, which the
// snapshot carries. A source with volumes is refused before anything is
// made: a volume cannot follow an image.
// https://docs.hetzner.cloud/reference/cloud#servers-create-a-server
func (d *Driver) Launch(ctx context.Context, spec provider.LaunchSpec) (*provider.Server, error) {
	if !spec.First {
		if s, err := d.FindLaunched(ctx, spec); err != nil || s != nil {
			return s, err
		}
	}
	srcID, err := serverID(spec.Source.ID)
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	src := d.seen[srcID]
	d.mu.Unlock()
	if src == nil {
		if src, err = d.get(ctx, srcID); err != nil {
			return nil, err
		}
	}
	if len(src.Volumes) > 0 {
		return nil, fmt.Errorf("hetzner: server %s has %d volume(s) attached, which a snapshot does not carry: move their data or detach them first", src.Name, len(src.Volumes))
	}
	imgID, err := strconv.ParseInt(spec.Image.ID, 10, 64)
	if err != nil {
		return nil, fmt.Errorf("hetzner: %q is not an image ID", spec.Image.ID)
	}
	labels := map[string]string{}
	for k, v := range src.Labels {
		// The source's own labels are copied (firewalls and load balancers
		// select by them); vmswap's of earlier plans, launches and claims
		// are not, nor those a load balancer would put the server in its
		// pool by before it is verified.
		if strings.HasPrefix(k, "vmswap") || slices.ContainsFunc(spec.WithoutTags, func(t string) bool {
			// A selector of a bare key matches the key whatever its value.
			tk, tv := Label(t)
			return tk == k && (tv == v || tv == "")
		}) {
			continue
		}
		labels[k] = v
	}
	for _, t := range spec.Tags {
		k, v := Label(t)
		labels[k] = v
	}
	if spec.Claim != "" {
		k, v := Label(spec.Claim)
		labels[k] = v
	}
	labels[launchKey] = spec.Token
	opts := hcloud.ServerCreateOpts{
		Name:           spec.Name,
		ServerType:     &hcloud.ServerType{Name: spec.Size},
		Image:          &hcloud.Image{ID: imgID},
		Location:       src.Location,
		Labels:         labels,
		PlacementGroup: src.PlacementGroup,
		PublicNet: &hcloud.ServerCreatePublicNet{
			EnableIPv4: !src.PublicNet.IPv4.IsUnspecified(),
			EnableIPv6: !src.PublicNet.IPv6.IsUnspecified(),
		},
	}
	if opts.Location != nil {
		opts.Location = &hcloud.Location{Name: opts.Location.Name}
	}
	if src.PlacementGroup != nil {
		opts.PlacementGroup = &hcloud.PlacementGroup{ID: src.PlacementGroup.ID}
	}
	for _, n := range src.PrivateNet {
		if n.Network != nil {
			opts.Networks = append(opts.Networks, &hcloud.Network{ID: n.Network.ID})
		}
	}
	for _, f := range src.PublicNet.Firewalls {
		if f != nil {
			opts.Firewalls = append(opts.Firewalls, &hcloud.ServerCreateFirewall{Firewall: f.Firewall})
		}
	}
	res, _, err := d.c.Server.Create(ctx, opts)
	if err != nil {
		// The create may have happened before the error: look for it.
		if s, ferr := d.FindLaunched(ctx, spec); ferr == nil && s != nil {
			return s, nil
		}
		return nil, Wrap(err, "create server %q", spec.Name)
	}
	return toServer(res.Server), nil
}

// WaitRunning implements provider.Launcher.
func (d *Driver) WaitRunning(ctx context.Context, id string) (*provider.Server, error) {
	n, err := serverID(id)
	if err != nil {
		return nil, err
	}
	var out *provider.Server
	start := time.Now()
	err = provider.Poll(ctx, d.poll, func() (bool, error) {
		s, err := d.get(ctx, n)
		if err != nil {
			return false, err
		}
		out = toServer(s)
		if out.Status == provider.StatusRunning && out.PublicIP != "" {
			return true, nil
		}
		d.prog("hetzner: server %d is %s (%s)", n, s.Status, time.Since(start).Round(time.Second))
		return false, nil
	})
	return out, err
}

// PowerOff implements provider.PowerController: an ACPI shutdown, then a
// hard power off if the server is not off within timeout. Hetzner's
// shutdown action ends once the signal is sent, so the server's status is
// what is waited on.
// https://docs.hetzner.cloud/reference/cloud#server-actions-shutdown-a-server
func (d *Driver) PowerOff(ctx context.Context, id string, timeout time.Duration) error {
	n, err := serverID(id)
	if err != nil {
		return err
	}
	s, err := d.get(ctx, n)
	if err != nil {
		return err
	}
	if s.Status == hcloud.ServerStatusOff {
		return nil
	}
	a, _, err := d.c.Server.Shutdown(ctx, s)
	if hcloud.IsError(err, hcloud.ErrorCodeLocked) {
		// Busy with an action under way (the shutdown a stopped run
		// sent): let it end, then see whether the server is off.
		d.prog("hetzner: server %d is busy with another action; waiting for it", n)
		if s, err = d.unlocked(ctx, n); err != nil {
			return err
		}
		if s.Status == hcloud.ServerStatusOff {
			return nil
		}
		a, _, err = d.c.Server.Shutdown(ctx, s)
	}
	if err == nil {
		if err = WaitAction(ctx, d.c, d.prog, fmt.Sprintf("shut down server %d", n), a); err == nil {
			wctx, cancel := context.WithTimeout(ctx, timeout)
			err = d.waitStatus(wctx, n, hcloud.ServerStatusOff)
			cancel()
			if err == nil {
				return nil
			}
		}
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	d.prog("hetzner: server %d did not shut down (%v); powering it off", n, err)
	a, _, err = d.c.Server.Poweroff(ctx, s)
	if err != nil {
		return Wrap(err, "power off server %d", n)
	}
	if err := WaitAction(ctx, d.c, d.prog, fmt.Sprintf("power off server %d", n), a); err != nil {
		return err
	}
	return d.waitStatus(ctx, n, hcloud.ServerStatusOff)
}

// unlocked waits until no action runs on the server and returns it.
func (d *Driver) unlocked(ctx context.Context, id int64) (*hcloud.Server, error) {
	var s *hcloud.Server
	err := provider.Poll(ctx, d.poll, func() (bool, error) {
		var err error
		s, err = d.get(ctx, id)
		return err == nil && !s.Locked, err
	})
	return s, err
}

func (d *Driver) waitStatus(ctx context.Context, id int64, want hcloud.ServerStatus) error {
	return provider.Poll(ctx, d.poll, func() (bool, error) {
		s, err := d.get(ctx, id)
		if err != nil {
			return false, err
		}
		return s.Status == want, nil
	})
}

// PowerOn implements provider.PowerController.
// https://docs.hetzner.cloud/reference/cloud#server-actions-power-on-a-server
func (d *Driver) PowerOn(ctx context.Context, id string) error {
	n, err := serverID(id)
	if err != nil {
		return err
	}
	s, err := d.get(ctx, n)
	if err != nil {
		return err
	}
	if s.Status == hcloud.ServerStatusRunning {
		return nil
	}
	a, _, err := d.c.Server.Poweron(ctx, s)
	if err != nil {
		return Wrap(err, "power on server %d", n)
	}
	if err := WaitAction(ctx, d.c, d.prog, fmt.Sprintf("power on server %d", n), a); err != nil {
		return err
	}
	return d.waitStatus(ctx, n, hcloud.ServerStatusRunning)
}

// RenameServer implements provider.Renamer.
// https://docs.hetzner.cloud/reference/cloud#servers-update-a-server
func (d *Driver) RenameServer(ctx context.Context, id, name string) error {
	n, err := serverID(id)
	if err != nil {
		return err
	}
	s, err := d.get(ctx, n)
	if err != nil || s.Name == name {
		return err
	}
	if _, _, err := d.c.Server.Update(ctx, s, hcloud.ServerUpdateOpts{Name: name}); err != nil {
		return Wrap(err, "rename server %d to %s", n, name)
	}
	return nil
}

// DeleteServer implements provider.Deleter.
// https://docs.hetzner.cloud/reference/cloud#servers-delete-a-server
func (d *Driver) DeleteServer(ctx context.Context, id string) error {
	n, err := serverID(id)
	if err != nil {
		return err
	}
	if _, _, err := d.c.Server.DeleteWithResult(ctx, &hcloud.Server{ID: n}); err != nil && !hcloud.IsError(err, hcloud.ErrorCodeNotFound) {
		return Wrap(err, "delete server %d", n)
	}
	return nil
}

// relabel reads a server's labels, changes them and writes them back.
// Hetzner replaces labels whole, so two writers at once can lose one's
// change: within this process the writes are serialised, and a claim is
// read back by the runner, which withdraws when it sees another.
func (d *Driver) relabel(ctx context.Context, id, verb string, change func(map[string]string) bool) error {
	n, err := serverID(id)
	if err != nil {
		return err
	}
	mu, _ := d.labels.LoadOrStore(n, &sync.Mutex{})
	mu.(*sync.Mutex).Lock()
	defer mu.(*sync.Mutex).Unlock()
	s, err := d.get(ctx, n)
	if err != nil {
		return err
	}
	labels := map[string]string{}
	for k, v := range s.Labels {
		labels[k] = v
	}
	if !change(labels) {
		return nil
	}
	if _, _, err := d.c.Server.Update(ctx, s, hcloud.ServerUpdateOpts{Labels: labels}); err != nil {
		return Wrap(err, "%s server %d", verb, n)
	}
	return nil
}

// TagServer implements provider.Tagger with a label.
func (d *Driver) TagServer(ctx context.Context, id, tag string) error {
	k, v := Label(tag)
	return d.relabel(ctx, id, "label", func(l map[string]string) bool {
		if old, ok := l[k]; ok && old == v {
			return false
		}
		l[k] = v
		return true
	})
}

// UntagServer implements provider.Tagger. A server that is gone is a no-op.
func (d *Driver) UntagServer(ctx context.Context, id, tag string) error {
	k, v := Label(tag)
	err := d.relabel(ctx, id, "unlabel", func(l map[string]string) bool {
		if old, ok := l[k]; !ok || old != v {
			return false
		}
		delete(l, k)
		return true
	})
	if errors.Is(err, provider.ErrNotFound) {
		return nil
	}
	return err
}

// FindTagged implements provider.TagFinder: servers and snapshots by label.
func (d *Driver) FindTagged(ctx context.Context, tag string) ([]provider.Server, []provider.Image, error) {
	sel := Selector(tag)
	ss, err := d.c.Server.AllWithOpts(ctx, hcloud.ServerListOpts{ListOpts: hcloud.ListOpts{LabelSelector: sel}})
	if err != nil {
		return nil, nil, Wrap(err, "list servers labelled %s", sel)
	}
	var servers []provider.Server
	for _, s := range ss {
		servers = append(servers, *toServer(s))
	}
	imgs, err := d.c.Image.AllWithOpts(ctx, hcloud.ImageListOpts{Type: []hcloud.ImageType{hcloud.ImageTypeSnapshot}, ListOpts: hcloud.ListOpts{LabelSelector: sel}})
	if err != nil {
		return nil, nil, Wrap(err, "list snapshots labelled %s", sel)
	}
	var images []provider.Image
	for _, im := range imgs {
		images = append(images, *toImage(im))
	}
	return servers, images, nil
}

// FindTagPrefix implements provider.TagPrefixFinder: every server with a
// tag (as vmswap shows labels) starting with prefix.
func (d *Driver) FindTagPrefix(ctx context.Context, prefix string) ([]provider.Server, error) {
	ss, err := d.c.Server.All(ctx)
	if err != nil {
		return nil, Wrap(err, "list servers")
	}
	var out []provider.Server
	for _, s := range ss {
		srv := toServer(s)
		if slices.ContainsFunc(srv.Tags, func(t string) bool { return strings.HasPrefix(t, prefix) }) {
			out = append(out, *srv)
		}
	}
	return out, nil
}

// Entrypoints implements provider.EntrypointLister: load balancers that
// target the server (by ID or by a label selector it matches) and floating
// IPs assigned to it.
func (d *Driver) Entrypoints(ctx context.Context, s *provider.Server) ([]provider.Entrypoint, error) {
	id, err := serverID(s.ID)
	if err != nil {
		return nil, err
	}
	lbs, err := d.c.LoadBalancer.All(ctx)
	if err != nil {
		return nil, Wrap(err, "list load balancers")
	}
	var out []provider.Entrypoint
	for _, lb := range lbs {
		for _, t := range lb.Targets {
			switch {
			case t.Type == hcloud.LoadBalancerTargetTypeServer && t.Server != nil && t.Server.Server != nil && t.Server.Server.ID == id:
				out = append(out, provider.Entrypoint{Kind: "load balancer", ID: strconv.FormatInt(lb.ID, 10)})
			case t.Type == hcloud.LoadBalancerTargetTypeLabelSelector && t.LabelSelector != nil && slices.ContainsFunc(t.Targets, func(x hcloud.LoadBalancerTarget) bool {
				return x.Server != nil && x.Server.Server != nil && x.Server.Server.ID == id
			}):
				tag, ok := SelectorTag(t.LabelSelector.Selector)
				if !ok {
					return nil, fmt.Errorf("hetzner: load balancer %s selects %s by the label selector %q, which vmswap cannot keep a new server out of until it is verified (a copy of %s would match it at launch): give it a key=value selector, or target the servers by ID", lb.Name, s.Name, t.LabelSelector.Selector, s.Name)
				}
				out = append(out, provider.Entrypoint{Kind: "load balancer", ID: strconv.FormatInt(lb.ID, 10), ByTag: tag})
			}
		}
	}
	fips, err := d.c.FloatingIP.All(ctx)
	if err != nil {
		return nil, Wrap(err, "list floating IPs")
	}
	for _, f := range fips {
		if f.Server != nil && f.Server.ID == id {
			out = append(out, provider.Entrypoint{Kind: "floating IP", ID: f.IP.String()})
		}
	}
	return out, nil
}

// floatingIP finds a floating IP by its address.
func (d *Driver) floatingIP(ctx context.Context, ip string) (*hcloud.FloatingIP, error) {
	fips, err := d.c.FloatingIP.All(ctx)
	if err != nil {
		return nil, Wrap(err, "list floating IPs")
	}
	for _, f := range fips {
		if f.IP != nil && f.IP.String() == ip {
			return f, nil
		}
	}
	// A server's primary IP is not a cutover: say so rather than "not found".
	if pips, err := d.c.PrimaryIP.All(ctx); err == nil {
		for _, p := range pips {
			if p.IP != nil && (p.IP.String() == ip || p.Network != nil && p.Network.Contains(net.ParseIP(ip))) {
				return nil, fmt.Errorf("hetzner: %s is a primary IP, not a floating IP: Hetzner moves a primary IP only between powered-off servers, so moving it drops every request for as long as both are off; cut over through a floating IP or a load balancer instead: %w", ip, provider.ErrNotFound)
			}
		}
	}
	return nil, fmt.Errorf("hetzner: floating IP %s: %w", ip, provider.ErrNotFound)
}

// AssignedTo implements provider.IPAssigner for floating IPs.
// https://docs.hetzner.cloud/reference/cloud#floating-ips-get-a-floating-ip
func (d *Driver) AssignedTo(ctx context.Context, ip string) (string, error) {
	f, err := d.floatingIP(ctx, ip)
	if err != nil {
		return "", err
	}
	if f.Server == nil {
		return "", nil
	}
	return strconv.FormatInt(f.Server.ID, 10), nil
}

// AssignIP implements provider.IPAssigner: the floating IP moves to the
// server in one action, with no moment when it points nowhere.
// https://docs.hetzner.cloud/reference/cloud#floating-ip-actions-assign-a-floating-ip-to-a-server
func (d *Driver) AssignIP(ctx context.Context, ip, id string) error {
	return Converge(ctx, d.prog, "assign floating IP "+ip, func() error { return d.assignIP(ctx, ip, id) })
}

func (d *Driver) assignIP(ctx context.Context, ip, id string) error {
	n, err := serverID(id)
	if err != nil {
		return err
	}
	f, err := d.floatingIP(ctx, ip)
	if err != nil {
		return err
	}
	if f.Server != nil && f.Server.ID == n {
		return nil
	}
	a, _, err := d.c.FloatingIP.Assign(ctx, f, &hcloud.Server{ID: n})
	if err != nil {
		return Wrap(err, "assign floating IP %s to server %d", ip, n)
	}
	return WaitAction(ctx, d.c, d.prog, fmt.Sprintf("assign floating IP %s to server %d", ip, n), a)
}
