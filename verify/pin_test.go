package verify

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

// TestPinProxy: the site's name reaches the pinned server over HTTP (Host
// kept) and HTTPS (a CONNECT tunnel, the server's own certificate checked
// end to end for that name); any other destination is refused.
func TestPinProxy(t *testing.T) {
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprintf(w, "host=%s tls=%v", r.Host, r.TLS != nil) })
	plain := httptest.NewServer(handler)
	defer plain.Close()
	secure := httptest.NewTLSServer(handler) // certificate for example.com and 127.0.0.1
	defer secure.Close()

	px := &PinProxy{Hosts: []string{"example.com"}, Addr: "127.0.0.1"}
	purl, err := px.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer px.Close()
	pu, _ := url.Parse(purl)
	tr := secure.Client().Transport.(*http.Transport).Clone()
	tr.Proxy = http.ProxyURL(pu)
	c := &http.Client{Transport: tr}

	get := func(u string) (string, int, error) {
		resp, err := c.Get(u)
		if err != nil {
			return "", 0, err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b), resp.StatusCode, nil
	}
	_, plainPort, _ := strings.Cut(strings.TrimPrefix(plain.URL, "http://"), ":")
	_, securePort, _ := strings.Cut(strings.TrimPrefix(secure.URL, "https://"), ":")
	if body, code, err := get("http://example.com:" + plainPort + "/"); err != nil || code != 200 || body != "host=example.com:"+plainPort+" tls=false" {
		t.Fatalf("http through the proxy: %q %d %v", body, code, err)
	}
	if body, code, err := get("https://example.com:" + securePort + "/"); err != nil || code != 200 || body != "host=example.com:"+securePort+" tls=true" {
		t.Fatalf("https through the proxy: %q %d %v", body, code, err)
	}
	if _, code, err := get("http://elsewhere.test:" + plainPort + "/"); err != nil || code != http.StatusForbidden {
		t.Fatalf("another host over http: %d %v", code, err)
	}
	if _, _, err := get("https://elsewhere.test:" + securePort + "/"); err == nil || !strings.Contains(err.Error(), "Forbidden") {
		t.Fatalf("another host over https: %v", err)
	}
	// The CONNECT answers, as bytes: a 200 with no body framing, and a
	// refusal that closes the connection.
	for _, tc := range []struct{ host, want string }{{"example.com:" + securePort, "200"}, {"elsewhere.test:443", "403"}} {
		conn, err := net.Dial("tcp", pu.Host)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(conn, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", tc.host, tc.host)
		resp, err := http.ReadResponse(bufio.NewReader(conn), &http.Request{Method: http.MethodConnect})
		if err != nil || !strings.HasPrefix(resp.Status, tc.want) {
			t.Fatalf("CONNECT %s: %v %v", tc.host, resp, err)
		}
		if tc.want == "200" && (len(resp.TransferEncoding) > 0 || resp.Header.Get("Content-Length") != "") {
			t.Fatalf("CONNECT 200 with body framing: %v %v", resp.TransferEncoding, resp.Header)
		}
		if tc.want == "403" && !resp.Close {
			t.Fatalf("a refused CONNECT keeps the connection: %v", resp.Header)
		}
		conn.Close()
	}
}
