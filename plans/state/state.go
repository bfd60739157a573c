// Package state keeps a plan's run state — its journal, its lock and the
// carry references — in S3-compatible object storage (AWS S3, DigitalOcean
// Spaces, Cloudflare R2, MinIO), so that a run outlives the machine that
// started it: a CI job killed mid-swap is resumed by the next job, on
// another runner.
//
// Every write is conditional. The journal is replaced only if its ETag is
// still the one last read (If-Match), so two writers never silently
// overwrite each other; the lock is an object created only if absent
// (If-None-Match: *) and holding a lease its holder renews; a lease that
// expired is taken over, replacing exactly the object that was read.
package state

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	sdk "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"
	"github.com/aws/smithy-go/logging"

	"github.com/vmswap/vmswap/plans"
)

// ErrUnavailable wraps what keeps the state from being read or locked at
// all (a bucket that does not exist, no credentials): nothing was changed.
var ErrUnavailable = errors.New("remote state unavailable")

// ErrConflict is a conditional write refused: the object changed (or
// appeared, or went) since it was read.
var ErrConflict = errors.New("changed since it was read")

// S3 is a plan's state in a bucket, under PREFIX/PLAN-ID/.
type S3 struct {
	c      *s3.Client
	bucket string
	prefix string
}

// Open connects to the bucket of cfg for the plan with the given ID.
// Credentials come from getenv: SPACES_ACCESS_KEY_ID and
// SPACES_SECRET_ACCESS_KEY when set (DigitalOcean Spaces), else the AWS
// variables, else the AWS default chain (profiles, roles, OIDC).
func Open(ctx context.Context, cfg *plans.S3State, planID string, getenv func(string) string) (*S3, error) {
	opts := []func(*config.LoadOptions) error{
		config.WithRetryer(func() sdk.Retryer { return retry.NewStandard(func(o *retry.StandardOptions) { o.MaxAttempts = 5 }) }),
		// The SDK's own log lines (checksums skipped, IMDS fallbacks) are
		// not the user's business; errors come back as errors.
		config.WithLogger(logging.Nop{}),
	}
	region := cfg.Region
	if region == "" {
		region = getenv("AWS_REGION")
	}
	if region == "" {
		region = "us-east-1" // Spaces, R2 and MinIO ignore it; S3 needs one
	}
	opts = append(opts, config.WithRegion(region))
	if id, secret := getenv("SPACES_ACCESS_KEY_ID"), getenv("SPACES_SECRET_ACCESS_KEY"); id != "" && secret != "" {
		opts = append(opts, config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider(id, secret, "")))
	} else if id, secret := getenv("AWS_ACCESS_KEY_ID"), getenv("AWS_SECRET_ACCESS_KEY"); id != "" && secret != "" {
		opts = append(opts, config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider(id, secret, getenv("AWS_SESSION_TOKEN"))))
	}
	sc, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("state: %w", err)
	}
	c := s3.NewFromConfig(sc, func(o *s3.Options) {
		o.DisableLogOutputChecksumValidationSkipped = true
		if cfg.Endpoint != "" {
			o.BaseEndpoint = sdk.String(cfg.Endpoint)
			o.UsePathStyle = true // MinIO, moto; Spaces and R2 accept it too
		}
	})
	return &S3{c: c, bucket: cfg.Bucket, prefix: strings.Trim(strings.TrimSpace(cfg.Prefix)+"/"+planID, "/")}, nil
}

func (s *S3) key(name string) string { return s.prefix + "/" + name }

// Where names an object for messages.
func (s *S3) Where(name string) string { return "s3://" + s.bucket + "/" + s.key(name) }

// Read returns an object and its ETag; nil data and "" when it does not
// exist.
func (s *S3) Read(ctx context.Context, name string) ([]byte, string, error) {
	out, err := s.c.GetObject(ctx, &s3.GetObjectInput{Bucket: &s.bucket, Key: sdk.String(s.key(name))})
	if err != nil {
		var ae smithy.APIError
		if errors.As(err, &ae) && ae.ErrorCode() == "NoSuchBucket" {
			return nil, "", fmt.Errorf("state: bucket %s does not exist (or is not visible to these credentials)", s.bucket)
		}
		if isStatus(err, http.StatusNotFound) {
			return nil, "", nil
		}
		return nil, "", fmt.Errorf("state: read %s: %w", s.Where(name), err)
	}
	defer out.Body.Close()
	b, err := io.ReadAll(io.LimitReader(out.Body, 64<<20))
	if err != nil {
		return nil, "", fmt.Errorf("state: read %s: %w", s.Where(name), err)
	}
	return b, sdk.ToString(out.ETag), nil
}

