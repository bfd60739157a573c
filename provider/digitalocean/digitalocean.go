// Package digitalocean is vmswap's DigitalOcean compute driver (godo):
// droplets, snapshots, sizes and reserved IPs. The client it builds is shared
// with the DigitalOcean DNS and load-balancer drivers.
package digitalocean

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/digitalocean/godo"
	"github.com/hashicorp/go-retryablehttp"
	"golang.org/x/oauth2"

	"github.com/vmswap/vmswap/provider"
)

// Config holds every setting of the driver.
type Config struct {
	// Token is the API token. Never logged or written anywhere.
	Token string
	// BaseURL overrides the API endpoint (the lab, a proxy). Empty: the real API.
	BaseURL string
	// HTTPClient is the transport under the token and retries. Nil: default.
	HTTPClient *http.Client
	// RetryMax is how many times a 429 or 5xx is retried (godo's retryer,
	// honouring Retry-After). Zero: 5.
	RetryMax int
	// Limits are the request rates the client keeps under. Zero: the
	// published 250 a minute and 5,000 an hour.
	Limits Limits
	// PollInterval is how often actions and droplets are polled. Zero: 2s.
	PollInterval time.Duration
	// BatchWindow, when set, gathers the tag assignments that swaps
	// running at once (a fleet's wave) make within it into one call per
	// tag. Zero: each is its own call.
	BatchWindow time.Duration
	// Progress receives retry waits and what is being waited on. May be nil.
	Progress provider.Progress
}

// Environment variables the driver reads, in order of preference.
var TokenVars = []string{"DIGITALOCEAN_TOKEN", "DIGITALOCEAN_ACCESS_TOKEN"}

// ConfigFromEnv returns a Config with the token from the environment, or an
// error naming the variables to set.
func ConfigFromEnv() (Config, error) {
	for _, v := range TokenVars {
		if t := strings.TrimSpace(os.Getenv(v)); t != "" {
			return Config{Token: t}, nil
		}
	}
	return Config{}, fmt.Errorf("digitalocean: no API token: set %s (or %s)", TokenVars[0], TokenVars[1])
}

// NewClient builds a godo client from cfg. Requests go through
// go-retryablehttp (the retrier godo itself uses), built here so that
// cfg.HTTPClient is honoured: 429 and 5xx are retried with backoff that
// honours Retry-After, except a POST answered 5xx that may have created
// something; the driver looks for that before trying again.
func NewClient(cfg Config) (*godo.Client, error) {
	if cfg.Token == "" {
		return nil, fmt.Errorf("digitalocean: no API token: set %s", TokenVars[0])
	}
	base := cfg.HTTPClient
	if base == nil {
		base = &http.Client{Timeout: 60 * time.Second}
	}
	retries := cfg.RetryMax
	if retries == 0 {
		retries = 5
	}
	rc := retryablehttp.NewClient()
	// Every attempt, retries included, takes its turn in the rate limiter.
	lim := *base
	if lim.Transport == nil {
		lim.Transport = http.DefaultTransport
	}
	lim.Transport = newLimiter(lim.Transport, cfg.Limits, cfg.Progress)
	rc.HTTPClient = &lim
	rc.RetryMax = retries
	rc.RetryWaitMin, rc.RetryWaitMax = 500*time.Millisecond, 30*time.Second
	rc.Logger = retryLogger{cfg.Progress}
	rc.ErrorHandler = retryablehttp.PassthroughErrorHandler // godo reads the last answer's error body
	rc.CheckRetry = func(ctx context.Context, resp *http.Response, err error) (bool, error) {
		// A create that was answered 5xx, or never answered, may have
		// happened: the driver looks for it before trying again, so the
		// transport must not repeat it blindly. A 429 made nothing.
		if ctx.Value(createKey{}) != nil && (resp == nil && err != nil || resp != nil && resp.StatusCode >= 500) {
			return false, nil
		}
		return retryablehttp.DefaultRetryPolicy(ctx, resp, err)
	}
	// Wrapped so that only RoundTrip shows: an http.Client with a timeout
	// calls a transport's CancelRequest when the timeout fires, which
	// oauth2.Transport answers by printing a deprecation line.
	hc := &http.Client{Timeout: base.Timeout, Transport: struct{ http.RoundTripper }{&oauth2.Transport{
		Source: oauth2.StaticTokenSource(&oauth2.Token{AccessToken: cfg.Token}),
		Base:   markCreates{&retryablehttp.RoundTripper{Client: rc}},
	}}}
	opts := []godo.ClientOpt{godo.SetUserAgent("vmswap")}
	if cfg.BaseURL != "" {
		u := cfg.BaseURL
		if !strings.HasSuffix(u, "/") {
			u += "/"
		}
		opts = append(opts, godo.SetBaseURL(u))
	}
	c, err := godo.New(hc, opts...)
	if err != nil {
		return nil, fmt.Errorf("digitalocean: %w", err)
	}
	return c, nil
}

// createKey marks the context of a POST that creates something.
type createKey struct{}

// markCreates marks POSTs that are not idempotent for CheckRetry, which
// sees only the context, not the request.
type markCreates struct{ next http.RoundTripper }

func (m markCreates) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Method == http.MethodPost && !idempotentPost(r.URL.Path) {
		r = r.WithContext(context.WithValue(r.Context(), createKey{}, true))
	}
	return m.next.RoundTrip(r)
}

// idempotentPost reports whether repeating a POST to path cannot create a
// second resource: adding droplets to a load balancer, (re)assigning a
// reserved IP.
func idempotentPost(path string) bool {
	return strings.HasPrefix(path, "/v2/load_balancers/") && strings.HasSuffix(path, "/droplets") ||
		strings.HasPrefix(path, "/v2/reserved_ips/") && strings.HasSuffix(path, "/actions")
}

