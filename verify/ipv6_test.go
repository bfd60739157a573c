package verify

import (
	"context"
	"net"
	"net/http"
	"testing"
	"time"
)

// TestHTTPCheckOverIPv6: a check pinned to an IPv6 address (::1, the only
// one a test may dial) sends the URL's Host header to it.
func TestHTTPCheckOverIPv6(t *testing.T) {
	ln, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback here: %v", err)
	}
	var host string
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host = r.Host
		w.Write([]byte("ok"))
	})}
	go srv.Serve(ln)
	defer srv.Close()
	client, err := Pinned(ln.Addr().String(), "", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c := HTTPCheck{URL: "http://www.example.test/health", Status: 200, BodyContains: "ok"}
	if errs := c.Check(context.Background(), client); len(errs) != 0 || host != "www.example.test" {
		t.Fatalf("check over [::1]: %v (Host %q)", errs, host)
	}
}