// Write stores an object if it is still at version etag ("" : only if it
// does not exist; "*": whatever it is) and returns its new ETag. A write
// refused by the condition wraps ErrConflict.
func (s *S3) Write(ctx context.Context, name string, data []byte, etag string) (string, error) {
	in := &s3.PutObjectInput{Bucket: &s.bucket, Key: sdk.String(s.key(name)), Body: bytes.NewReader(data), ContentType: sdk.String("application/json")}
	switch etag {
	case "":
		in.IfNoneMatch = sdk.String("*")
	case "*":
	default:
		in.IfMatch = sdk.String(etag)
	}
	out, err := s.c.PutObject(ctx, in)
	if err != nil {
		if isStatus(err, http.StatusPreconditionFailed) || isStatus(err, http.StatusConflict) || (etag != "" && etag != "*" && isStatus(err, http.StatusNotFound)) {
			return "", fmt.Errorf("state: %s %w", s.Where(name), ErrConflict)
		}
		return "", fmt.Errorf("state: write %s: %w", s.Where(name), err)
	}
	return sdk.ToString(out.ETag), nil
}

// Delete removes an object if it is still at version etag.
func (s *S3) Delete(ctx context.Context, name, etag string) error {
	in := &s3.DeleteObjectInput{Bucket: &s.bucket, Key: sdk.String(s.key(name))}
	if etag != "" {
		in.IfMatch = sdk.String(etag)
	}
	if _, err := s.c.DeleteObject(ctx, in); err != nil {
		if isStatus(err, http.StatusPreconditionFailed) {
			return fmt.Errorf("state: %s %w", s.Where(name), ErrConflict)
		}
		if isStatus(err, http.StatusNotFound) {
			return nil
		}
		return fmt.Errorf("state: delete %s: %w", s.Where(name), err)
	}
	return nil
}

func isStatus(err error, code int) bool {
	var re interface{ HTTPStatusCode() int }
	if errors.As(err, &re) && re.HTTPStatusCode() == code {
		return true
	}
	var ae smithy.APIError
	if errors.As(err, &ae) {
		switch code {
		case http.StatusNotFound:
			return ae.ErrorCode() == "NoSuchKey" || ae.ErrorCode() == "NotFound"
		case http.StatusPreconditionFailed:
			return ae.ErrorCode() == "PreconditionFailed"
		}
	}
	return false
}

// LockInfo is who holds a remote lock, until when.
type LockInfo struct {
	Host    string    `json:"host"`
	PID     int       `json:"pid"`
	Run     string    `json:"run,omitempty"`
	Command string    `json:"command"`
	CIJob   string    `json:"ci_job,omitempty"`
	Started time.Time `json:"started"`
	// Until is when the lease ends unless its holder renews it.
	Until time.Time `json:"lease_until"`
}

func (li LockInfo) String() string {
	s := fmt.Sprintf("%s pid %d since %s (%s)", li.Host, li.PID, li.Started.Format(time.RFC3339), li.Command)
	if li.CIJob != "" {
		s += " in " + li.CIJob
	}
	return s
}

// LockedError is a lock held by someone whose lease runs.
type LockedError struct {
	Where string
	Info  LockInfo
}

func (e *LockedError) Error() string {
	return fmt.Sprintf("another vmswap is applying this plan: %s holds %s, its lease running until %s; once that passes the next apply takes the lock over, or pass --break-lock if that run is gone for sure",
		e.Info, e.Where, e.Info.Until.Format(time.RFC3339))
}

// Lock is a held remote lock, renewed until released.
type Lock struct {
	s     *S3
	mu    sync.Mutex
	etag  string
	info  LockInfo
	lease time.Duration
	stop  chan struct{}
	done  chan struct{}
	// Lost is closed if a renewal finds the lock taken by someone else.
	Lost chan struct{}
}