// isServerError reports whether err is a 5xx answer, or no answer at all
// (a connection dropped, a timeout): either way the request may have been
// carried out.
func isServerError(err error) bool {
	var er *godo.ErrorResponse
	if errors.As(err, &er) {
		return er.Response != nil && er.Response.StatusCode >= 500
	}
	var ue *url.Error
	return errors.As(err, &ue) && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded)
}

// createAttempts bounds how often a create answered 5xx is tried again,
// after looking for its silent success.
const createAttempts = 4

// retryLogger shows the retrying transport's waits as progress. It
// implements go-retryablehttp's LeveledLogger.
type retryLogger struct{ progress provider.Progress }

func (r retryLogger) Error(string, ...any) {}
func (r retryLogger) Info(string, ...any)  {}
func (r retryLogger) Warn(string, ...any)  {}
func (r retryLogger) Debug(msg string, kv ...any) {
	if r.progress == nil || !strings.HasPrefix(msg, "retrying request") {
		return
	}
	var req, wait string
	for i := 0; i+1 < len(kv); i += 2 {
		switch kv[i] {
		case "request":
			req = fmt.Sprint(kv[i+1])
		case "timeout":
			wait = fmt.Sprint(kv[i+1])
		}
	}
	// req is "METHOD URL (status: N)"; show the path only.
	if i := strings.Index(req, "://"); i >= 0 {
		if j := strings.Index(req[i+3:], "/"); j >= 0 {
			req = req[:strings.Index(req, " ")+1] + req[i+3+j:]
		}
	}
	if strings.Contains(req, "status:") {
		r.progress("digitalocean: API busy: %s, retrying in %s", req, wait)
		return
	}
	// No HTTP answer at all: refused, reset or timed out.
	r.progress("digitalocean: API unreachable: %s, retrying in %s", req, wait)
}

var (
	_ provider.Compute          = (*Driver)(nil)
	_ provider.IPAssigner       = (*Driver)(nil)
	_ provider.EntrypointLister = (*Driver)(nil)
	_ provider.ManyUntagger     = (*Driver)(nil)
	_ provider.TaggedLister     = (*Driver)(nil)
	_ provider.TagDeleter       = (*Driver)(nil)
	_ provider.LaunchForgetter  = (*Driver)(nil)
)

// Driver implements provider.Compute and provider.IPAssigner.
type Driver struct {
	c    *godo.Client
	poll time.Duration
	prog provider.Progress

	// tagBatch sends the tag assignments of a wave's swaps made within
	// the batch window as one call per tag.
	tagBatch, untagBatch *provider.Batcher
	// exp is how long each kind of action took, for polling the next one
	// when it should be done (a fleet's canary teaches its waves).
	exp provider.Expected
	// lists are the account-wide lists Entrypoints reads at preflight,
	// shared by the swaps of a wave for a few seconds (the wave's own
	// cutovers change only the pool they move, which Entrypoints skips;
	// assigning a reserved IP forgets the list).
	lists provider.SharedReads[any]
	// fresh are reads that swaps asking at once share, each answer read
	// after its caller asked: the user's images (the wave's snapshots
	// done), the droplets carrying a tag (sources, claims read back).
	fresh provider.SharedReads[any]

	mu    sync.Mutex
	seen  map[int]*godo.Droplet // droplets GetServer read, for Launch to copy
	sizes []godo.Size           // the sizes list, read once per process
	tags  map[string]bool       // tags this process created (or found existing)
}

func (d *Driver) remember(dr *godo.Droplet) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.seen == nil {
		d.seen = map[int]*godo.Droplet{}
	}
	d.seen[dr.ID] = dr
}

var (
	_ provider.Compute         = (*Driver)(nil)
	_ provider.IPAssigner      = (*Driver)(nil)
	_ provider.DurationLearner = (*Driver)(nil)
)

// Ceiling is the longest a kind of DigitalOcean operation is believed to
// take, generously: a boot 10 minutes, a snapshot 10 minutes and a minute
// per GB of disk, any other action (a rename, a shutdown) 2 minutes. An
// earlier run's duration above it is not taught (provider.Expected).
func Ceiling(kind string) time.Duration {
	var gb int
	switch {
	case kind == "boot":
		return 10 * time.Minute
	case strings.HasPrefix(kind, "snapshot of "):
		fmt.Sscanf(kind, "snapshot of %d GB", &gb)
		return 10*time.Minute + time.Duration(max(gb, 0))*time.Minute
	}
	return 2 * time.Minute
}

// Learned implements provider.DurationLearner.
func (d *Driver) Learned() map[string]time.Duration { return d.exp.Learned() }

// Teach implements provider.DurationLearner.
func (d *Driver) Teach(m map[string]time.Duration) { d.exp.Teach(m) }

// New returns a driver for cfg. It never reads the environment.
func New(cfg Config) (*Driver, error) {
	c, err := NewClient(cfg)
	if err != nil {
		return nil, err
	}
	poll := cfg.PollInterval
	if poll == 0 {
		poll = 2 * time.Second
	}
	prog := cfg.Progress
	if prog == nil {
		prog = func(string, ...any) {}
	}
	d := &Driver{c: c, poll: poll, prog: prog}
	d.exp.Ceiling = Ceiling
	d.lists.MaxAge = listsMaxAge
	d.tagBatch = &provider.Batcher{Window: cfg.BatchWindow, Send: d.tagServers}
	d.untagBatch = &provider.Batcher{Window: cfg.BatchWindow, Send: d.untagServers}
	return d, nil
}

// listsMaxAge is how long Entrypoints reuses the account's load balancer
// and reserved IP lists: about as long as a wave's preflights take under
// the rate limit.
const listsMaxAge = 10 * time.Second

// Client returns the godo client, for the other DigitalOcean drivers.
func (d *Driver) Client() *godo.Client { return d.c }

