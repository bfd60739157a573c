package runner_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/smithy-go/middleware"
	"gopkg.in/yaml.v3"

	"github.com/vmswap/vmswap/plans"
	"github.com/vmswap/vmswap/plans/registry"
	"github.com/vmswap/vmswap/plans/runner"
	"github.com/vmswap/vmswap/provider/aws/mototest"
	"github.com/vmswap/vmswap/verify"
)

// fastClock runs the runner's holds (drain, cached-DNS waits, observe)
// without waiting: moto changes nothing with time, and the wall clock would
// only make the test slow.
type fastClock struct {
	mu  sync.Mutex
	off time.Duration
}

func (c *fastClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.off)
}

func (c *fastClock) Sleep(ctx context.Context, d time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c.mu.Lock()
	c.off += d
	c.mu.Unlock()
	time.Sleep(time.Millisecond)
	return nil
}

// awsRecorder collects the AWS operations every end-to-end run calls, for
// the IAM policy check.
var awsRecorder = mototest.NewRecorder()

type awsWorld struct {
	t   *testing.T
	srv *mototest.Server
	w   *mototest.World
	app *httptest.Server
	dir string
}

// newAWSWorld starts moto with a world in it, and a loopback server that
// stands in for the instances (moto's instances serve nothing, and their
// addresses are not on this machine: every network check goes here,
// through the plan's connect-address override).
func newAWSWorld(t *testing.T) *awsWorld {
	srv := mototest.Start(t)
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/health" {
			fmt.Fprintln(w, "ok")
			return
		}
		fmt.Fprintln(w, "<h1>shop</h1>")
	}))
	t.Cleanup(app.Close)
	return &awsWorld{t: t, srv: srv, w: mototest.NewWorld(t, srv), app: app, dir: t.TempDir()}
}

func (a *awsWorld) doc(cutover string) *plans.Document {
	appAddr := strings.TrimPrefix(a.app.URL, "http://")
	sw := plans.Swap{
		Source: plans.Source{Provider: "aws", Server: "web-1"}, Target: plans.Target{Size: "m5.large"},
		Verify: plans.Verify{ConnectAddress: appAddr, HTTP: []verify.HTTPCheck{{URL: "http://www.example.test/health", Status: 200, BodyContains: "ok"}}, Compare: []string{"/"}},
		Probe:  &plans.Probe{URL: "http://www.example.test/", Rate: 100, ConnectTo: appAddr}, Observe: plans.Duration(2 * time.Second),
		Retire: plans.Retire{Action: "power_off", ShutdownTimeout: plans.Duration(time.Minute)},
	}
	switch cutover {
	case "target_group":
		sw.Cutover.LoadBalancer = &plans.LBCutover{Provider: "aws", ID: a.w.TargetGroup}
	case "route53":
		sw.Cutover.DNS = &plans.DNSCutover{Provider: "aws", Record: a.w.Record, Grace: plans.Duration(30 * time.Second)}
	case "elastic_ip":
		sw.Cutover.ReservedIP = &plans.IPCutover{Provider: "aws", IP: a.w.EIP}
	}
	p := &plans.Plan{Version: 1, ID: "awstest", Providers: map[string]plans.Provider{"aws": {Type: "aws", Endpoint: a.srv.URL, Region: "us-east-1", Nameserver: "none"}}, Swaps: []plans.Swap{sw}}
	b, _ := yaml.Marshal(p)
	doc, err := plans.Check(filepath.Join(a.dir, cutover+".yaml"), b)
	if err != nil {
		a.t.Fatalf("plan: %v", err)
	}
	return doc
}

func (a *awsWorld) runner(doc *plans.Document, j *runner.Journal, emit func(runner.Event)) *runner.Runner {
	env := a.srv.Env()
	drivers, err := registry.Build(doc.Plan, registry.BuildOptions{Getenv: func(k string) string { return env[k] }, PollInterval: 50 * time.Millisecond,
		AWSAPIOptions: []func(*middleware.Stack) error{awsRecorder.APIOption}})
	if err != nil {
		a.t.Fatal(err)
	}
	return &runner.Runner{Doc: doc, Drivers: drivers, Journal: j, Poll: 50 * time.Millisecond, Clock: &fastClock{}, Emit: emit}
}

