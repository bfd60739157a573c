package digitalocean_test

import (
	"bytes"
	"context"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/vmswap/vmswap/provider/digitalocean"
)

// TestHungAPIPrintsNoStrayLine: an API that never answers ends the call at
// the client's timeout with an error, and nothing is printed beside it (the
// oauth2 transport logs a deprecation line when a timeout cancels through
// it).
func TestHungAPIPrintsNoStrayLine(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-release }))
	defer srv.Close()
	defer close(release)
	var logged bytes.Buffer
	was := log.Writer()
	log.SetOutput(&logged)
	defer log.SetOutput(was)
	d, err := digitalocean.New(digitalocean.Config{Token: "t", BaseURL: srv.URL, RetryMax: 1, HTTPClient: &http.Client{Timeout: 200 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.GetServer(context.Background(), "1"); err == nil {
		t.Fatal("a hung API answered")
	}
	if strings.Contains(logged.String(), "deprecated") {
		t.Fatalf("printed: %s", logged.String())
	}
}

func TestCeiling(t *testing.T) {
	for kind, want := range map[string]time.Duration{
		"boot":               10 * time.Minute,
		"snapshot of 25 GB":  35 * time.Minute,
		"snapshot of 160 GB": 170 * time.Minute,
		"rename":             2 * time.Minute,
		"shut down":          2 * time.Minute,
	} {
		if got := digitalocean.Ceiling(kind); got != want {
			t.Errorf("%s: %s, want %s", kind, got, want)
		}
	}
}