// wrap prefixes err, maps 404 to provider.ErrNotFound, and says what to do
// about a refused token.
func wrap(err error, format string, args ...any) error {
	var er *godo.ErrorResponse
	if errors.As(err, &er) && er.Response != nil {
		switch er.Response.StatusCode {
		case 404:
			return fmt.Errorf("digitalocean: %s: %w", fmt.Sprintf(format, args...), provider.ErrNotFound)
		case 401:
			return fmt.Errorf("digitalocean: %s: the API refused the token (401 %s): check %s, or the token_env the provider block names", fmt.Sprintf(format, args...), er.Message, TokenVars[0])
		}
	}
	return fmt.Errorf("digitalocean: %s: %w", fmt.Sprintf(format, args...), err)
}

func isNotFound(err error) bool {
	var er *godo.ErrorResponse
	return errors.As(err, &er) && er.Response != nil && er.Response.StatusCode == 404
}

func toServer(dr *godo.Droplet) *provider.Server {
	s := &provider.Server{ID: strconv.Itoa(dr.ID), Name: dr.Name, Size: dr.SizeSlug, Tags: dr.Tags, MemoryMB: dr.Memory, VCPUs: dr.Vcpus, DiskGB: dr.Disk}
	switch dr.Status {
	case "active":
		s.Status = provider.StatusRunning
	case "off", "archive":
		s.Status = provider.StatusOff
	default:
		s.Status = provider.StatusPending
	}
	if dr.Region != nil {
		s.Region = dr.Region.Slug
	}
	if ip, err := dr.PublicIPv4(); err == nil {
		s.PublicIP = ip
	}
	if ip, err := dr.PublicIPv6(); err == nil {
		s.PublicIPv6 = ip
	}
	s.Volumes = dr.VolumeIDs
	return s
}

func dropletID(id string) (int, error) {
	n, err := strconv.Atoi(id)
	if err != nil {
		return 0, fmt.Errorf("digitalocean: %q is not a droplet ID", id)
	}
	return n, nil
}

// GetServer implements provider.ServerGetter: a droplet by ID or name.
// https://docs.digitalocean.com/reference/api/api-reference/#operation/droplets_get
func (d *Driver) GetServer(ctx context.Context, ref string) (*provider.Server, error) {
	if id, err := strconv.Atoi(ref); err == nil {
		dr, _, err := d.c.Droplets.Get(ctx, id)
		if err != nil {
			return nil, wrap(err, "get droplet %d", id)
		}
		d.remember(dr)
		return toServer(dr), nil
	}
	drs, _, err := d.c.Droplets.ListByName(ctx, ref, &godo.ListOptions{PerPage: 200})
	if err != nil {
		return nil, wrap(err, "find droplet %q", ref)
	}
	switch len(drs) {
	case 0:
		return nil, fmt.Errorf("digitalocean: droplet %q: %w", ref, provider.ErrNotFound)
	case 1:
		d.remember(&drs[0])
		return toServer(&drs[0]), nil
	}
	ids := make([]string, len(drs))
	for i, dr := range drs {
		ids[i] = strconv.Itoa(dr.ID)
	}
	return nil, fmt.Errorf("digitalocean: %d droplets are named %q (IDs %s): name the source by ID", len(drs), ref, strings.Join(ids, ", "))
}

// GetSize implements provider.SizeGetter.
// https://docs.digitalocean.com/reference/api/api-reference/#operation/sizes_list
func (d *Driver) GetSize(ctx context.Context, slug string) (*provider.Size, error) {
	sizes, err := d.sizeList(ctx)
	if err != nil {
		return nil, err
	}
	var some []string
	for _, s := range sizes {
		if s.Slug == slug {
			return toSize(s), nil
		}
		if len(some) < 6 && s.Available {
			some = append(some, s.Slug)
		}
	}
	return nil, fmt.Errorf("digitalocean: size %q: %w (sizes include %s)", slug, provider.ErrNotFound, strings.Join(some, ", "))
}

// sizeList is the account's sizes list, read once per process.
func (d *Driver) sizeList(ctx context.Context) ([]godo.Size, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.sizes == nil {
		sizes, _, err := d.c.Sizes.List(ctx, &godo.ListOptions{PerPage: 200})
		if err != nil {
			return nil, wrap(err, "list sizes")
		}
		d.sizes = sizes
	}
	return d.sizes, nil
}

// ListSizes implements provider.SizeLister: the available sizes.
func (d *Driver) ListSizes(ctx context.Context) ([]provider.Size, error) {
	sizes, err := d.sizeList(ctx)
	if err != nil {
		return nil, err
	}
	var out []provider.Size
	for _, s := range sizes {
		if s.Available {
			out = append(out, *toSize(s))
		}
	}
	return out, nil
}

func toSize(s godo.Size) *provider.Size {
	sz := &provider.Size{Slug: s.Slug, MemoryMB: s.Memory, VCPUs: s.Vcpus, DiskGB: s.Disk}
	if s.PriceMonthly > 0 {
		// DigitalOcean bills by the hour up to 672 hours a month, in US
		// dollars, and bills a powered-off droplet as if it ran.
		sz.Price = &provider.Price{Monthly: s.PriceMonthly, Hourly: s.PriceHourly, Currency: "USD", MaxHoursPerMonth: 672, BilledWhenOff: true}
	}
	return sz
}

// FindImage implements provider.Snapshotter: a droplet snapshot by name.
// The swaps of a wave whose snapshots are done at once share the list.
// https://docs.digitalocean.com/reference/api/api-reference/#operation/images_list
func (d *Driver) FindImage(ctx context.Context, name string) (*provider.Image, error) {
	v, err := d.fresh.Do(ctx, "images", func(ctx context.Context) (any, error) {
		return allPages(ctx, "list images", d.c.Images.ListUser)
	})
	if err != nil {
		return nil, err
	}
	for _, im := range v.([]godo.Image) {
		if im.Name == name {
			return &provider.Image{ID: strconv.Itoa(im.ID), Name: im.Name, MinDiskGB: im.MinDiskSize}, nil
		}
	}
	return nil, nil
}