// TestAWSSwaps applies an AWS plan for each cutover against moto; the
// target-group run is interrupted after the launch and resumed, and must
// not launch a second instance. Then the IAM policy in the README must list
// exactly the actions the drivers called.
func TestAWSSwaps(t *testing.T) {
	for _, cut := range []string{"target_group", "route53", "elastic_ip"} {
		t.Run(cut, func(t *testing.T) {
			a := newAWSWorld(t)
			doc := a.doc(cut)
			j := runner.NewJournal(runner.JournalPath(doc.File), doc, "aws"+cut[:3]+"123456")
			var res *runner.Result
			if cut == "target_group" {
				ctx, cancel := context.WithCancel(context.Background())
				res = a.runner(doc, j, func(e runner.Event) {
					if e.Step == "launch" && e.Status == "ok" {
						cancel()
					}
				}).Run(ctx)
				if res.Status != runner.StatusInterrupted {
					t.Fatalf("first run: %s %s", res.Status, res.Next)
				}
				j2, err := runner.LoadJournal(runner.JournalPath(doc.File))
				if err != nil {
					t.Fatal(err)
				}
				j = j2
			}
			var events []string
			res = a.runner(doc, j, func(e runner.Event) { events = append(events, e.Message) }).Run(context.Background())
			if res.ExitCode != 0 {
				t.Log(strings.Join(events, "\n"))
				t.Fatalf("exit %d: %s: %s", res.ExitCode, res.Swaps[0].Error, res.Next)
			}
			sr := res.Swaps[0]
			t.Logf("aws %s: %s, %d requests (to the loopback stand-in), %d failed", cut, sr.Status, sr.Requests, sr.Failed)
			if sr.Failed != 0 {
				t.Fatalf("probe: %+v", sr)
			}
			// Exactly one instance was launched, even across the interruption.
			r := a.runner(doc, j, nil)
			servers, _, err := r.Drivers["aws"].Compute.FindTagged(context.Background(), "vmswap:awstest")
			if err != nil || len(servers) != 1 || servers[0].ID != j.Swaps[0].NewID {
				t.Fatalf("launched instances: %v %v", servers, err)
			}
			old, _ := r.Drivers["aws"].Compute.GetServer(context.Background(), a.w.InstanceID)
			if old.Status != "off" {
				t.Fatalf("old instance is %s", old.Status)
			}
			// The names moved with the Name tag: the new instance is web-1.
			nw, _ := r.Drivers["aws"].Compute.GetServer(context.Background(), j.Swaps[0].NewID)
			if nw.Name != "web-1" || old.Name != "web-1-retired-"+j.ShortRunID() {
				t.Fatalf("names after the swap: new %q, old %q", nw.Name, old.Name)
			}
			switch cut {
			case "target_group":
				pool, _ := r.Drivers["aws"].LB.Pool(context.Background(), a.w.TargetGroup)
				if k := pool.Keys(); len(k) != 1 || k[0] != "id:"+j.Swaps[0].NewID {
					t.Fatalf("target group: %v", k)
				}
			case "route53":
				rec, _ := r.Drivers["aws"].DNS.GetRecord(context.Background(), a.w.Record, "A")
				if len(rec.Values) != 1 || rec.Values[0] != j.Swaps[0].NewIP {
					t.Fatalf("record: %+v", rec)
				}
			case "elastic_ip":
				if got, _ := r.Drivers["aws"].IP.AssignedTo(context.Background(), a.w.EIP); got != j.Swaps[0].NewID {
					t.Fatalf("EIP: %s", got)
				}
			}
		})
	}
	t.Run("rollback", func(t *testing.T) {
		a := newAWSWorld(t)
		doc := a.doc("elastic_ip")
		broken := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { http.Error(w, "boom", 500) }))
		defer broken.Close()
		doc.Plan.Swaps[0].Verify.ConnectAddress = strings.TrimPrefix(broken.URL, "http://")
		doc.Plan.Swaps[0].Verify.Compare = nil
		res := a.runner(doc, runner.NewJournal(runner.JournalPath(doc.File), doc, "awsrollback1"), nil).Run(context.Background())
		if res.ExitCode != runner.ExitRolledBack {
			t.Fatalf("exit %d: %s", res.ExitCode, res.Next)
		}
		r := a.runner(doc, nil, nil)
		servers, images, _ := r.Drivers["aws"].Compute.FindTagged(context.Background(), "vmswap:awstest")
		if len(servers)+len(images) != 0 {
			t.Fatalf("left after rollback: %v %v", servers, images)
		}
		t.Logf("aws rollback: %s", res.Next)
	})
	t.Run("downsize", func(t *testing.T) {
		// Instance types go down as freely as up: t3.small to t3.micro.
		a := newAWSWorld(t)
		doc := a.doc("elastic_ip")
		doc.Plan.Swaps[0].Target.Size = "t3.micro"
		doc = func() *plans.Document {
			b, _ := yaml.Marshal(doc.Plan)
			d, err := plans.Check(doc.File, b)
			if err != nil {
				t.Fatal(err)
			}
			return d
		}()
		j := runner.NewJournal(runner.JournalPath(doc.File), doc, "awsdown12345")
		if res := a.runner(doc, j, nil).Run(context.Background()); res.ExitCode != 0 {
			t.Fatalf("downsize: exit %d: %s", res.ExitCode, res.Next)
		}
		r := a.runner(doc, nil, nil)
		nw, _ := r.Drivers["aws"].Compute.GetServer(context.Background(), j.Swaps[0].NewID)
		if nw.Size != "t3.micro" || nw.Name != "web-1" {
			t.Fatalf("after the downsize: %+v", nw)
		}
	})
	t.Run("switch_back", func(t *testing.T) {
		a := newAWSWorld(t)
		doc := a.doc("elastic_ip")
		j := runner.NewJournal(runner.JournalPath(doc.File), doc, "awsback123456")
		if res := a.runner(doc, j, nil).Run(context.Background()); res.ExitCode != 0 {
			t.Fatalf("swap: %s", res.Next)
		}
		rev := a.runner(doc, j, nil).Revert(context.Background())
		if rev.ExitCode != 0 || rev.Status != runner.StatusReverted {
			t.Fatalf("revert: %d %s", rev.ExitCode, rev.Next)
		}
		r := a.runner(doc, nil, nil)
		if got, _ := r.Drivers["aws"].IP.AssignedTo(context.Background(), a.w.EIP); got != a.w.InstanceID {
			t.Fatalf("EIP after switching back: %s", got)
		}
		old, _ := r.Drivers["aws"].Compute.GetServer(context.Background(), a.w.InstanceID)
		nw, _ := r.Drivers["aws"].Compute.GetServer(context.Background(), j.Swaps[0].NewID)
		if old.Name != "web-1" || nw.Name != j.Swaps[0].NewName {
			t.Fatalf("names after switching back: old %q, new %q (want web-1, %s)", old.Name, nw.Name, j.Swaps[0].NewName)
		}
	})
	t.Run("iam_policy", func(t *testing.T) {
		readme, err := os.ReadFile("../../README.md")
		if err != nil {
			t.Fatal(err)
		}
		m := regexp.MustCompile("(?s)<!-- iam-policy -->\\s*```json\\n(.*?)```").FindSubmatch(readme)
		if m == nil {
			t.Fatalf("README has no <!-- iam-policy --> JSON block; the drivers called:\n%s", strings.Join(awsRecorder.Actions(), "\n"))
		}
		var pol struct{ Statement []struct{ Action []string } }
		if err := json.Unmarshal(m[1], &pol); err != nil {
			t.Fatalf("README IAM policy: %v", err)
		}
		var listed []string
		for _, st := range pol.Statement {
			listed = append(listed, st.Action...)
		}
		slices.Sort(listed)
		called := awsRecorder.Actions()
		if !slices.Equal(listed, called) {
			t.Fatalf("README policy lists\n%s\nthe drivers called\n%s", strings.Join(listed, "\n"), strings.Join(called, "\n"))
		}
	})
}
