package lab

import (
	"context"
	"io"
	"log"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// edgeHost is the host number of the Cloudflare edge address in the lab's /24.
const edgeHost = 254

// startEdge runs the lab's Cloudflare edge: DNS answers its address for
// proxied records, and it forwards each request, by Host, to the origin the
// record holds now, as Cloudflare's proxy does. Clients therefore never see
// or cache an origin address.
func (l *Lab) startEdge() error {
	ln, err := net.Listen("tcp", net.JoinHostPort(l.hostIP(edgeHost), strconv.Itoa(l.cfg.HTTPPort)))
	if err != nil {
		return err
	}
	proxy := newProxy("502 Bad Gateway (origin unreachable)")
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, ErrorLog: log.New(io.Discard, "", 0),
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			host := strings.ToLower(r.Host)
			if h, _, err := net.SplitHostPort(host); err == nil {
				host = h
			}
			origin := l.proxiedOrigin(host)
			if origin == "" {
				http.Error(w, "530: no proxied record for "+host, 530)
				return
			}
			proxy.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), memberKey{}, net.JoinHostPort(origin, strconv.Itoa(l.cfg.HTTPPort)))))
		})}
	l.edge = srv
	go srv.Serve(ln)
	return nil
}

// proxiedOrigin returns the origin of a proxied A record, or "".
func (l *Lab) proxiedOrigin(host string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, z := range l.st.Zones {
		for _, r := range z.Records {
			if r.Proxied && r.Type == "A" && r.Name == host {
				return r.Content
			}
		}
	}
	return ""
}