// Snapshot implements provider.Snapshotter with a live snapshot action: the
// droplet keeps running and serving, and the image is crash-consistent.
// DigitalOcean has no client token, so idempotency comes from the unique
// name and from the droplet's action list: a droplet runs one action at a
// time, and a snapshot already in progress is waited on, not repeated.
// https://docs.digitalocean.com/reference/api/api-reference/#operation/dropletActions_post
func (d *Driver) Snapshot(ctx context.Context, s *provider.Server, spec provider.SnapshotSpec) (*provider.Image, error) {
	for attempt := 1; ; attempt++ {
		img, err := d.snapshot(ctx, s, spec, attempt == 1 && spec.First && !spec.AwaitOnly)
		if err == nil || !isServerError(err) || attempt == createAttempts {
			return img, err
		}
		wait := time.Duration(attempt) * time.Second
		d.prog("digitalocean: snapshot request failed (%v); looking for its effect, retrying in %s", err, wait)
		if err := provider.Sleep(ctx, wait); err != nil {
			return nil, err
		}
	}
}

func (d *Driver) snapshot(ctx context.Context, s *provider.Server, spec provider.SnapshotSpec, first bool) (*provider.Image, error) {
	name := spec.Name
	id, err := dropletID(s.ID)
	if err != nil {
		return nil, err
	}
	var act *godo.Action
	if !first {
		// Asked before (a resumed run, a retry): the image, or the action
		// making it, may exist.
		if img, err := d.FindImage(ctx, name); err != nil || img != nil {
			return img, err
		}
		acts, _, err := d.c.Droplets.Actions(ctx, id, &godo.ListOptions{PerPage: 20})
		if err != nil {
			return nil, wrap(err, "list actions of droplet %d", id)
		}
		for i := range acts {
			if acts[i].Type == "snapshot" && acts[i].Status == "in-progress" {
				act = &acts[i]
				d.prog("digitalocean: droplet %d already has snapshot action %d in progress; waiting for it", id, act.ID)
				break
			}
		}
	}
	if act == nil && spec.AwaitOnly {
		return nil, nil
	}
	if act == nil {
		act, _, err = d.c.DropletActions.Snapshot(ctx, id, name)
		if err != nil {
			return nil, wrap(err, "snapshot droplet %d", id)
		}
	}
	if spec.Started != nil {
		spec.Started(strconv.Itoa(act.ID))
	}
	// A snapshot takes as long as the disk is big: a fleet's small disks
	// are not made to wait for what a big one took.
	if err := d.waitActionKind(ctx, id, act, "snapshot", fmt.Sprintf("snapshot of %d GB", s.DiskGB)); err != nil {
		return nil, err
	}
	img, err := d.FindImage(ctx, name)
	if err != nil {
		return nil, err
	}
	if img == nil {
		return nil, fmt.Errorf("digitalocean: snapshot action %d completed but no image named %q exists", act.ID, name)
	}
	return img, nil
}

// waitAction polls a droplet action until it completes. The action as the
// POST answered it may be done already (a rename); one just started is
// first asked about a poll interval later, or once the last action of its
// kind had taken: every call counts against the rate limit.
// https://docs.digitalocean.com/reference/api/api-reference/#operation/dropletActions_get
func (d *Driver) waitAction(ctx context.Context, dropletID int, act *godo.Action, what string) error {
	return d.waitActionKind(ctx, dropletID, act, what, what)
}

// waitActionKind is waitAction for an action whose duration is learned
// under kind.
func (d *Driver) waitActionKind(ctx context.Context, dropletID int, act *godo.Action, what, kind string) error {
	actionID := act.ID
	switch act.Status {
	case "completed":
		return nil
	case "errored":
		return fmt.Errorf("digitalocean: %s droplet %d: action %d errored", what, dropletID, actionID)
	}
	start := time.Now()
	var done *godo.Action
	err := d.exp.Poll(ctx, kind, start, d.poll, func() (bool, error) {
		a, _, err := d.c.DropletActions.Get(ctx, dropletID, actionID)
		if err != nil {
			return false, wrap(err, "%s droplet %d: action %d", what, dropletID, actionID)
		}
		switch a.Status {
		case "completed":
			done = a
			return true, nil
		case "errored":
			return false, fmt.Errorf("digitalocean: %s droplet %d: action %d errored", what, dropletID, actionID)
		}
		d.prog("digitalocean: %s of droplet %d in progress (%s)", what, dropletID, time.Since(start).Round(time.Second))
		return false, nil
	})
	if done != nil && done.StartedAt != nil && done.CompletedAt != nil {
		// DigitalOcean's times are whole seconds: a second more is a bound.
		d.exp.TookAtMost(kind, done.CompletedAt.Sub(done.StartedAt.Time)+time.Second)
	}
	return err
}

// settled returns the droplet once no action is pending on it. Only a
// locked droplet has one, so the action list is read only then.
func (d *Driver) settled(ctx context.Context, id int) (*godo.Droplet, error) {
	dr, _, err := d.c.Droplets.Get(ctx, id)
	if err != nil {
		return nil, wrap(err, "get droplet %d", id)
	}
	if !dr.Locked {
		return dr, nil
	}
	if err := d.waitPending(ctx, id); err != nil {
		return nil, err
	}
	if dr, _, err = d.c.Droplets.Get(ctx, id); err != nil {
		return nil, wrap(err, "get droplet %d", id)
	}
	return dr, nil
}

// waitPending waits for any action in progress on the droplet: DigitalOcean
// runs one at a time and refuses another ("pending event"), and a resumed
// run may find the one it started before it was stopped.
func (d *Driver) waitPending(ctx context.Context, id int) error {
	acts, _, err := d.c.Droplets.Actions(ctx, id, &godo.ListOptions{PerPage: 20})
	if err != nil {
		return wrap(err, "list actions of droplet %d", id)
	}
	for _, a := range acts {
		if a.Status == "in-progress" {
			d.prog("digitalocean: droplet %d has %s action %d in progress; waiting for it", id, a.Type, a.ID)
			// Under way for a while already: what it takes from here
			// teaches nothing.
			if err := d.waitActionKind(ctx, id, &a, a.Type, ""); err != nil && ctx.Err() != nil {
				return err
			}
		}
	}
	return nil
}

