package digitalocean

import (
	"net/http"
	"strconv"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/vmswap/vmswap/provider"
)

// DigitalOcean's published limits: 250 requests a minute and 5,000 an
// hour, per token. https://docs.digitalocean.com/reference/api/#rate-limit
const (
	PerMinute = 250
	PerHour   = 5000
)

// Limits are the request rates a client keeps under.
type Limits struct {
	// Requests per Window; zero: PerMinute a minute.
	Requests int
	Window   time.Duration
	// Hourly is the hourly budget; zero: PerHour.
	Hourly int
}

// limiter spaces a client's requests so that the swaps of a wave, however
// many, share the provider's limits fairly and never set off a storm of
// 429s: a token bucket per window (x/time/rate), and a stop until the
// reset whenever the API says the budget is nearly spent
// (ratelimit-remaining, ratelimit-reset) or answers 429 (Retry-After).
type limiter struct {
	next     http.RoundTripper
	minute   *rate.Limiter
	hour     *rate.Limiter
	progress provider.Progress

	mu    sync.Mutex
	until time.Time // no request before this
}

func newLimiter(next http.RoundTripper, l Limits, progress provider.Progress) *limiter {
	if l.Requests <= 0 {
		l.Requests = PerMinute
	}
	if l.Window <= 0 {
		l.Window = time.Minute
	}
	if l.Hourly <= 0 {
		l.Hourly = PerHour
	}
	if progress == nil {
		progress = func(string, ...any) {}
	}
	return &limiter{next: next, progress: progress, minute: bucket(l.Requests, l.Window), hour: bucket(l.Hourly, time.Hour)}
}

// bucket keeps under n requests in any window: a burst of a tenth of the
// budget, and the rest at an even pace, so that burst plus a window's
// refill never exceeds n.
func bucket(n int, window time.Duration) *rate.Limiter {
	burst := max(1, n/10)
	if n <= burst {
		return rate.NewLimiter(rate.Every(window), 1)
	}
	return rate.NewLimiter(rate.Every(window/time.Duration(n-burst)), burst)
}

// lowWater is the remaining budget below which requests wait for the reset.
const lowWater = 5

func (l *limiter) RoundTrip(r *http.Request) (*http.Response, error) {
	ctx := r.Context()
	l.mu.Lock()
	wait := time.Until(l.until)
	l.mu.Unlock()
	if wait > 0 {
		l.progress("digitalocean: rate limit nearly spent; waiting %s for it to reset", wait.Round(time.Second))
		if err := provider.Sleep(ctx, wait); err != nil {
			return nil, err
		}
	}
	if err := l.minute.Wait(ctx); err != nil {
		return nil, err
	}
	if err := l.hour.Wait(ctx); err != nil {
		return nil, err
	}
	resp, err := l.next.RoundTrip(r)
	if err != nil {
		return resp, err
	}
	l.observe(resp)
	return resp, nil
}

// observe reads the rate-limit headers of an answer.
func (l *limiter) observe(resp *http.Response) {
	now := time.Now()
	var until time.Time
	if resp.StatusCode == http.StatusTooManyRequests {
		if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s >= 0 {
			until = now.Add(time.Duration(s) * time.Second)
		}
	}
	if rem, err := strconv.Atoi(resp.Header.Get("ratelimit-remaining")); err == nil && rem < lowWater {
		if reset, err := strconv.ParseInt(resp.Header.Get("ratelimit-reset"), 10, 64); err == nil {
			if t := time.Unix(reset, 0); t.After(until) && t.Sub(now) < time.Hour {
				until = t
			}
		}
	}
	if until.IsZero() {
		return
	}
	l.mu.Lock()
	if until.After(l.until) {
		l.until = until
	}
	l.mu.Unlock()
}
