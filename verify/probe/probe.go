// Package probe sends steady traffic through a service's public entry point
// for the whole of a cutover and its observation, and counts what failed. It
// uses vegeta's attacker at a constant rate over keep-alive connections, as
// browsers connect, and can resolve the entry point's name through a given
// DNS server, caching each answer for exactly its TTL.
package probe

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/influxdata/tdigest"
	"github.com/miekg/dns"
	vegeta "github.com/tsenart/vegeta/v12/lib"
)

// DefaultRate is the probe's rate when its Config names none.
const DefaultRate = 50

// BucketWidth is the resolution of a probe's timeline.
const BucketWidth = 100 * time.Millisecond

// Config holds every setting of a probe.
type Config struct {
	// URL is requested with GET; any status other than 2xx/3xx is a failure.
	URL string
	// Rate is requests per second. Zero: 50.
	Rate int
	// Resolver is a DNS server (host:port) that resolves the URL's host,
	// honouring TTL. Empty: the system resolver (or the URL is an IP).
	Resolver string
	// ConnectTo, when set, sends every connection to this address instead of
	// resolving the URL (a port-forward or bastion).
	ConnectTo string
	// Timeout of one request. Zero: 5s.
	Timeout time.Duration
	// Workers is the attacker's initial worker count. Zero: vegeta's default.
	Workers uint64
	// Writes also acts as users who write: once a second it logs in and
	// uploads through the entry point, and at Stop checks that every session
	// and every acknowledged upload is still there (see Writer).
	Writes bool
}

// Bucket is the traffic of one BucketWidth. In JSON its offset is in
// milliseconds (offset_ms), its percentiles in nanoseconds.
type Bucket struct {
	Offset   time.Duration `json:"-"`
	Requests int           `json:"requests"`
	Failed   int           `json:"failed"`
	P50      time.Duration `json:"p50_ns"`
	P99      time.Duration `json:"p99_ns"`
}

type bucketJSON struct {
	OffsetMS int64 `json:"offset_ms"`
	bucketAlias
}

type bucketAlias Bucket

// MarshalJSON writes the offset in milliseconds.
func (b Bucket) MarshalJSON() ([]byte, error) {
	return json.Marshal(bucketJSON{OffsetMS: b.Offset.Milliseconds(), bucketAlias: bucketAlias(b)})
}

// UnmarshalJSON reads what MarshalJSON writes.
func (b *Bucket) UnmarshalJSON(data []byte) error {
	var j bucketJSON
	if err := json.Unmarshal(data, &j); err != nil {
		return err
	}
	*b = Bucket(j.bucketAlias)
	b.Offset = time.Duration(j.OffsetMS) * time.Millisecond
	return nil
}

// Summary is what a probe saw.
type Summary struct {
	URL      string         `json:"url"`
	Start    time.Time      `json:"start"`
	End      time.Time      `json:"end"`
	Requests int            `json:"requests"`
	Failed   int            `json:"failed"`
	P50      time.Duration  `json:"p50_ns"`
	P99      time.Duration  `json:"p99_ns"`
	Max      time.Duration  `json:"max_ns"`
	Rate     float64        `json:"rate"` // achieved requests per second
	Errors   map[string]int `json:"errors,omitempty"`
	Buckets  []Bucket       `json:"buckets,omitempty"`
	// Windows are the stretches between marks (see Probe.Mark), in order:
	// "baseline" from the start to the first mark, then one per mark.
	Windows []Window `json:"windows,omitempty"`
	// Writes is what the writes mode made and found again.
	Writes *Writes `json:"writes,omitempty"`
}

// Window is the traffic between two marks.
type Window struct {
	Name     string        `json:"name"`
	Start    time.Time     `json:"start"`
	End      time.Time     `json:"end"`
	Requests int           `json:"requests"`
	Failed   int           `json:"failed"`
	P50      time.Duration `json:"p50_ns"`
	P99      time.Duration `json:"p99_ns"`
}

// Probe is a running probe.
type Probe struct {
	cfg      Config
	attacker *vegeta.Attacker
	start    time.Time
	done     chan struct{}
	requests atomic.Int64
	failed   atomic.Int64

	// Memory stays bounded however long the probe runs: a bucket's
	// latencies are kept only until it is closed into its summary, and each
	// window keeps a t-digest, not its samples.
	mu      sync.Mutex
	metrics vegeta.Metrics
	open    map[int][]time.Duration // open bucket index -> latencies
	fails   map[int]int
	closed  map[int]Bucket
	errs    map[string]int
	end     time.Time
	windows []*window
	writer  *Writer
}

type window struct {
	Window
	digest *tdigest.TDigest
}

// openBuckets is how many buckets stay open for results that arrive late.
const openBuckets = 50