// DeleteImage implements provider.Snapshotter.
// https://docs.digitalocean.com/reference/api/api-reference/#operation/images_delete
func (d *Driver) DeleteImage(ctx context.Context, id string) error {
	n, err := strconv.Atoi(id)
	if err != nil {
		return fmt.Errorf("digitalocean: %q is not an image ID", id)
	}
	if _, err := d.c.Images.Delete(ctx, n); err != nil && !isNotFound(err) {
		return wrap(err, "delete image %d", n)
	}
	return nil
}

// tokenTag is the tag that carries a launch token. DigitalOcean tags allow
// letters, digits, colons, dashes and underscores.
func tokenTag(token string) string { return "vmswap-launch:" + token }

// ForgetLaunch implements provider.LaunchForgetter: the launch's tag, if
// it was given one, is deleted, which also takes it off the droplet. A
// launch with a claim has none (unless KeepMark): the run's claim tag
// marks it, and is deleted with the run's claims, so no call per swap is
// made.
func (d *Driver) ForgetLaunch(ctx context.Context, spec provider.LaunchSpec) error {
	if spec.Claim != "" && !spec.KeepMark {
		return nil
	}
	return d.DeleteTag(ctx, tokenTag(spec.Token))
}

// FindLaunched implements provider.Launcher: the droplet with the launch's
// name among those carrying its claim tag (a run's droplets: its sources
// and new droplets, each name unique to the run), or, launched without a
// claim, the one carrying its launch tag.
// https://docs.digitalocean.com/reference/api/api-reference/#operation/droplets_list
func (d *Driver) FindLaunched(ctx context.Context, spec provider.LaunchSpec) (*provider.Server, error) {
	tag := tokenTag(spec.Token)
	if spec.Claim != "" {
		tag = spec.Claim
	}
	drs, err := allPages(ctx, "find launched droplet", func(ctx context.Context, opt *godo.ListOptions) ([]godo.Droplet, *godo.Response, error) {
		return d.c.Droplets.ListByTag(ctx, tag, opt)
	})
	if err != nil {
		return nil, err
	}
	for i := range drs {
		// An older run's launch carries its launch tag as well as the
		// claim; a source never has the launch's name.
		if spec.Claim == "" || drs[i].Name == spec.Name || slices.Contains(drs[i].Tags, tokenTag(spec.Token)) {
			return toServer(&drs[i]), nil
		}
	}
	return nil, nil
}

// Launch implements provider.Launcher: a droplet from the image, copying the
// source's region, VPC, monitoring, IPv6 and tags. The source's SSH keys are
// in its authorized_keys, which the snapshot carries.
// https://docs.digitalocean.com/reference/api/api-reference/#operation/droplets_create
func (d *Driver) Launch(ctx context.Context, spec provider.LaunchSpec) (*provider.Server, error) {
	if !spec.First {
		if s, err := d.FindLaunched(ctx, spec); err != nil || s != nil {
			return s, err
		}
	}
	srcID, err := dropletID(spec.Source.ID)
	if err != nil {
		return nil, err
	}
	// What to copy from the source: the droplet as GetServer read it in
	// this process, or a fresh read (a resumed run).
	d.mu.Lock()
	src := d.seen[srcID]
	d.mu.Unlock()
	if src == nil {
		if src, _, err = d.c.Droplets.Get(ctx, srcID); err != nil {
			return nil, wrap(err, "get source droplet %d", srcID)
		}
	}
	imgID, err := strconv.Atoi(spec.Image.ID)
	if err != nil {
		return nil, fmt.Errorf("digitalocean: %q is not an image ID", spec.Image.ID)
	}
	// The source's own tags are copied (firewalls and load balancers select
	// by them); vmswap's tags of earlier plans, launches and claims are not.
	tags := slices.DeleteFunc(append([]string{}, src.Tags...), func(t string) bool {
		return strings.HasPrefix(t, "vmswap") || slices.Contains(spec.WithoutTags, t)
	})
	// The launch is found again by its claim and name, or without a claim
	// by a tag of its own.
	extra := slices.Clone(spec.Tags)
	if spec.Claim != "" {
		extra = append(extra, spec.Claim)
	}
	if spec.Claim == "" || spec.KeepMark {
		extra = append(extra, tokenTag(spec.Token))
	}
	for _, t := range extra {
		if !slices.Contains(tags, t) {
			tags = append(tags, t)
		}
	}
	req := &godo.DropletCreateRequest{
		Name:       spec.Name,
		Region:     src.Region.Slug,
		Size:       spec.Size,
		Image:      godo.DropletCreateImage{ID: imgID},
		IPv6:       slices.Contains(src.Features, "ipv6"),
		Monitoring: slices.Contains(src.Features, "monitoring"),
		Tags:       tags,
		VPCUUID:    src.VPCUUID,
	}
	for attempt := 1; ; attempt++ {
		dr, _, err := d.c.Droplets.Create(ctx, req)
		if err == nil {
			return toServer(dr), nil
		}
		// The create may have succeeded before the error (a timeout, a 5xx
		// after the fact): look for it before anything else.
		if s, ferr := d.FindLaunched(ctx, spec); ferr == nil && s != nil {
			return s, nil
		}
		if !isServerError(err) || attempt == createAttempts {
			return nil, wrap(err, "create droplet %q", spec.Name)
		}
		wait := time.Duration(attempt) * time.Second
		d.prog("digitalocean: create droplet %q failed (%v) and made nothing (no droplet carries its launch tag); retrying in %s", spec.Name, err, wait)
		if err := provider.Sleep(ctx, wait); err != nil {
			return nil, err
		}
	}
}

