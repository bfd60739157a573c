package probe

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"
)

// Writer acts as users who write while a swap runs: every interval it logs
// in (POST /login, which sets a sid cookie) and uploads a file (PUT
// /uploads/NAME), through the entry point, and asks whether an earlier
// session is still known (GET /me). Check then asks for every session and
// every acknowledged upload: what the app acknowledged and no longer has is
// lost. The app is the lab's, or any that answers the same three routes.
type Writer struct {
	client *http.Client
	base   *url.URL
	stop   chan struct{}
	done   chan struct{}

	mu       sync.Mutex
	sessions []string
	uploads  map[string][]byte
	n        int
	errors   atomic.Int64
	misses   atomic.Int64
}

// Writes is what a Writer made and found again.
type Writes struct {
	Uploads      int `json:"uploads"`
	Sessions     int `json:"sessions"`
	LostUploads  int `json:"lost_uploads"`
	LostSessions int `json:"lost_sessions"`
	// MeMisses counts GET /me answers, during the run, that did not know a
	// session made earlier: moments when a user would have seemed logged
	// out, such as between the catch-up and final passes.
	MeMisses int `json:"me_misses"`
	// WriteErrors counts logins and uploads the app did not acknowledge
	// (not lost: the user saw the error).
	WriteErrors int `json:"write_errors"`
	// Lost names what was lost, the first few.
	Lost []string `json:"lost,omitempty"`
}

func (w Writes) String() string {
	s := fmt.Sprintf("%d uploads and %d sessions made during the swap, %d lost", w.Uploads, w.Sessions, w.LostUploads+w.LostSessions)
	if w.MeMisses > 0 {
		s += fmt.Sprintf(" (%d /me answers did not yet know a session while the passes caught up)", w.MeMisses)
	}
	return s
}

// StartWriter starts writing through the entry point of cfg.
func StartWriter(cfg Config, every time.Duration) *Writer {
	u, _ := url.Parse(cfg.URL)
	client := newClient(cfg)
	// Each action on a new connection, resolved afresh (honouring the TTL),
	// as a user's next upload after a pause would be. A client that keeps
	// one connection to the old server past the DNS hold is what a
	// before_retire hook that stops the old server's app is for.
	client.Transport.(*http.Transport).DisableKeepAlives = true
	w := &Writer{client: client, base: &url.URL{Scheme: u.Scheme, Host: u.Host}, stop: make(chan struct{}), done: make(chan struct{}), uploads: map[string][]byte{}}
	go w.loop(every)
	return w
}

func (w *Writer) loop(every time.Duration) {
	defer close(w.done)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		w.once()
		select {
		case <-w.stop:
			return
		case <-t.C:
		}
	}
}

func (w *Writer) url(p string) string { return w.base.JoinPath(p).String() }

func (w *Writer) once() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	w.mu.Lock()
	w.n++
	n := w.n
	var earlier string
	if len(w.sessions) > 0 {
		earlier = w.sessions[n%len(w.sessions)]
	}
	w.mu.Unlock()

	if sid, err := w.login(ctx, n); err == nil {
		w.mu.Lock()
		w.sessions = append(w.sessions, sid)
		w.mu.Unlock()
	} else {
		w.errors.Add(1)
	}
	b := make([]byte, 512+n%1024)
	rand.Read(b)
	name := fmt.Sprintf("probe-%d-%s.bin", n, hex.EncodeToString(b[:4]))
	if code, err := w.do(ctx, http.MethodPut, "/uploads/"+name, "", b); err == nil && code == http.StatusCreated {
		w.mu.Lock()
		w.uploads[name] = b
		w.mu.Unlock()
	} else {
		w.errors.Add(1)
	}
	if earlier != "" {
		if code, err := w.do(ctx, http.MethodGet, "/me", earlier, nil); err == nil && code == http.StatusUnauthorized {
			w.misses.Add(1)
		}
	}
}

func (w *Writer) login(ctx context.Context, n int) (string, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, w.url("/login"), bytes.NewBufferString(fmt.Sprintf("user=probe-%d", n)))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := w.client.Do(req)
	if err != nil {
		return "", err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	for _, c := range resp.Cookies() {
		if c.Name == "sid" && resp.StatusCode == http.StatusOK {
			return c.Value, nil
		}
	}
	return "", fmt.Errorf("login: HTTP %d without a sid cookie", resp.StatusCode)
}

func (w *Writer) do(ctx context.Context, method, p, sid string, body []byte) (int, error) {
	code, _, err := w.fetch(ctx, method, p, sid, body)
	return code, err
}

func (w *Writer) fetch(ctx context.Context, method, p, sid string, body []byte) (int, []byte, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, _ := http.NewRequestWithContext(ctx, method, w.url(p), rd)
	if sid != "" {
		req.AddCookie(&http.Cookie{Name: "sid", Value: sid})
	}
	resp, err := w.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, b, err
}

// Stop stops writing.
func (w *Writer) Stop() {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	<-w.done
}

// Check asks the entry point for every session and every acknowledged
// upload, and counts what it no longer has.
func (w *Writer) Check(ctx context.Context) Writes {
	w.mu.Lock()
	sessions := append([]string(nil), w.sessions...)
	uploads := make(map[string][]byte, len(w.uploads))
	for k, v := range w.uploads {
		uploads[k] = v
	}
	w.mu.Unlock()
	out := Writes{Uploads: len(uploads), Sessions: len(sessions), MeMisses: int(w.misses.Load()), WriteErrors: int(w.errors.Load())}
	lost := func(what string) {
		if len(out.Lost) < 10 {
			out.Lost = append(out.Lost, what)
		}
	}
	for _, sid := range sessions {
		if code, _, err := w.fetch(ctx, http.MethodGet, "/me", sid, nil); err != nil || code != http.StatusOK {
			out.LostSessions++
			lost(fmt.Sprintf("session %s…: %s", sid[:min(8, len(sid))], outcome(code, err)))
		}
	}
	for name, want := range uploads {
		code, got, err := w.fetch(ctx, http.MethodGet, "/uploads/"+name, "", nil)
		if err != nil || code != http.StatusOK || !bytes.Equal(got, want) {
			out.LostUploads++
			lost(fmt.Sprintf("upload %s: %s", name, outcome(code, err)))
		}
	}
	return out
}

func outcome(code int, err error) string {
	if err != nil {
		return err.Error()
	}
	return fmt.Sprintf("HTTP %d", code)
}
