// Package hetzner is vmswap's Hetzner Cloud compute driver (hcloud-go):
// servers, snapshots made with create_image, server types, and floating IPs.
// The client it builds is shared with the Hetzner load-balancer and DNS
// drivers.
//
// Hetzner has labels (key=value) where other clouds have tags. vmswap's tags
// map onto them: "k=v" and "k:v" are the label k=v, "k" is k with an empty
// value, and a run's claim "vmswap-claim:RUN" is the label
// "vmswap-claim/RUN" so that two runs' claims are two labels. Labels read
// back are shown the same way ("vmswap…:v" for vmswap's own, "k=v" for the
// rest).
package hetzner

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/hetznercloud/hcloud-go/v2/hcloud"
	"golang.org/x/time/rate"

	"github.com/vmswap/vmswap/provider"
)

// TokenVars are the environment variables holding the API token, in order
// of preference (HCLOUD_TOKEN is what the hcloud CLI and Terraform read).
var TokenVars = []string{"HCLOUD_TOKEN"}

// Hetzner's published limit: 3,600 requests an hour per project, a bucket
// refilled by one request a second.
// https://docs.hetzner.cloud/reference/cloud#rate-limiting
const (
	PerHour = 3600
)

// Config holds every setting of the driver.
type Config struct {
	// Token is a project API token (read & write). Never logged.
	Token string
	// BaseURL overrides the API endpoint (the lab). Empty: the real API.
	BaseURL string
	// HTTPClient is the transport. Nil: a default with a 60 s timeout.
	HTTPClient *http.Client
	// PerHour is the request budget the client keeps under. Zero: PerHour.
	PerHour int
	// PollInterval is how often actions and servers are polled. Zero: 1s.
	PollInterval time.Duration
	// Progress receives what is being waited on. May be nil.
	Progress provider.Progress
}

// ConfigFromEnv returns a Config with the token from HCLOUD_TOKEN, or an
// error saying to set it.
func ConfigFromEnv() (Config, error) {
	if t := strings.TrimSpace(os.Getenv(TokenVars[0])); t != "" {
		return Config{Token: t}, nil
	}
	return Config{}, fmt.Errorf("hetzner: no API token: set %s to a project token with read & write", TokenVars[0])
}

// NewClient builds an hcloud-go client from cfg. Its own retryer repeats
// rate-limited, conflicting and timed-out calls with exponential backoff;
// underneath, a token bucket as large as Hetzner's keeps a fleet's swaps
// from ever emptying the project's budget.
func NewClient(cfg Config) (*hcloud.Client, error) {
	if cfg.Token == "" {
		return nil, fmt.Errorf("hetzner: no API token: set %s", TokenVars[0])
	}
	base := cfg.HTTPClient
	if base == nil {
		base = &http.Client{Timeout: 60 * time.Second}
	}
	hc := *base
	if hc.Transport == nil {
		hc.Transport = http.DefaultTransport
	}
	per := cfg.PerHour
	if per <= 0 {
		per = PerHour
	}
	hc.Transport = &limited{next: hc.Transport, lim: rate.NewLimiter(rate.Limit(float64(per)/3600), per), progress: cfg.Progress}
	poll := cfg.PollInterval
	if poll <= 0 {
		poll = time.Second
	}
	opts := []hcloud.ClientOption{
		hcloud.WithToken(cfg.Token),
		hcloud.WithApplication("vmswap", ""),
		hcloud.WithHTTPClient(&hc),
		hcloud.WithPollOpts(hcloud.PollOpts{BackoffFunc: hcloud.ExponentialBackoffWithOpts(hcloud.ExponentialBackoffOpts{
			Base: poll, Multiplier: 1.5, Cap: 10 * poll,
		})}),
	}
	if cfg.BaseURL != "" {
		opts = append(opts, hcloud.WithEndpoint(cfg.BaseURL))
	}
	return hcloud.NewClient(opts...), nil
}

// limited spaces requests with a token bucket shaped like Hetzner's.
type limited struct {
	next     http.RoundTripper
	lim      *rate.Limiter
	progress provider.Progress
}