// WaitRunning implements provider.Launcher.
func (d *Driver) WaitRunning(ctx context.Context, id string) (*provider.Server, error) {
	n, err := dropletID(id)
	if err != nil {
		return nil, err
	}
	var s *provider.Server
	start := time.Now()
	err = d.exp.Poll(ctx, "boot", start, d.poll, func() (bool, error) {
		dr, _, err := d.c.Droplets.Get(ctx, n)
		if err != nil {
			return false, wrap(err, "get droplet %d", n)
		}
		s = toServer(dr)
		if s.Status == provider.StatusRunning && s.PublicIP != "" {
			return true, nil
		}
		d.prog("digitalocean: droplet %d is %s (%s)", n, dr.Status, time.Since(start).Round(time.Second))
		return false, nil
	})
	return s, err
}

// PowerOff implements provider.PowerController: a shutdown action, and a
// power_off action if the shutdown does not finish within timeout. The
// shutdown is asked for straight away; only a refusal (the droplet is off
// already, or busy with another action) costs a read.
// https://docs.digitalocean.com/reference/api/api-reference/#operation/dropletActions_post
func (d *Driver) PowerOff(ctx context.Context, id string, timeout time.Duration) error {
	n, err := dropletID(id)
	if err != nil {
		return err
	}
	a, _, err := d.c.DropletActions.Shutdown(ctx, n)
	if isUnprocessable(err) {
		dr, serr := d.settled(ctx, n)
		if serr != nil {
			return serr
		}
		if dr.Status == "off" {
			return nil
		}
		a, _, err = d.c.DropletActions.Shutdown(ctx, n)
	}
	if err == nil {
		wctx, cancel := context.WithTimeout(ctx, timeout)
		err = d.waitAction(wctx, n, a, "shut down")
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	d.prog("digitalocean: droplet %d did not shut down (%v); powering it off", n, err)
	a, _, err = d.c.DropletActions.PowerOff(ctx, n)
	if isPendingEvent(err) {
		// The shutdown is still finishing and DigitalOcean runs one action
		// at a time: let it end, then force only a droplet still on.
		d.prog("digitalocean: droplet %d is still shutting down; waiting for it", n)
		dr, serr := d.settled(ctx, n)
		if serr != nil {
			return serr
		}
		if dr.Status == "off" {
			return nil
		}
		a, _, err = d.c.DropletActions.PowerOff(ctx, n)
	}
	var er *godo.ErrorResponse
	if errors.As(err, &er) && er.Response != nil && er.Response.StatusCode == 422 {
		// The shutdown finished between its timeout and the forced power
		// off ("Droplet is already powered off"): what was asked is done.
		if dr, gerr := d.settled(ctx, n); gerr == nil && dr.Status == "off" {
			return nil
		}
	}
	if err != nil {
		return wrap(err, "power off droplet %d", n)
	}
	return d.waitAction(ctx, n, a, "power off")
}

// isUnprocessable reports whether DigitalOcean refused an action as
// impossible now (422): the droplet is already in the state asked for, or
// another action is running on it.
func isUnprocessable(err error) bool {
	var er *godo.ErrorResponse
	return errors.As(err, &er) && er.Response != nil && er.Response.StatusCode == 422
}

// isPendingEvent reports whether DigitalOcean refused an action because
// another one is running on the droplet.
func isPendingEvent(err error) bool {
	var er *godo.ErrorResponse
	return errors.As(err, &er) && er.Response != nil && er.Response.StatusCode == 422 && strings.Contains(er.Message, "pending event")
}

// PowerOn implements provider.PowerController.
func (d *Driver) PowerOn(ctx context.Context, id string) error {
	n, err := dropletID(id)
	if err != nil {
		return err
	}
	dr, err := d.settled(ctx, n)
	if err != nil {
		return err
	}
	if dr.Status == "active" {
		return nil
	}
	a, _, err := d.c.DropletActions.PowerOn(ctx, n)
	if err != nil {
		return wrap(err, "power on droplet %d", n)
	}
	return d.waitAction(ctx, n, a, "power on")
}

// RenameServer implements provider.Renamer with the rename action, asked
// for straight away (renaming to the name it has is a harmless action);
// a droplet busy with another action is waited for first.
// https://docs.digitalocean.com/reference/api/api-reference/#operation/dropletActions_post
func (d *Driver) RenameServer(ctx context.Context, id, name string) error {
	n, err := dropletID(id)
	if err != nil {
		return err
	}
	a, _, err := d.c.DropletActions.Rename(ctx, n, name)
	if isPendingEvent(err) {
		dr, serr := d.settled(ctx, n)
		if serr != nil {
			return serr
		}
		if dr.Name == name {
			return nil
		}
		a, _, err = d.c.DropletActions.Rename(ctx, n, name)
	}
	if err != nil {
		return wrap(err, "rename droplet %d to %s", n, name)
	}
	return d.waitAction(ctx, n, a, "rename")
}

// DeleteServer implements provider.Deleter.
// https://docs.digitalocean.com/reference/api/api-reference/#operation/droplets_destroy
func (d *Driver) DeleteServer(ctx context.Context, id string) error {
	n, err := dropletID(id)
	if err != nil {
		return err
	}
	if _, err := d.c.Droplets.Delete(ctx, n); err != nil && !isNotFound(err) {
		return wrap(err, "delete droplet %d", n)
	}
	return nil
}

// allPages reads every page of a godo list, 200 items a page.
func allPages[T any](ctx context.Context, what string, list func(context.Context, *godo.ListOptions) ([]T, *godo.Response, error)) ([]T, error) {
	var all []T
	for opt := (&godo.ListOptions{PerPage: 200, Page: 1}); ; opt.Page++ {
		items, resp, err := list(ctx, opt)
		if err != nil {
			return nil, wrap(err, "%s", what)
		}
		all = append(all, items...)
		if resp == nil || resp.Links == nil || resp.Links.IsLastPage() || len(items) == 0 {
			return all, nil
		}
	}
}

// Entrypoints implements provider.EntrypointLister: load balancers that
// list the droplet or select a tag it carries, and reserved IPs on it. The
// swaps of a wave that ask at once share the two lists.
// https://docs.digitalocean.com/reference/api/api-reference/#operation/loadBalancers_list
// https://docs.digitalocean.com/reference/api/api-reference/#operation/reservedIPs_list
func (d *Driver) Entrypoints(ctx context.Context, s *provider.Server) ([]provider.Entrypoint, error) {
	id, err := dropletID(s.ID)
	if err != nil {
		return nil, err
	}
	lbs, err := d.lists.Do(ctx, "load balancers", func(ctx context.Context) (any, error) {
		return allPages(ctx, "list load balancers", d.c.LoadBalancers.List)
	})
	if err != nil {
		return nil, err
	}
	var out []provider.Entrypoint
	for _, lb := range lbs.([]godo.LoadBalancer) {
		switch {
		case lb.Tag != "" && slices.Contains(s.Tags, lb.Tag):
			out = append(out, provider.Entrypoint{Kind: "load balancer", ID: lb.ID, ByTag: lb.Tag})
		case lb.Tag == "" && slices.Contains(lb.DropletIDs, id):
			out = append(out, provider.Entrypoint{Kind: "load balancer", ID: lb.ID})
		}
	}
	ips, err := d.lists.Do(ctx, "reserved IPs", func(ctx context.Context) (any, error) {
		return allPages(ctx, "list reserved IPs", d.c.ReservedIPs.List)
	})
	if err != nil {
		return nil, err
	}
	for _, ip := range ips.([]godo.ReservedIP) {
		if ip.Droplet != nil && ip.Droplet.ID == id {
			out = append(out, provider.Entrypoint{Kind: "reserved IP", ID: ip.IP})
		}
	}
	return out, nil
}

// TagServer implements provider.Tagger: it creates the tag (creating one
// that exists is accepted by DigitalOcean) and tags the droplet with it.
// With a batch window, the droplets a wave's swaps tag at once with the
// same tag (their claims, their keep-until tag) go in one call.
// https://docs.digitalocean.com/reference/api/api-reference/#operation/tags_assign_resources
func (d *Driver) TagServer(ctx context.Context, id, tag string) error {
	if _, err := dropletID(id); err != nil {
		return err
	}
	err := d.tagBatch.Do(ctx, tag, id)
	if isNotFound(err) {
		// One droplet of a batch gone fails the batch: this one alone
		// says whether it is this one.
		err = d.tagServers(ctx, tag, []string{id})
	}
	if err != nil {
		return wrap(err, "tag droplet %s with %s", id, tag)
	}
	return nil
}

// tagServers tags droplets, creating the tag first unless this process
// has (a fleet's swaps share their claim tag, and every call counts
// against the rate limit).
func (d *Driver) tagServers(ctx context.Context, tag string, ids []string) error {
	res := make([]godo.Resource, len(ids))
	for i, id := range ids {
		res[i] = godo.Resource{ID: id, Type: godo.DropletResourceType}
	}
	for attempt := 0; ; attempt++ {
		d.mu.Lock()
		known := d.tags[tag]
		d.mu.Unlock()
		if !known {
			if _, _, err := d.c.Tags.Create(ctx, &godo.TagCreateRequest{Name: tag}); err != nil {
				return fmt.Errorf("create tag: %w", err)
			}
			d.mu.Lock()
			if d.tags == nil {
				d.tags = map[string]bool{}
			}
			d.tags[tag] = true
			d.mu.Unlock()
		}
		_, err := d.c.Tags.TagResources(ctx, tag, &godo.TagResourcesRequest{Resources: res})
		if err != nil && known && attempt == 0 && isNotFound(err) {
			// Deleted since: create it again.
			d.mu.Lock()
			delete(d.tags, tag)
			d.mu.Unlock()
			continue
		}
		return err
	}
}

// UntagServer implements provider.Tagger.
// https://docs.digitalocean.com/reference/api/api-reference/#operation/tags_unassign_resources
func (d *Driver) UntagServer(ctx context.Context, id, tag string) error {
	return d.UntagServers(ctx, tag, id)
}

// UntagServers implements provider.ManyUntagger: one call for every
// droplet, and with a batch window one call for the droplets a wave's
// swaps release at once.
func (d *Driver) UntagServers(ctx context.Context, tag string, ids ...string) error {
	for _, id := range ids {
		if _, err := dropletID(id); err != nil {
			return err
		}
	}
	err := d.untagBatch.Do(ctx, tag, ids...)
	if isNotFound(err) {
		// A droplet gone, or the tag, fails the batch: these alone say
		// whether it is one of them.
		err = d.untagServers(ctx, tag, ids)
	}
	if err == nil || isNotFound(err) && len(ids) == 1 {
		// One droplet gone, or the tag: nothing carries it.
		return nil
	}
	// Of several, which one is gone is not said: the caller goes one by one.
	return wrap(err, "untag droplet(s) %s (%s)", strings.Join(ids, ", "), tag)
}

func (d *Driver) untagServers(ctx context.Context, tag string, ids []string) error {
	res := make([]godo.Resource, len(ids))
	for i, id := range ids {
		res[i] = godo.Resource{ID: id, Type: godo.DropletResourceType}
	}
	_, err := d.c.Tags.UntagResources(ctx, tag, &godo.UntagResourcesRequest{Resources: res})
	return err
}

// DeleteTag implements provider.TagDeleter.
// https://docs.digitalocean.com/reference/api/api-reference/#operation/tags_delete
func (d *Driver) DeleteTag(ctx context.Context, tag string) error {
	d.mu.Lock()
	delete(d.tags, tag)
	d.mu.Unlock()
	if _, err := d.c.Tags.Delete(ctx, tag); err != nil && !isNotFound(err) {
		return wrap(err, "delete tag %s", tag)
	}
	return nil
}

// ServersTagged implements provider.TaggedLister: the droplets carrying
// tag, page by page, one read for the callers asking at once.
// https://docs.digitalocean.com/reference/api/api-reference/#operation/droplets_list
func (d *Driver) ServersTagged(ctx context.Context, tag string) ([]provider.Server, error) {
	v, err := d.fresh.Do(ctx, "tag:"+tag, func(ctx context.Context) (any, error) {
		return allPages(ctx, "list droplets tagged "+tag, func(ctx context.Context, opt *godo.ListOptions) ([]godo.Droplet, *godo.Response, error) {
			return d.c.Droplets.ListByTag(ctx, tag, opt)
		})
	})
	if err != nil {
		return nil, err
	}
	drs := v.([]godo.Droplet)
	out := make([]provider.Server, len(drs))
	for i := range drs {
		d.remember(&drs[i])
		out[i] = *toServer(&drs[i])
	}
	return out, nil
}

// FindTagged implements provider.TagFinder. Snapshots cannot carry tags on
// creation, so images are found by the name prefix vmswap gives them
// together with the tag's plan ID. Both lists are read page by page: an
// account's snapshots often outnumber a page.
// https://docs.digitalocean.com/reference/api/api-reference/#operation/droplets_list
// https://docs.digitalocean.com/reference/api/api-reference/#operation/images_list
func (d *Driver) FindTagged(ctx context.Context, tag string) ([]provider.Server, []provider.Image, error) {
	drs, err := allPages(ctx, "list droplets tagged "+tag, func(ctx context.Context, opt *godo.ListOptions) ([]godo.Droplet, *godo.Response, error) {
		return d.c.Droplets.ListByTag(ctx, tag, opt)
	})
	if err != nil {
		return nil, nil, err
	}
	servers := make([]provider.Server, len(drs))
	for i := range drs {
		servers[i] = *toServer(&drs[i])
	}
	imgs, err := allPages(ctx, "list images", d.c.Images.ListUser)
	if err != nil {
		return nil, nil, err
	}
	var images []provider.Image
	planID := strings.TrimPrefix(tag, "vmswap:")
	for _, im := range imgs {
		if strings.HasPrefix(im.Name, "vmswap-") && strings.HasSuffix(im.Name, "-"+planID) {
			images = append(images, provider.Image{ID: strconv.Itoa(im.ID), Name: im.Name, MinDiskGB: im.MinDiskSize})
		}
	}
	return servers, images, nil
}

// FindTagPrefix implements provider.TagPrefixFinder: every droplet, page
// by page, with a tag starting with prefix.
// https://docs.digitalocean.com/reference/api/api-reference/#operation/droplets_list
func (d *Driver) FindTagPrefix(ctx context.Context, prefix string) ([]provider.Server, error) {
	drs, err := allPages(ctx, "list droplets", d.c.Droplets.List)
	if err != nil {
		return nil, err
	}
	var out []provider.Server
	for i := range drs {
		if slices.ContainsFunc(drs[i].Tags, func(t string) bool { return strings.HasPrefix(t, prefix) }) {
			out = append(out, *toServer(&drs[i]))
		}
	}
	return out, nil
}

// AssignedTo implements provider.IPAssigner.
// https://docs.digitalocean.com/reference/api/api-reference/#operation/reservedIPs_get
func (d *Driver) AssignedTo(ctx context.Context, ip string) (string, error) {
	r, _, err := d.c.ReservedIPs.Get(ctx, ip)
	if err != nil {
		return "", wrap(err, "get reserved IP %s", ip)
	}
	if r.Droplet == nil {
		return "", nil
	}
	return strconv.Itoa(r.Droplet.ID), nil
}

// AssignIP implements provider.IPAssigner.
// https://docs.digitalocean.com/reference/api/api-reference/#operation/reservedIPsActions_post
func (d *Driver) AssignIP(ctx context.Context, ip, serverID string) error {
	n, err := dropletID(serverID)
	if err != nil {
		return err
	}
	if cur, err := d.AssignedTo(ctx, ip); err != nil || cur == serverID {
		return err
	}
	d.lists.Forget("reserved IPs")
	a, _, err := d.c.ReservedIPActions.Assign(ctx, ip, n)
	if err != nil {
		return wrap(err, "assign reserved IP %s to droplet %d", ip, n)
	}
	return d.exp.Poll(ctx, "assign reserved IP", time.Now(), d.poll, func() (bool, error) {
		got, _, err := d.c.ReservedIPActions.Get(ctx, ip, a.ID)
		if err != nil {
			return false, wrap(err, "assign reserved IP %s: action %d", ip, a.ID)
		}
		if got.Status == "errored" {
			return false, fmt.Errorf("digitalocean: assign reserved IP %s to droplet %d: action %d errored", ip, n, a.ID)
		}
		return got.Status == "completed", nil
	})
}

// ResizeInPlace resizes a droplet the classic way, which vmswap exists to
// avoid: shut it down, resize it, power it on. It serves nothing in
// between. `vmswap demo --compare` uses it to measure that outage. step is
// called with each phase's name and times.
// https://docs.digitalocean.com/reference/api/api-reference/#operation/dropletActions_post
func (d *Driver) ResizeInPlace(ctx context.Context, id, size string, step func(name string, start, end time.Time)) error {
	n, err := dropletID(id)
	if err != nil {
		return err
	}
	t := time.Now()
	if err := d.PowerOff(ctx, id, 2*time.Minute); err != nil {
		return err
	}
	step("shutdown", t, time.Now())
	t = time.Now()
	a, _, err := d.c.DropletActions.Resize(ctx, n, size, false)
	if err != nil {
		return wrap(err, "resize droplet %d", n)
	}
	if err := d.waitAction(ctx, n, a, "resize"); err != nil {
		return err
	}
	step("resize", t, time.Now())
	t = time.Now()
	if err := d.PowerOn(ctx, id); err != nil {
		return err
	}
	step("power_on", t, time.Now())
	return nil
}
