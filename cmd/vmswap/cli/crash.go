//go:build crashhook

package cli

import (
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// CrashEnv names the crash-test hook: "journal:N" kills the process with
// SIGKILL right after its Nth journal write, "api:N" right after the
// response to its Nth mutating API request, "carry:PASS:N" right after the
// Nth file copied by the carry pass named PASS (catch-up, final, …). The kill-point tests use it to
// prove a run resumes from any point; it has no other use, and is built
// only with the crashhook build tag (the tests' binary).
const CrashEnv = "VMSWAP_CRASH_AT"

type crashPoint struct {
	kind string
	n    int64
}

func parseCrash(getenv func(string) string) (*crashPoint, error) {
	v := getenv(CrashEnv)
	if v == "" {
		return nil, nil
	}
	i := strings.LastIndex(v, ":")
	if i < 0 {
		return nil, fmt.Errorf("%s=%q: want journal:N, api:N or carry:PASS:N", CrashEnv, v)
	}
	kind, num := v[:i], v[i+1:]
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 1 || (kind != "journal" && kind != "api" && !strings.HasPrefix(kind, "carry:")) {
		return nil, fmt.Errorf("%s=%q: want journal:N, api:N or carry:PASS:N", CrashEnv, v)
	}
	return &crashPoint{kind, n}, nil
}

func crash() {
	syscall.Kill(os.Getpid(), syscall.SIGKILL)
	select {}
}

// afterSave returns the journal hook for the crash point.
func (c *crashPoint) afterSave() func(int) {
	if c == nil || c.kind != "journal" {
		return nil
	}
	return func(n int) {
		if int64(n) == c.n {
			crash()
		}
	}
}

// afterCopy returns the carry hook for the crash point.
func (c *crashPoint) afterCopy() func(pass string, n int) {
	if c == nil || !strings.HasPrefix(c.kind, "carry:") {
		return nil
	}
	return func(pass string, n int) {
		if "carry:"+pass == c.kind && int64(n) == c.n {
			crash()
		}
	}
}

// httpClient returns an HTTP client that crashes after the Nth mutation.
func (c *crashPoint) httpClient() *http.Client {
	if c == nil || c.kind != "api" {
		return nil
	}
	return &http.Client{Timeout: 60 * time.Second, Transport: &crashTransport{next: http.DefaultTransport, at: c.n}}
}

type crashTransport struct {
	next  http.RoundTripper
	at    int64
	count atomic.Int64
}

func (t *crashTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := t.next.RoundTrip(r)
	if r.Method != http.MethodGet && r.Method != http.MethodHead && err == nil && resp.StatusCode < 300 {
		if t.count.Add(1) == t.at {
			crash()
		}
	}
	return resp, err
}
