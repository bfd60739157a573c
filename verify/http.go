package verify

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

// HTTPCheck is one request and what its answer must be.
type HTTPCheck struct {
	URL          string            `json:"url" yaml:"url"`
	Status       int               `json:"status,omitempty" yaml:"status,omitempty" check:"range=100..599,label=HTTP status"`
	BodyContains string            `json:"body_contains,omitempty" yaml:"body_contains,omitempty"`
	Headers      map[string]string `json:"headers,omitempty" yaml:"headers,omitempty"`
}

// Pinned returns an HTTP client whose every connection goes to addr
// (host:port, or a host to which the URL's port is added) while requests
// keep their URL: the Host header and the TLS SNI name are the URL's host,
// and the certificate is verified against that name. It is how a check
// reaches a server that DNS does not point at yet. caFile adds a CA bundle
// to the system roots.
func Pinned(addr, caFile string, timeout time.Duration) (*http.Client, error) {
	tc := &tls.Config{}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("http: CA file: %w", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("http: CA file %s holds no PEM certificate", caFile)
		}
		tc.RootCAs = pool
	}
	d := &net.Dialer{Timeout: timeout}
	tr := &http.Transport{
		TLSClientConfig:   tc,
		DisableKeepAlives: true,
		Proxy:             nil,
		DialContext: func(ctx context.Context, network, urlAddr string) (net.Conn, error) {
			target := addr
			if _, _, err := net.SplitHostPort(addr); err != nil {
				_, port, _ := net.SplitHostPort(urlAddr)
				target = net.JoinHostPort(addr, port)
			}
			return d.DialContext(ctx, network, target)
		},
	}
	return &http.Client{Transport: tr, Timeout: timeout, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}, nil
}

// Do sends a GET for rawURL with client and returns the status, headers and
// up to 1 MiB of body.
func Do(ctx context.Context, client *http.Client, rawURL string) (int, http.Header, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		return 0, nil, nil, err
	}
	req.Header.Set("User-Agent", "vmswap-verify")
	resp, err := client.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, resp.Header, body, err
}

// Check runs c against the server at addr and returns every way the answer
// differs from what c expects (nil when it passes).
func (c HTTPCheck) Check(ctx context.Context, client *http.Client) []error {
	status, h, body, err := Do(ctx, client, c.URL)
	if err != nil {
		return []error{fmt.Errorf("GET %s: %w", c.URL, unwrapURL(err))}
	}
	var errs []error
	want := c.Status
	if want == 0 {
		want = 200
	}
	if status != want {
		errs = append(errs, fmt.Errorf("GET %s: status %d, want %d", c.URL, status, want))
	}
	if c.BodyContains != "" && !bytes.Contains(body, []byte(c.BodyContains)) {
		errs = append(errs, fmt.Errorf("GET %s: body does not contain %q (starts %q)", c.URL, c.BodyContains, excerpt(body)))
	}
	for k, v := range c.Headers {
		if got := h.Get(k); got != v {
			errs = append(errs, fmt.Errorf("GET %s: header %s is %q, want %q", c.URL, k, got, v))
		}
	}
	return errs
}

func unwrapURL(err error) error {
	if ue, ok := err.(*url.Error); ok {
		return ue.Err
	}
	return err
}

func excerpt(b []byte) string {
	s := strings.TrimSpace(string(b))
	if len(s) > 60 {
		s = s[:60] + "…"
	}
	return s
}

// Compare requests each path of base's host from the old and the new server
// and reports every path whose status or body differ.
func Compare(ctx context.Context, oldClient, newClient *http.Client, base string, paths []string) []error {
	var errs []error
	for _, p := range paths {
		u, err := url.Parse(base)
		if err != nil {
			return []error{fmt.Errorf("compare: base URL %q: %w", base, err)}
		}
		ref, err := url.Parse(p)
		if err != nil {
			errs = append(errs, fmt.Errorf("compare %s: %w", p, err))
			continue
		}
		full := u.ResolveReference(ref).String()
		os, _, ob, oerr := Do(ctx, oldClient, full)
		ns, _, nb, nerr := Do(ctx, newClient, full)
		switch {
		case oerr != nil:
			errs = append(errs, fmt.Errorf("compare %s: old server: %w", p, unwrapURL(oerr)))
		case nerr != nil:
			errs = append(errs, fmt.Errorf("compare %s: new server: %w", p, unwrapURL(nerr)))
		case os != ns:
			errs = append(errs, fmt.Errorf("compare %s: status %d on the old server, %d on the new", p, os, ns))
		case !bytes.Equal(ob, nb):
			errs = append(errs, fmt.Errorf("compare %s: bodies differ (old %d bytes %q, new %d bytes %q)", p, len(ob), excerpt(ob), len(nb), excerpt(nb)))
		}
	}
	return errs
}
