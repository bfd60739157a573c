package carry_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pkg/sftp"

	"github.com/vmswap/vmswap/lab"
	"github.com/vmswap/vmswap/lab/labtest"
	"github.com/vmswap/vmswap/verify"
	"github.com/vmswap/vmswap/verify/carry"
)

// labPair is two lab droplets reached over SSH and SFTP, as a swap's old
// and new servers are.
type labPair struct {
	l        *lab.Lab
	old, new int
	src, dst *sftp.Client
}

func newLabPair(b *testing.B) *labPair {
	l := labtest.Start(b, lab.Config{})
	dir := b.TempDir()
	key, pub := labtest.NewKey(b, dir)
	ctx := context.Background()
	sd := l.Seeder()
	kid, err := sd.AddKey(ctx, "bench", pub)
	if err != nil {
		b.Fatal(err)
	}
	p := &labPair{l: l}
	var ips [2]string
	for i, name := range []string{"old", "new"} {
		id, ip, err := sd.Droplet(ctx, name, "s-1vcpu-1gb", []int{kid}, nil)
		if err != nil {
			b.Fatal(err)
		}
		ips[i] = ip
		if i == 0 {
			p.old = id
		} else {
			p.new = id
		}
	}
	clients := [2]*sftp.Client{}
	for i, ip := range ips {
		c, err := verify.DialSSH(ctx, ip, verify.SSHConfig{User: "root", KeyFile: key, Port: l.SSHPort(), KnownHosts: filepath.Join(dir, "known_hosts"), HostKeyPolicy: verify.HostKeyAcceptNew, Timeout: time.Minute})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { c.Close() })
		if clients[i], err = c.SFTP(); err != nil {
			b.Fatal(err)
		}
	}
	p.src, p.dst = clients[0], clients[1]
	return p
}

// BenchmarkCarryFinalPass: a final pass over 10,000 files of which 100
// changed since the catch-up, between two lab droplets. Target: ≤ 1 s.
func BenchmarkCarryFinalPass(b *testing.B) {
	p := newLabPair(b)
	for i := range 10000 {
		if err := p.l.WriteFile(p.old, fmt.Sprintf("srv/uploads/d%02d/f%05d.txt", i%100, i), strings.Repeat("x", 100+i%400)); err != nil {
			b.Fatal(err)
		}
	}
	opt := carry.Options{Paths: []string{"/srv/uploads"}}
	ctx := context.Background()
	res, ref, err := carry.Pass(ctx, p.src, p.dst, nil, opt)
	if err != nil || res.Copied != 10000 {
		b.Fatalf("catch-up: %+v %v", res, err)
	}
	b.Logf("catch-up of 10,000 small files: %s", res.Duration)
	time.Sleep(1100 * time.Millisecond) // the changes land in a later second
	for i := range 100 {
		p.l.WriteFile(p.old, fmt.Sprintf("srv/uploads/d%02d/f%05d.txt", i, i*100+i), "changed after the catch-up")
	}
	b.ResetTimer()
	var last carry.Result
	for range b.N {
		last, _, err = carry.Pass(ctx, p.src, p.dst, ref, opt)
		if err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if last.Copied != 100 || last.Scanned != 10101 {
		b.Fatalf("final pass: %+v", last)
	}
	b.ReportMetric(last.Duration.Seconds(), "s/final-pass")
	fmt.Printf("final pass over %d paths, %d changed: %s (target ≤ 1s)\n", last.Scanned, last.Copied, last.Duration.Round(time.Millisecond))
}

// BenchmarkCarryCatchUp200MB: a catch-up pass of 200 MB (20 files of
// 10 MB) between two lab droplets over loopback. Target: ≥ 100 MB/s.
func BenchmarkCarryCatchUp200MB(b *testing.B) {
	p := newLabPair(b)
	chunk := make([]byte, 10<<20)
	rand.Read(chunk)
	for i := range 20 {
		chunk[0] = byte(i)
		if err := p.l.WriteFile(p.old, fmt.Sprintf("srv/data/blob%02d.bin", i), string(chunk)); err != nil {
			b.Fatal(err)
		}
	}
	opt := carry.Options{Paths: []string{"/srv/data"}}
	ctx := context.Background()
	b.ResetTimer()
	var last carry.Result
	for range b.N {
		p.l.WriteFile(p.new, "srv/data/.keep", "") // a fresh destination each round
		for i := range 20 {
			p.dst.Remove(fmt.Sprintf("/srv/data/blob%02d.bin", i))
		}
		var err error
		if last, _, err = carry.Pass(ctx, p.src, p.dst, nil, opt); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if last.Bytes != 200<<20 {
		b.Fatalf("catch-up copied %d bytes, want %d", last.Bytes, 200<<20)
	}
	mbs := float64(last.Bytes) / (1 << 20) / last.Duration.Seconds()
	b.ReportMetric(mbs, "MB/s")
	fmt.Printf("catch-up of 200 MB: %s, %.0f MB/s (target ≥ 100 MB/s)\n", last.Duration.Round(time.Millisecond), mbs)
}
