package verify

import (
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"slices"
	"strings"
	"sync"
	"time"
)

// PinProxy is an HTTP proxy on loopback that sends a site's public
// hostnames to one server — the new one, before any traffic moves — and
// refuses every other destination. Plain HTTP is forwarded with its Host
// kept; HTTPS is tunnelled with CONNECT, so TLS, SNI and the server's own
// certificate are end to end (the proxy sees no plaintext). Browsers, curl
// and test suites use it through HTTP_PROXY / HTTPS_PROXY, as if the
// public name already pointed at the new server: no hosts file.
type PinProxy struct {
	// Hosts are the names sent to the server (lowercase, no port).
	Hosts []string
	// Addr is the server's address, host only (ports are kept from the
	// request: 80, 443 or the URL's own).
	Addr string
	// Listen is where the proxy listens. Empty: a free port on 127.0.0.1.
	Listen string

	ln    net.Listener
	srv   *http.Server
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns map[net.Conn]bool // tunnels' ends, closed by Close
}

// Start listens on Listen (default a free port on 127.0.0.1) and serves
// until Close.
func (p *PinProxy) Start() (string, error) {
	addr := p.Listen
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", err
	}
	p.ln = ln
	p.srv = &http.Server{Handler: p, ReadHeaderTimeout: 10 * time.Second, ErrorLog: log.New(io.Discard, "", 0)}
	go p.srv.Serve(ln)
	return "http://" + ln.Addr().String(), nil
}

// Close stops the proxy and its tunnels.
func (p *PinProxy) Close() error {
	if p.srv == nil {
		return nil
	}
	err := p.srv.Close()
	p.mu.Lock()
	for c := range p.conns {
		c.Close() // hijacked tunnels are not the server's to close
	}
	p.mu.Unlock()
	p.wg.Wait()
	return err
}

// target is where a request for hostport goes, or "" if it is refused.
func (p *PinProxy) target(hostport, defPort string) string {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		host, port = hostport, defPort
	}
	if !slices.Contains(p.Hosts, strings.ToLower(strings.TrimSuffix(host, "."))) {
		return ""
	}
	return net.JoinHostPort(p.Addr, port)
}

func (p *PinProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodConnect {
		p.tunnel(w, r)
		return
	}
	if r.URL.Host == "" {
		http.Error(w, "vmswap pinning proxy: send requests with an absolute URL (use it as HTTP_PROXY)", http.StatusBadRequest)
		return
	}
	to := p.target(r.URL.Host, "80")
	if to == "" || r.URL.Scheme != "http" {
		http.Error(w, fmt.Sprintf("vmswap pinning proxy: %s is not one of the plan's hosts (%s)", r.URL.Host, strings.Join(p.Hosts, ", ")), http.StatusForbidden)
		return
	}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme, pr.Out.URL.Host = "http", r.URL.Host
			pr.Out.Host = r.Host // the public name, as the site expects it
		},
		Transport: &http.Transport{Proxy: nil, DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{Timeout: 10 * time.Second}).DialContext(ctx, network, to)
		}},
		ErrorLog: log.New(io.Discard, "", 0),
	}
	rp.ServeHTTP(w, r)
}

// tunnel serves CONNECT: bytes both ways between the client and the
// server, TLS untouched.
func (p *PinProxy) tunnel(w http.ResponseWriter, r *http.Request) {
	to := p.target(r.Host, "443")
	if to == "" {
		// A refused CONNECT ends the connection: the client has nothing
		// more to send on it.
		w.Header().Set("Connection", "close")
		http.Error(w, fmt.Sprintf("vmswap pinning proxy: %s is not one of the plan's hosts (%s)", r.Host, strings.Join(p.Hosts, ", ")), http.StatusForbidden)
		return
	}
	up, err := (&net.Dialer{Timeout: 10 * time.Second}).DialContext(r.Context(), "tcp", to)
	if err != nil {
		w.Header().Set("Connection", "close")
		http.Error(w, "vmswap pinning proxy: "+err.Error(), http.StatusBadGateway)
		return
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		up.Close()
		http.Error(w, "vmswap pinning proxy: cannot tunnel", http.StatusInternalServerError)
		return
	}
	down, buf, err := hj.Hijack()
	if err != nil {
		up.Close()
		return
	}
	// Written by hand: net/http would frame a 200 with a body (chunked),
	// which a 2xx answer to CONNECT must not have (RFC 9110, 9.3.6).
	if _, err := io.WriteString(down, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
		up.Close()
		down.Close()
		return
	}
	p.mu.Lock()
	if p.conns == nil {
		p.conns = map[net.Conn]bool{}
	}
	p.conns[up], p.conns[down] = true, true
	p.mu.Unlock()
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		defer func() {
			p.mu.Lock()
			delete(p.conns, up)
			delete(p.conns, down)
			p.mu.Unlock()
		}()
		defer up.Close()
		defer down.Close()
		done := make(chan struct{}, 2)
		go func() {
			if n := buf.Reader.Buffered(); n > 0 {
				b, _ := buf.Reader.Peek(n)
				up.Write(b)
			}
			io.Copy(up, down)
			done <- struct{}{}
		}()
		go func() { io.Copy(down, up); done <- struct{}{} }()
		<-done
	}()
}

// ProxyEnv is the environment that points HTTP clients at the proxy, in
// the spellings curl, browsers and language runtimes read.
func ProxyEnv(proxyURL string) []string {
	return []string{"HTTP_PROXY=" + proxyURL, "HTTPS_PROXY=" + proxyURL, "http_proxy=" + proxyURL, "https_proxy=" + proxyURL, "NO_PROXY=", "no_proxy="}
}