// Mark starts a new named window of the summary at this moment (for
// example "cutover" when traffic starts to move).
func (p *Probe) Mark(name string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	p.windows[len(p.windows)-1].End = now
	p.windows = append(p.windows, &window{Window: Window{Name: name, Start: now}, digest: tdigest.NewWithCompression(100)})
}

// closeBucket summarises bucket i and frees its samples. Callers hold p.mu.
func (p *Probe) closeBucket(i int) {
	lat := p.open[i]
	b := Bucket{Offset: time.Duration(i) * BucketWidth, Requests: len(lat), Failed: p.fails[i]}
	if len(lat) > 0 {
		slices.Sort(lat)
		b.P50, b.P99 = lat[len(lat)*50/100], lat[min(len(lat)-1, len(lat)*99/100)]
	}
	p.closed[i] = b
	delete(p.open, i)
	delete(p.fails, i)
}

// Start starts sending requests. It returns an error for a bad URL.
func Start(cfg Config) (*Probe, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("probe: URL %q: want http:// or https:// and a host", cfg.URL)
	}
	if cfg.Rate <= 0 {
		cfg.Rate = DefaultRate
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	client := newClient(cfg)
	opts := []func(*vegeta.Attacker){vegeta.Client(client), vegeta.KeepAlive(true), vegeta.Redirects(0), vegeta.MaxBody(0)}
	if cfg.Workers > 0 {
		opts = append(opts, vegeta.Workers(cfg.Workers))
	}
	start := time.Now()
	p := &Probe{cfg: cfg, attacker: vegeta.NewAttacker(opts...), start: start, done: make(chan struct{}),
		open: map[int][]time.Duration{}, fails: map[int]int{}, closed: map[int]Bucket{}, errs: map[string]int{},
		windows: []*window{{Window: Window{Name: "baseline", Start: start}, digest: tdigest.NewWithCompression(100)}}}
	if cfg.Writes {
		p.writer = StartWriter(cfg, time.Second)
	}
	target := vegeta.NewStaticTargeter(vegeta.Target{Method: http.MethodGet, URL: cfg.URL, Header: http.Header{"User-Agent": {"vmswap-probe"}}})
	results := p.attacker.Attack(target, vegeta.Rate{Freq: cfg.Rate, Per: time.Second}, 0, "probe")
	go p.collect(results)
	go p.rotate(client.Transport.(*http.Transport))
	return p, nil
}

// Rotate is how often the probe closes its idle connections. A kept-alive
// connection stays with the server it was opened to, so without this a
// probe opened before a DNS or reserved-IP cutover would keep testing the
// old server through the whole observe window and never notice a dead new
// one: new connections dial (and look the name up) afresh, as new clients
// do. Only idle connections are closed, never a request in flight.
const Rotate = time.Second

func (p *Probe) rotate(tr *http.Transport) {
	t := time.NewTicker(Rotate)
	defer t.Stop()
	for {
		select {
		case <-p.done:
			tr.CloseIdleConnections()
			return
		case <-t.C:
			tr.CloseIdleConnections()
		}
	}
}

// newClient is an HTTP client that reaches the entry point as the config
// says: through a DNS server honouring TTLs, a fixed address, or the system.
func newClient(cfg Config) *http.Client {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	tr := &http.Transport{
		MaxIdleConnsPerHost: 10000,
		IdleConnTimeout:     90 * time.Second,
		Proxy:               nil,
	}
	dialer := &net.Dialer{Timeout: cfg.Timeout, KeepAlive: 30 * time.Second}
	switch {
	case cfg.ConnectTo != "":
		tr.DialContext = func(ctx context.Context, network, _ string) (net.Conn, error) {
			return dialer.DialContext(ctx, network, cfg.ConnectTo)
		}
	case cfg.Resolver != "":
		r := &resolver{server: cfg.Resolver, cache: map[string]answer{}, onChange: tr.CloseIdleConnections}
		tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
			host, port, err := net.SplitHostPort(addr)
			if err != nil {
				return nil, err
			}
			ip, err := r.lookup(ctx, host)
			if err != nil {
				return nil, err
			}
			return dialer.DialContext(ctx, network, net.JoinHostPort(ip, port))
		}
	}
	return &http.Client{Transport: tr, Timeout: cfg.Timeout}
}

func (p *Probe) collect(results <-chan *vegeta.Result) {
	defer close(p.done)
	for r := range results {
		failed := r.Code < 200 || r.Code >= 400 || r.Error != ""
		p.requests.Add(1)
		if failed {
			p.failed.Add(1)
		}
		idx := int(r.Timestamp.Sub(p.start) / BucketWidth)
		p.mu.Lock()
		p.metrics.Add(r)
		if _, done := p.closed[idx]; !done {
			p.open[idx] = append(p.open[idx], r.Latency)
		}
		for i := range p.open {
			if i < idx-openBuckets {
				p.closeBucket(i)
			}
		}
		w := p.windows[len(p.windows)-1]
		for k := len(p.windows) - 1; k > 0 && r.Timestamp.Before(w.Start); k-- {
			w = p.windows[k-1]
		}
		w.digest.Add(float64(r.Latency), 1)
		w.Requests++
		if failed {
			w.Failed++
		}
		if failed {
			p.fails[idx]++
			reason := r.Error
			if reason == "" {
				reason = "HTTP " + strconv.Itoa(int(r.Code))
			}
			p.errs[shorten(reason)]++
		}
		p.mu.Unlock()
	}
}

