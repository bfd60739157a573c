// Package provider defines what vmswap needs from a compute provider: small
// interfaces that each driver implements as far as its cloud allows, and the
// provider-neutral types the runner works with. SDK types never cross this
// boundary.
//
// Every method honours ctx, is safe for concurrent use, and returns errors
// prefixed by the driver's name that never contain credentials.
package provider

import (
	"context"
	"errors"
	"math"
	"time"
)

// ErrNotFound is returned (wrapped) when a server, image or address does not
// exist.
var ErrNotFound = errors.New("not found")

// Server is a compute instance.
type Server struct {
	ID       string `json:"id" yaml:"id"`
	Name     string `json:"name" yaml:"name"`
	Size     string `json:"size" yaml:"size"`
	Status   string `json:"status" yaml:"status"` // running, off, pending
	PublicIP string `json:"public_ip" yaml:"public_ip"`
	// PublicIPv6 is the server's public IPv6 address, "" without IPv6.
	PublicIPv6 string `json:"public_ipv6,omitempty" yaml:"public_ipv6,omitempty"`
	// PublicIPv6Net is the IPv6 network routed to the server where it has
	// one of its own (Hetzner: a /64, whose ::1 is PublicIPv6), "" otherwise.
	PublicIPv6Net string   `json:"public_ipv6_net,omitempty" yaml:"public_ipv6_net,omitempty"`
	Region        string   `json:"region" yaml:"region"`
	Tags          []string `json:"tags,omitempty" yaml:"tags,omitempty"`
	MemoryMB      int      `json:"memory_mb" yaml:"memory_mb"`
	VCPUs         int      `json:"vcpus" yaml:"vcpus"`
	DiskGB        int      `json:"disk_gb" yaml:"disk_gb"`
	// Volumes are the IDs of block volumes attached to the server: a
	// snapshot does not carry them, so a swap cannot move them.
	Volumes []string `json:"volumes,omitempty" yaml:"volumes,omitempty"`
}

// Server statuses.
const (
	StatusRunning = "running"
	StatusOff     = "off"
	StatusPending = "pending"
	// StatusGone is a server being deleted or deleted (EC2 shows terminated
	// instances for a while).
	StatusGone = "gone"
)

// Image is a machine image made from a server.
type Image struct {
	ID        string `json:"id" yaml:"id"`
	Name      string `json:"name" yaml:"name"`
	MinDiskGB int    `json:"min_disk_gb" yaml:"min_disk_gb"`
}

// Size is a server size (DigitalOcean slug, EC2 instance type).
type Size struct {
	Slug     string `json:"slug" yaml:"slug"`
	MemoryMB int    `json:"memory_mb" yaml:"memory_mb"`
	VCPUs    int    `json:"vcpus" yaml:"vcpus"`
	DiskGB   int    `json:"disk_gb" yaml:"disk_gb"`
	// NoIPv6 is set for a size that cannot have an IPv6 address (some EC2
	// instance types).
	NoIPv6 bool `json:"no_ipv6,omitempty" yaml:"no_ipv6,omitempty"`
	// Price is what the provider's API says the size costs; nil where it
	// reports no price (EC2 without the Pricing API).
	Price *Price `json:"price,omitempty" yaml:"price,omitempty"`
}

// Price is a size's price as its provider's API reports it.
type Price struct {
	Monthly  float64 `json:"monthly" yaml:"monthly"`
	Hourly   float64 `json:"hourly" yaml:"hourly"`
	Currency string  `json:"currency" yaml:"currency"`
	// MaxHoursPerMonth caps the hours billed in a month (DigitalOcean: 672,
	// so a full month costs Monthly). Zero: no cap.
	MaxHoursPerMonth int `json:"max_hours_per_month,omitempty" yaml:"max_hours_per_month,omitempty"`
	// BilledWhenOff: a powered-off server is billed as if it ran
	// (DigitalOcean droplets).
	BilledWhenOff bool `json:"billed_when_off,omitempty" yaml:"billed_when_off,omitempty"`
}

// For is the price of h hours of one server: hourly, with each month's
// hours capped where the provider caps them.
func (p *Price) For(h float64) float64 {
	if p.MaxHoursPerMonth <= 0 {
		return h * p.Hourly
	}
	const month = 730 // hours in an average month
	full := math.Floor(h / month)
	rest := math.Min(h-full*month, float64(p.MaxHoursPerMonth))
	return full*p.Monthly + rest*p.Hourly
}

// ServerGetter finds servers.
type ServerGetter interface {
	// GetServer returns the server with the given ID or, failing that, the
	// one server with that name. No match wraps ErrNotFound; two servers
	// with the name is an error saying to use the ID.
	GetServer(ctx context.Context, ref string) (*Server, error)
}

// SizeGetter reads the provider's size catalogue.
type SizeGetter interface {
	// GetSize returns the size with the slug, or an error wrapping
	// ErrNotFound that lists a few valid slugs.
	GetSize(ctx context.Context, slug string) (*Size, error)
}