const lockName = "lock.json"

// CIJob is the URL of the CI job this process runs in, when known.
func CIJob(getenv func(string) string) string {
	if srv, repo, id := getenv("GITHUB_SERVER_URL"), getenv("GITHUB_REPOSITORY"), getenv("GITHUB_RUN_ID"); srv != "" && repo != "" && id != "" {
		return srv + "/" + repo + "/actions/runs/" + id
	}
	return ""
}

// AcquireLock takes the plan's lock with a lease, renewed in the
// background. A lock whose lease ran out is taken over, and so is a live
// one with breakLock; note says whose it was.
func (s *S3) AcquireLock(ctx context.Context, command, run, ciJob string, lease time.Duration, breakLock bool, note func(string)) (*Lock, error) {
	host, _ := os.Hostname()
	now := time.Now().UTC()
	info := LockInfo{Host: host, PID: os.Getpid(), Run: run, Command: command, CIJob: ciJob, Started: now, Until: now.Add(lease)}
	b, _ := json.Marshal(info)
	etag, err := s.Write(ctx, lockName, b, "")
	if errors.Is(err, ErrConflict) {
		raw, held, rerr := s.Read(ctx, lockName)
		if rerr != nil {
			return nil, rerr
		}
		var old LockInfo
		if held != "" && (json.Unmarshal(raw, &old) != nil || old.Until.IsZero()) && !breakLock {
			return nil, fmt.Errorf("%w: the lock %s is unreadable (not one vmswap wrote): if no vmswap works on this plan, pass --break-lock", ErrUnavailable, s.Where(lockName))
		}
		expired := held != "" && time.Now().After(old.Until)
		if held != "" && !expired && !breakLock {
			return nil, &LockedError{Where: s.Where(lockName), Info: old}
		}
		// Replace exactly the lock that was read (or create it, if it went
		// meanwhile): a third runner taking it at the same moment loses.
		if etag, err = s.Write(ctx, lockName, b, held); err == nil && held != "" && note != nil {
			why := "its lease ran out at " + old.Until.Format(time.RFC3339)
			if !expired {
				why = "--break-lock"
			}
			note(fmt.Sprintf("took over the lock of %s (%s)", old, why))
		}
	}
	if err != nil {
		if errors.Is(err, ErrConflict) {
			return nil, fmt.Errorf("%w: another vmswap took the lock at the same moment", err)
		}
		return nil, err
	}
	l := &Lock{s: s, etag: etag, info: info, lease: lease, stop: make(chan struct{}), done: make(chan struct{}), Lost: make(chan struct{})}
	go l.renew()
	return l, nil
}

// renew extends the lease every third of it until released.
func (l *Lock) renew() {
	defer close(l.done)
	t := time.NewTicker(l.lease / 3)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
		}
		l.mu.Lock()
		l.info.Until = time.Now().UTC().Add(l.lease)
		b, _ := json.Marshal(l.info)
		ctx, cancel := context.WithTimeout(context.Background(), l.lease/3)
		etag, err := l.s.Write(ctx, lockName, b, l.etag)
		cancel()
		if err == nil {
			l.etag = etag
		}
		l.mu.Unlock()
		if errors.Is(err, ErrConflict) {
			close(l.Lost)
			return
		}
	}
}

// Release stops renewing and deletes the lock, if it is still ours.
func (l *Lock) Release() error {
	if l == nil {
		return nil
	}
	close(l.stop)
	<-l.done
	l.mu.Lock()
	defer l.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return l.s.Delete(ctx, lockName, l.etag)
}

// ReadLock returns the remote lock's holder, or nil.
func (s *S3) ReadLock(ctx context.Context) (*LockInfo, error) {
	raw, etag, err := s.Read(ctx, lockName)
	if err != nil || etag == "" {
		return nil, err
	}
	var li LockInfo
	if err := json.Unmarshal(raw, &li); err != nil {
		return nil, fmt.Errorf("state: lock %s is damaged: %w", s.Where(lockName), err)
	}
	return &li, nil
}
