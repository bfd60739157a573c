package main_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	sdk "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/vmswap/vmswap/plans"
	"github.com/vmswap/vmswap/provider/aws/mototest"
	"github.com/vmswap/vmswap/verify/probe"
)

// remoteWorld is the kill world's load-balancer swap with its state in a
// bucket on moto's S3, and two "runners": directories that share nothing
// but the plan's text and the bucket.
type remoteWorld struct {
	*killWorld
	s3     *s3.Client
	bucket string
	text   []byte
}

func newRemoteWorld(t *testing.T) *remoteWorld {
	w := newCutoverWorld(t, "", "loadbalancer")
	moto := mototest.Start(t)
	env := moto.Env()
	c := s3.New(s3.Options{Region: "us-east-1", BaseEndpoint: sdk.String(moto.URL), UsePathStyle: true,
		Credentials: credentials.NewStaticCredentialsProvider(env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"], "")})
	rw := &remoteWorld{killWorld: w, s3: c, bucket: "vmswap-state"}
	if _, err := c.CreateBucket(context.Background(), &s3.CreateBucketInput{Bucket: &rw.bucket}); err != nil {
		t.Fatal(err)
	}
	w.plan.State = &plans.State{S3: &plans.S3State{Bucket: rw.bucket, Prefix: "ci/plans", Endpoint: moto.URL, Lease: plans.Duration(3 * time.Second)}}
	w.plan.Swaps[0].Observe = plans.Duration(3 * time.Second)
	w.writePlan(t, w.planFile, w.plan)
	rw.text, _ = os.ReadFile(w.planFile)
	w.env = append(w.env, "AWS_ACCESS_KEY_ID="+env["AWS_ACCESS_KEY_ID"], "AWS_SECRET_ACCESS_KEY="+env["AWS_SECRET_ACCESS_KEY"])
	return rw
}

// runner is a fresh directory holding only the plan file, as a CI job's
// checkout is.
func (rw *remoteWorld) runner(t *testing.T) string {
	dir := t.TempDir()
	file := filepath.Join(dir, "plan.yaml")
	if err := os.WriteFile(file, rw.text, 0o644); err != nil {
		t.Fatal(err)
	}
	return file
}

func (rw *remoteWorld) object(t *testing.T, name string) []byte {
	out, err := rw.s3.GetObject(context.Background(), &s3.GetObjectInput{Bucket: &rw.bucket, Key: sdk.String("ci/plans/kill/" + name)})
	if err != nil {
		return nil
	}
	defer out.Body.Close()
	var b bytes.Buffer
	b.ReadFrom(out.Body)
	return b.Bytes()
}

// TestRemoteStateRunnerBResumes: an apply killed with -9 mid-swap on
// runner A (whose directory is then deleted) is resumed by runner B from
// the bucket: refused while A's lease runs, taken over once it expired,
// with no second droplet and no failed request.
func TestRemoteStateRunnerBResumes(t *testing.T) {
	t.Parallel()
	rw := newRemoteWorld(t)
	ext, err := probe.Start(rw.entry())
	if err != nil {
		t.Fatal(err)
	}
	a := rw.runner(t)
	first := vmswap(t, append(rw.env, "VMSWAP_CRASH_AT=journal:8"), "apply", "--poll", "50ms", a)
	if first.code != -1 {
		t.Fatalf("runner A was not killed: exit %d\n%s", first.code, first.stderr)
	}
	os.RemoveAll(filepath.Dir(a)) // the runner's disk is gone with the job
	if j := rw.object(t, "journal.json"); !bytes.Contains(j, []byte(`"status": "running"`)) {
		t.Fatalf("the bucket holds no running journal:\n%s", j)
	}
	b := rw.runner(t)
	locked := vmswap(t, rw.env, "apply", "--poll", "50ms", b)
	if locked.code != 2 || !strings.Contains(locked.stderr, "lease running until") {
		t.Fatalf("runner B while A's lease runs: exit %d\n%s", locked.code, locked.stderr)
	}
	time.Sleep(3500 * time.Millisecond)
	second := vmswap(t, rw.env, "apply", "--poll", "50ms", b)
	sum := ext.Stop()
	if second.code != 0 || !strings.Contains(second.stderr, "took over the lock of") || !strings.Contains(second.stderr, "its lease ran out") || !strings.Contains(second.stderr, "resuming run") {
		t.Fatalf("runner B after the lease: exit %d\n%s", second.code, second.stderr)
	}
	inv := rw.l.Inventory()
	if creates := rw.l.OperationCounts()["droplets_create"] - 1; creates != 1 || len(inv.Droplets) != 2 || len(inv.Snapshots) != 0 {
		t.Fatalf("after the resume on runner B: %d creates, %+v", creates, inv)
	}
	if sum.Failed != 0 || sum.Requests == 0 {
		t.Fatalf("probe: %d of %d failed: %v", sum.Failed, sum.Requests, sum.Errors)
	}
	if rw.object(t, "lock.json") != nil {
		t.Fatal("runner B left its lock in the bucket")
	}
	if j := rw.object(t, "journal.json"); !bytes.Contains(j, []byte(`"status": "succeeded"`)) {
		t.Fatalf("the bucket's journal after the run:\n%s", j)
	}
	if st := vmswap(t, rw.env, "status", rw.runner(t)); !strings.Contains(st.stdout, "succeeded") {
		t.Fatalf("status from a third runner: exit %d\n%s%s", st.code, st.stdout, st.stderr)
	}
}

// TestRemoteStateRace: two runners apply one plan at once; exactly one
// runs, the other is refused naming the holder. And a journal rewritten
// behind a run's back is never overwritten: the run stops and says so.
func TestRemoteStateRace(t *testing.T) {
	t.Parallel()
	rw := newRemoteWorld(t)
	files := []string{rw.runner(t), rw.runner(t)}
	var wg sync.WaitGroup
	results := make([]result, 2)
	for i, f := range files {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = vmswap(t, rw.env, "apply", "--poll", "50ms", f)
		}()
	}
	// While the winner runs, someone rewrites the journal in the bucket.
	go func() {
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
			if j := rw.object(t, "journal.json"); bytes.Contains(j, []byte(`"observe"`)) {
				j = append(j, []byte("\n")...) // an edit: another ETag
				rw.s3.PutObject(context.Background(), &s3.PutObjectInput{Bucket: &rw.bucket, Key: sdk.String("ci/plans/kill/journal.json"), Body: bytes.NewReader(j)})
				return
			}
		}
	}()
	wg.Wait()
	var ran, refused int
	for _, r := range results {
		switch {
		case r.code == 2 && strings.Contains(r.stderr, "another vmswap is applying this plan"):
			refused++
		case r.code == 3 && strings.Contains(r.stderr, "was written by someone else since this run read it"):
			ran++
		default:
			t.Fatalf("exit %d\n%s", r.code, r.stderr)
		}
	}
	if ran != 1 || refused != 1 {
		t.Fatalf("%d ran, %d refused", ran, refused)
	}
	if creates := rw.l.OperationCounts()["droplets_create"] - 1; creates != 1 {
		t.Fatalf("%d droplets created by two racing applies", creates)
	}
}