// TagPrefixFinder finds servers by the start of a tag, across every plan
// in an account: how `cleanup --expired --provider` finds retired servers.
type TagPrefixFinder interface {
	FindTagPrefix(ctx context.Context, prefix string) ([]Server, error)
}

// SizeLister lists the sizes a provider offers, for saying which would do
// when the one asked for cannot.
type SizeLister interface {
	ListSizes(ctx context.Context) ([]Size, error)
}

// SnapshotSpec says how to image a server.
type SnapshotSpec struct {
	// Name is the image's name, unique to this step of this run.
	Name string
	// First says no snapshot under this name was ever asked for (the run
	// journalled the name just now): the driver need not look for an
	// earlier one before asking. Every call counts against the rate limit.
	First bool
	// Started, if set, is called with the provider's operation ID as soon
	// as it is known, before waiting.
	Started func(op string)
	// AwaitOnly starts no imaging: the image under the name, or an imaging
	// of the server under way, is waited for and returned; with neither,
	// Snapshot returns nil and no error. A rollback uses it to find what a
	// killed run's imaging makes, where the provider creates the image
	// only once the imaging ends (DigitalOcean).
	AwaitOnly bool
}

// Snapshotter images a running server without stopping it.
type Snapshotter interface {
	// Snapshot images the server under spec.Name and waits until the image
	// is usable. It is idempotent: unless spec.First, an image with the
	// name, or an imaging of the server already under way, is returned or
	// waited for rather than another started.
	Snapshot(ctx context.Context, server *Server, spec SnapshotSpec) (*Image, error)
	// FindImage returns the image with the name, or nil if there is none.
	FindImage(ctx context.Context, name string) (*Image, error)
	// DeleteImage deletes an image; one already gone is not an error.
	DeleteImage(ctx context.Context, id string) error
}

// LaunchSpec says what to launch.
type LaunchSpec struct {
	// Source is the server whose placement, network, keys and tags are copied.
	Source *Server
	// Image is the image to boot from.
	Image *Image
	// Size is the new server's size.
	Size string
	// Name of the new server.
	Name string
	// Token is unique to this launch step of this run. The driver stores it
	// on the server (tag or client token) so a retried or resumed launch
	// finds the server instead of creating a second one.
	Token string
	// First says no launch with this Token was ever asked for (the run
	// journalled the token just now): the driver need not look for one
	// before creating.
	First bool
	// Claim, if set, is a tag the new server is created with, as TagServer
	// would put it: the run's claim, without a call of its own. A driver
	// that cannot may leave it off; the caller tags what lacks it. A driver
	// whose tags are objects of their own (DigitalOcean) finds the launch
	// by its claim and name rather than a tag per launch, which would cost
	// a call to delete once the swap ends.
	Claim string
	// KeepMark says the launch's marker outlives the swap: the new server
	// keeps its run-suffixed name, and the marker tells a later swap of it
	// where its own name ends. A driver that marks launches by claim
	// gives this one its own marker too.
	KeepMark bool
	// Tags are extra tags, e.g. the plan's tag for finding orphans.
	Tags []string
	// WithoutTags are source tags not to copy: a tag a load balancer
	// selects its members by would put the new server in the pool before
	// it is verified.
	WithoutTags []string
}

// Launcher creates servers from images.
type Launcher interface {
	// Launch creates a server. It is idempotent by spec.Token: if a server
	// carrying the token exists, it is returned and nothing is created. It
	// returns as soon as the provider has accepted the request.
	Launch(ctx context.Context, spec LaunchSpec) (*Server, error)
	// FindLaunched returns the server launched with spec (its Token, or
	// where the driver marks launches by claim, its Claim and Name), or nil.
	FindLaunched(ctx context.Context, spec LaunchSpec) (*Server, error)
	// WaitRunning waits until the provider reports the server running with
	// a public address, and returns it.
	WaitRunning(ctx context.Context, id string) (*Server, error)
}

// PowerController stops and starts servers.
type PowerController interface {
	// PowerOff shuts the server down gracefully, forcing it off after
	// timeout. A server already off is not an error.
	PowerOff(ctx context.Context, id string, timeout time.Duration) error
	// PowerOn starts a server and waits until it runs. One already running
	// is not an error.
	PowerOn(ctx context.Context, id string) error
}

// Deleter deletes servers.
type Deleter interface {
	// DeleteServer deletes a server; one already gone is not an error.
	DeleteServer(ctx context.Context, id string) error
}

// TagFinder finds what vmswap created, by the tag every created resource
// carries.
type TagFinder interface {
	// FindTagged returns the servers and images carrying the tag.
	FindTagged(ctx context.Context, tag string) ([]Server, []Image, error)
}

