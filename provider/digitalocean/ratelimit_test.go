package digitalocean_test

import (
	"context"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/vmswap/vmswap/lab"
	"github.com/vmswap/vmswap/lab/labtest"
	"github.com/vmswap/vmswap/provider/digitalocean"
)

// TestRateLimits: ten workers share one client against a lab that
// enforces 20 requests per 2 seconds, as DigitalOcean enforces 250 a
// minute. With the client's limits set to the lab's, 60 calls all succeed
// and the lab never answers 429; with a client that believes in ten times
// the budget, the lab answers 429s, and every one is waited out
// (Retry-After, ratelimit-reset): no call fails.
func TestRateLimits(t *testing.T) {
	for _, tc := range []struct {
		name        string
		client      digitalocean.Limits
		want429     bool
		wantNoneOut bool
	}{
		{"client keeps under the limit", digitalocean.Limits{Requests: 20, Window: 2 * time.Second}, false, true},
		{"client over the limit waits out the 429s", digitalocean.Limits{Requests: 200, Window: 2 * time.Second}, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			l := labtest.Start(t, lab.Config{RateLimit: &lab.RateLimit{Requests: 20, Window: 2 * time.Second}})
			ep := l.Endpoints()
			drv, err := digitalocean.New(digitalocean.Config{Token: ep.Token, BaseURL: ep.DigitalOceanAPI, Limits: tc.client, RetryMax: 10})
			if err != nil {
				t.Fatal(err)
			}
			before := len(l.Requests())
			var wg sync.WaitGroup
			errs := make(chan error, 60)
			for w := 0; w < 10; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; i < 6; i++ {
						if _, _, err := drv.Client().Regions.List(context.Background(), nil); err != nil {
							errs <- err
						}
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Errorf("a call failed: %v", err)
			}
			n429, ok := 0, 0
			for _, r := range l.Requests()[before:] {
				switch r.Status {
				case http.StatusTooManyRequests:
					n429++
				case http.StatusOK:
					ok++
				}
			}
			t.Logf("%s: %d answered, %d answered 429", tc.name, ok, n429)
			if tc.want429 != (n429 > 0) {
				t.Fatalf("429 answers: %d", n429)
			}
		})
	}
}
