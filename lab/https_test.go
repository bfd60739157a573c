package lab_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vmswap/vmswap/lab"
	"github.com/vmswap/vmswap/lab/labtest"
)

// TestDropletHTTPS: a droplet serves its site over TLS too, with a
// certificate from the lab's CA valid for the test sites' names and the
// droplet's IP; endpoints.json names the CA file written beside it; power off
// closes the TLS listener with the HTTP one.
func TestDropletHTTPS(t *testing.T) {
	l := labtest.Start(t, lab.Config{})
	dir := t.TempDir()
	if err := l.WriteEndpoints(filepath.Join(dir, "endpoints.json")); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "endpoints.json"))
	if err != nil {
		t.Fatal(err)
	}
	var ep lab.Endpoints
	if err := json.Unmarshal(b, &ep); err != nil {
		t.Fatal(err)
	}
	if ep.CAFile != filepath.Join(dir, "ca.pem") || ep.HTTPSPort != l.HTTPSPort() || ep.HTTPSPort == 0 {
		t.Fatalf("endpoints.json: ca_file %q, https_port %d", ep.CAFile, ep.HTTPSPort)
	}
	caPEM, err := os.ReadFile(ep.CAFile)
	if err != nil || !bytes.Equal(caPEM, l.CACertPEM()) {
		t.Fatalf("ca.pem is not the lab's CA: %v", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		t.Fatal("ca.pem holds no certificate")
	}

	id, ip, err := l.Seeder().Droplet(ctx(t), "web-1", "s-1vcpu-1gb", nil, map[string]string{"index.html": "<h1>shop</h1>\n"})
	if err != nil {
		t.Fatal(err)
	}
	addr := net.JoinHostPort(ip, strconv.Itoa(l.HTTPSPort()))
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: pool},
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		},
	}}
	for _, tc := range []struct {
		desc, url, body, err string
	}{
		{desc: "a demo site", url: "https://www.demo.test/served-by", body: "<p>Served by web-1</p>"},
		{desc: "a shop site's apex", url: "https://shop.test/", body: "<h1>shop</h1>"},
		{desc: "the droplet's IP", url: "https://" + ip + "/health", body: "ok"},
		{desc: "a name the certificate does not hold", url: "https://www.example.test/", err: "certificate is valid for *.demo.test, demo.test, *.shop.test, shop.test, not www.example.test"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			resp, err := client.Get(tc.url)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("got %v, want an error with %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != 200 || !strings.Contains(string(body), tc.body) || resp.Header.Get("X-Served-By") != "web-1" {
				t.Fatalf("%d %q %v", resp.StatusCode, body, resp.Header)
			}
		})
	}

	c := labtest.Godo(t, l)
	a, _, err := c.DropletActions.PowerOff(ctx(t), id)
	if err != nil {
		t.Fatal(err)
	}
	waitAction(t, c, id, a.ID)
	if conn, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		conn.Close()
		t.Fatal("powered-off droplet accepted an HTTPS connection")
	}
}