// Tagger marks servers with tags that every vmswap, on any machine, sees
// when it reads the server: how a run claims the servers it swaps.
type Tagger interface {
	// TagServer adds the tag to the server. A tag the server has is a no-op,
	// so a repeated call is safe; a failed call may or may not have tagged.
	TagServer(ctx context.Context, id, tag string) error
	// UntagServer removes the tag. A tag the server lacks, or a server that
	// is gone, is a no-op.
	UntagServer(ctx context.Context, id, tag string) error
}

// ManyUntagger removes a tag from several servers in one call, where the
// provider takes a list: how a swap releases its claim on both servers.
type ManyUntagger interface {
	// UntagServers is UntagServer for each of ids, at once.
	UntagServers(ctx context.Context, tag string, ids ...string) error
}

// TagDeleter deletes a tag, where tags are objects of their own
// (DigitalOcean): a run's claim tag, once no server carries it, so that
// scheduled runs do not leave an empty tag each.
type TagDeleter interface {
	// DeleteTag deletes the tag, which also takes it off every server
	// still carrying it (a run's only swap releases both of its servers
	// this way, in one call); one already gone is a no-op.
	DeleteTag(ctx context.Context, tag string) error
}

// LaunchForgetter removes what made a launch findable once its swap has
// ended, where that is an object of its own (DigitalOcean's tag per
// launch): scheduled runs would otherwise leave a tag for every swap.
type LaunchForgetter interface {
	// ForgetLaunch removes the marker of the launch made with spec (as
	// Compute.Launch was given it): FindLaunched finds it no more. One
	// already gone, or none made (a launch marked by its claim, which goes
	// with the run), is a no-op with no call. The server is left as it is.
	ForgetLaunch(ctx context.Context, spec LaunchSpec) error
}

// TaggedLister lists the servers that carry a tag, in one call read
// after it was asked for: the swaps of a fleet's wave read their sources
// (by the fleet's tag) and read back their claims (by the run's) with one
// call between them, where each would read its server alone.
type TaggedLister interface {
	// ServersTagged returns every server carrying tag (all pages), as
	// read after the call was made: callers asking at once may share
	// one read. No server carrying it is an empty list, not an error.
	ServersTagged(ctx context.Context, tag string) ([]Server, error)
}

// Renamer renames servers, so that a server keeps its name across swaps.
type Renamer interface {
	// RenameServer gives the server a new name; one it has already is a
	// no-op, so a repeated call is safe. The operating system's hostname is
	// not changed.
	RenameServer(ctx context.Context, id, name string) error
}

// DurationLearner is a driver that learns how long its provider's
// operations take (a snapshot, a boot) to ask about the next one when it
// should be done. The CLI keeps what a run learned for the next run, so
// that a swap polls about once per wait where its provider has been seen.
type DurationLearner interface {
	Learned() map[string]time.Duration
	Teach(map[string]time.Duration)
}

// Compute is everything a swap needs from a compute provider.
type Compute interface {
	ServerGetter
	SizeGetter
	Snapshotter
	Launcher
	PowerController
	Deleter
	TagFinder
	Tagger
	Renamer
}

// Entrypoint is a way traffic reaches a server: a load balancer that lists
// it (by ID, or by a tag it carries) or a reserved IP that points at it.
type Entrypoint struct {
	Kind string // "load balancer", or the IP kind: "reserved IP", "floating IP"
	ID   string // the load balancer's ID, or the IP
	// ByTag is the tag a load balancer selects its members by; "" when it
	// lists them by ID.
	ByTag string
}

// EntrypointLister finds every way traffic reaches a server, so that a swap
// moving one of them does not retire a server the others still send to.
type EntrypointLister interface {
	// Entrypoints returns the load balancers and reserved IPs that route
	// to the server.
	Entrypoints(ctx context.Context, s *Server) ([]Entrypoint, error)
}

// IPAssigner moves a reserved (floating, elastic) IP between servers.
type IPAssigner interface {
	// AssignedTo returns the ID of the server the IP points at ("" if none).
	AssignedTo(ctx context.Context, ip string) (string, error)
	// AssignIP points the IP at the server and waits until the provider
	// confirms it. Assigning to the server it already points at is a no-op.
	AssignIP(ctx context.Context, ip, serverID string) error
}

// Progress receives what a driver is waiting for, for the operator to see.
// It may be nil.
type Progress func(format string, args ...any)

// Poll calls check until it reports done, returns an error, or ctx ends.
// It is how drivers wait on provider operations. The wait between calls
// starts at interval and grows by half each time up to ten intervals, as
// the SDKs' waiters back off: short operations are seen promptly, long ones
// do not spend the API rate limit.
func Poll(ctx context.Context, interval time.Duration, check func() (done bool, err error)) error {
	wait := interval
	for {
		done, err := check()
		if err != nil || done {
			return err
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		wait = min(wait*3/2, 10*interval)
	}
}

// Sleep waits d or until ctx ends, returning ctx's error if it ended first.
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