func (l *limited) RoundTrip(r *http.Request) (*http.Response, error) {
	if res := l.lim.Reserve(); res.OK() {
		if d := res.Delay(); d > 0 {
			if l.progress != nil && d > time.Second {
				l.progress("hetzner: keeping under the API rate limit: waiting %s", d.Round(time.Second))
			}
			t := time.NewTimer(d)
			select {
			case <-r.Context().Done():
				t.Stop()
				res.Cancel()
				return nil, r.Context().Err()
			case <-t.C:
			}
		}
	}
	return l.next.RoundTrip(r)
}

// Wrap prefixes err with what was being done, maps not_found to
// provider.ErrNotFound, and says what to do about a refused token. The
// other Hetzner drivers use it too.
func Wrap(err error, format string, args ...any) error {
	what := fmt.Sprintf(format, args...)
	switch {
	case hcloud.IsError(err, hcloud.ErrorCodeNotFound):
		return fmt.Errorf("hetzner: %s: %w", what, provider.ErrNotFound)
	case hcloud.IsError(err, hcloud.ErrorCodeUnauthorized):
		return fmt.Errorf("hetzner: %s: the API refused the token (unauthorized): check %s, or the token_env the provider block names", what, TokenVars[0])
	case hcloud.IsError(err, hcloud.ErrorCodeForbidden):
		return fmt.Errorf("hetzner: %s: the token may only read (forbidden): vmswap needs a read & write token", what)
	}
	return fmt.Errorf("hetzner: %s: %w", what, err)
}

// WaitAction waits for actions with the SDK's waiter, telling progress
// what is under way. A failed action's error is returned with its code.
func WaitAction(ctx context.Context, c *hcloud.Client, progress provider.Progress, what string, actions ...*hcloud.Action) error {
	var live []*hcloud.Action
	for _, a := range actions {
		if a != nil {
			live = append(live, a)
		}
	}
	if len(live) == 0 {
		return nil
	}
	start := time.Now()
	err := c.Action.WaitForFunc(ctx, func(a *hcloud.Action) error {
		if a.Status == hcloud.ActionStatusRunning && progress != nil && time.Since(start) > 2*time.Second {
			progress("hetzner: %s: %s %d%% (%s)", what, a.Command, a.Progress, time.Since(start).Round(time.Second))
		}
		return nil
	}, live...)
	if err == nil {
		return nil
	}
	var ae hcloud.ActionError
	if errors.As(err, &ae) {
		if a := ae.Action(); a != nil {
			return fmt.Errorf("hetzner: %s: action %d (%s) failed: %s (%s)", what, a.ID, a.Command, ae.Message, ae.Code)
		}
		return fmt.Errorf("hetzner: %s: failed: %s (%s)", what, ae.Message, ae.Code)
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return Wrap(err, "%s", what)
}

// serverErrorAttempts is how many times a call the API answered 5xx (or
// never answered) is made in all.
const serverErrorAttempts = 3

// IsServerError reports whether err is a 5xx answer or no answer at all: the
// call may or may not have been carried out.
func IsServerError(err error) bool {
	var ne net.Error
	return hcloud.IsError(err, hcloud.ErrorCodeServerError, hcloud.ErrorCodeServiceError, hcloud.ErrorCodeUnknownError, hcloud.ErrorCodeTimeout, hcloud.ErrorCodeBadGateway) ||
		errors.Is(err, hcloud.ErrStatusCode) || errors.As(err, &ne)
}

// Converge runs step, which reads the state and changes it only if needed,
// again after a server error: hcloud-go's retryer repeats only 409, 429,
// 502 and 504, and a step that re-reads before it changes anything is safe
// to repeat whatever the first attempt did.
func Converge(ctx context.Context, progress provider.Progress, what string, step func() error) error {
	for attempt := 1; ; attempt++ {
		err := step()
		if err == nil || ctx.Err() != nil || !IsServerError(err) || attempt == serverErrorAttempts {
			return err
		}
		wait := time.Duration(attempt) * time.Second
		if progress != nil {
			progress("hetzner: %s: %v; reading the state again and retrying in %s", what, err, wait)
		}
		if err := provider.Sleep(ctx, wait); err != nil {
			return err
		}
	}
}