// shorten drops the request details vegeta puts before an error's cause.
func shorten(s string) string {
	if i := strings.LastIndex(s, ": "); i >= 0 {
		return s[i+2:]
	}
	return s
}

// TopError returns the most common reason for a failure so far, and how
// often it was seen ("" and 0 when nothing failed).
func (p *Probe) TopError() (string, int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	top, n := "", 0
	for reason, c := range p.errs {
		if c > n || c == n && reason < top {
			top, n = reason, c
		}
	}
	return top, n
}

// URL is the URL the probe requests.
func (p *Probe) URL() string { return p.cfg.URL }

// Failed returns the failures so far.
func (p *Probe) Failed() int64 { return p.failed.Load() }

// Requests returns the requests answered so far.
func (p *Probe) Requests() int64 { return p.requests.Load() }

// Stop stops the probe, waits for requests in flight, and summarises.
func (p *Probe) Stop() Summary {
	var writes *Writes
	if p.writer != nil {
		p.writer.Stop()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		w := p.writer.Check(ctx)
		cancel()
		writes = &w
	}
	p.attacker.Stop()
	<-p.done
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.end.IsZero() {
		p.end = time.Now()
		p.metrics.Close()
	}
	s := Summary{URL: p.cfg.URL, Start: p.start, End: p.end, Requests: int(p.metrics.Requests), Failed: int(p.failed.Load()),
		Errors: p.errs, Max: p.metrics.Latencies.Max, Writes: writes}
	if s.Requests > 0 {
		s.P50, s.P99 = p.metrics.Latencies.P50, p.metrics.Latencies.P99
		s.Rate = float64(s.Requests) / p.end.Sub(p.start).Seconds()
	}
	for i := range p.open {
		p.closeBucket(i)
	}
	last := int(p.end.Sub(p.start) / BucketWidth)
	for i := 0; i <= last; i++ {
		b, ok := p.closed[i]
		if !ok {
			b = Bucket{Offset: time.Duration(i) * BucketWidth}
		}
		s.Buckets = append(s.Buckets, b)
	}
	for k, w := range p.windows {
		out := w.Window
		if k == len(p.windows)-1 {
			out.End = p.end
		}
		if out.Requests > 0 {
			out.P50, out.P99 = time.Duration(w.digest.Quantile(0.5)), time.Duration(w.digest.Quantile(0.99))
		}
		s.Windows = append(s.Windows, out)
	}
	return s
}

// resolver resolves names through one DNS server and caches each answer for
// its TTL. When an answer changes it closes idle connections, so the next
// requests connect to the new address as a browser would.
type resolver struct {
	server   string
	onChange func()

	mu    sync.Mutex
	cache map[string]answer
}

type answer struct {
	ips     []string
	expires time.Time
	next    int
}

func (r *resolver) lookup(ctx context.Context, host string) (string, error) {
	if ip := net.ParseIP(host); ip != nil {
		return host, nil
	}
	r.mu.Lock()
	a, ok := r.cache[host]
	if ok && time.Now().Before(a.expires) && len(a.ips) > 0 {
		a.next++
		r.cache[host] = a
		r.mu.Unlock()
		return a.ips[a.next%len(a.ips)], nil
	}
	r.mu.Unlock()
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(host), dns.TypeA)
	c := &dns.Client{Timeout: 2 * time.Second}
	resp, _, err := c.ExchangeContext(ctx, m, r.server)
	if err != nil {
		return "", fmt.Errorf("probe: resolve %s at %s: %w", host, r.server, err)
	}
	var ips []string
	ttl := uint32(0)
	for _, rr := range resp.Answer {
		if v, ok := rr.(*dns.A); ok {
			ips = append(ips, v.A.String())
			ttl = v.Hdr.Ttl
		}
	}
	if len(ips) == 0 {
		return "", errors.New("probe: " + host + ": no A record at " + r.server)
	}
	slices.Sort(ips)
	r.mu.Lock()
	changed := ok && !slices.Equal(a.ips, ips)
	r.cache[host] = answer{ips: ips, expires: time.Now().Add(time.Duration(ttl) * time.Second)}
	r.mu.Unlock()
	if changed && r.onChange != nil {
		r.onChange()
	}
	return ips[0], nil
}
