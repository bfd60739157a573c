package runner_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vmswap/vmswap/dns/authority"
	"github.com/vmswap/vmswap/plans"
	"github.com/vmswap/vmswap/plans/runner"
	"github.com/vmswap/vmswap/verify"
	"github.com/vmswap/vmswap/verify/probe"
)

// browserWorld is the lab world with a second site, www.demo.test, whose
// name points at the load balancer and which web-1 also serves over HTTPS
// with a certificate from the lab's test CA; and a home directory whose NSS
// database trusts that CA, as a CI machine set up for the site's browser
// tests would have.
type browserWorld struct {
	*world
	caFile string
	home   string
	tmp    string // TMPDIR
}

func newBrowserWorld(t *testing.T) *browserWorld {
	t.Helper()
	for _, tool := range []string{"chromium", "certutil"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%v: run `make deps` (Debian's chromium and libnss3-tools)", err)
		}
	}
	w := newWorld(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := w.l.Seeder().Record(ctx, "demo.test", "www", w.lbIP, 30); err != nil {
		t.Fatal(err)
	}
	if err := authority.WaitServed(ctx, w.l.Endpoints().DNS, "www.demo.test", "A", []string{w.lbIP}, 20*time.Millisecond, nil); err != nil {
		t.Fatal(err)
	}
	// The point: only the pinning proxy can take a request for
	// www.demo.test anywhere, let alone to the new server.
	if addrs, err := net.DefaultResolver.LookupHost(ctx, "www.demo.test"); err == nil {
		t.Fatalf("this machine resolves www.demo.test to %v: a request that bypassed the proxy could not be told apart", addrs)
	}
	b := &browserWorld{world: w, caFile: filepath.Join(w.dir, "lab-ca.pem"), home: t.TempDir()}
	if err := os.WriteFile(b.caFile, w.l.CACertPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	nssdb := filepath.Join(b.home, ".pki", "nssdb")
	if err := os.MkdirAll(nssdb, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"-N", "--empty-password"},
		{"-A", "-t", "C,,", "-n", "vmswap lab CA", "-i", b.caFile},
	} {
		if out, err := exec.Command("certutil", append([]string{"-d", "sql:" + nssdb}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("certutil %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	// Chromium's singleton socket goes under TMPDIR, and a socket's path
	// must fit in 108 bytes: a subtest's TempDir is too long.
	tmp, err := os.MkdirTemp("", "chromium-")
	if err != nil {
		t.Fatal(err)
	}
	b.tmp = tmp
	t.Cleanup(func() { os.RemoveAll(tmp) })
	t.Cleanup(func() { b.noneLeft(t) })
	return b
}

// demoURL is the page naming the server that answered.
func (b *browserWorld) demoURL() string {
	return fmt.Sprintf("https://www.demo.test:%d/served-by", b.l.HTTPSPort())
}

// swap is the world's load balancer swap with the site's visitors probed
// at http://www.demo.test, which makes it one of the hosts the proxy pins.
func (b *browserWorld) swap(commands ...string) plans.Swap {
	sw := b.world.swap("loadbalancer")
	sw.Probe = &plans.Probe{URL: b.url("www.demo.test"), Rate: 100, Resolver: b.l.Endpoints().DNS}
	for _, c := range commands {
		sw.Verify.Commands = append(sw.Verify.Commands, plans.Command{Run: c, Timeout: plans.Duration(time.Minute)})
	}
	return sw
}

// chromium is a command that dumps the DOM of url to stdout, with
// Chromium's diagnostics going to chromium.log beside the plan. Chromium
// goes through the pinning proxy and resolves no name itself (the rule
// spares the proxy's address), so a request that bypassed the proxy
// fails. It trusts the lab's CA through the NSS database in HOME: no
// certificate error is ignored.
func (b *browserWorld) chromium(url string) string {
	return fmt.Sprintf(`chromium --headless=new --no-sandbox --disable-gpu --user-data-dir=%s --proxy-server="$HTTPS_PROXY" --host-resolver-rules="MAP * ~NOTFOUND, EXCLUDE 127.0.0.1" --dump-dom %s 2>>chromium.log`,
		shellQuote(filepath.Join(b.home, "chromium")), url)
}

// run applies doc with the commands' HOME and XDG directories in the
// test's home directory, and TMPDIR in its own, so that Chromium writes
// nowhere else.
func (b *browserWorld) run(doc *plans.Document) (*runner.Result, *runner.Journal) {
	j := runner.NewJournal(runner.JournalPath(doc.File), doc, "run"+strconv.FormatInt(time.Now().UnixNano()%1e6, 10))
	r := &runner.Runner{Doc: doc, Drivers: b.drivers(doc), Journal: j, Poll: 50 * time.Millisecond, Environ: func() []string {
		return append(os.Environ(), "HOME="+b.home, "XDG_CONFIG_HOME="+filepath.Join(b.home, ".config"), "XDG_CACHE_HOME="+filepath.Join(b.home, ".cache"),
			"XDG_DATA_HOME="+filepath.Join(b.home, ".local", "share"), "TMPDIR="+b.tmp)
	}}
	return r.Run(context.Background()), j
}

// check returns the journal's check whose name begins with prefix, failing
// the test with every check and Chromium's log if there is none.
func (b *browserWorld) check(t *testing.T, j *runner.Journal, prefix string) runner.CheckResult {
	t.Helper()
	for _, c := range j.Swaps[0].Checks {
		if strings.HasPrefix(c.Name, prefix) {
			return c
		}
	}
	b.fatal(t, j, "no check %q", prefix)
	return runner.CheckResult{}
}

func (b *browserWorld) fatal(t *testing.T, j *runner.Journal, format string, args ...any) {
	t.Helper()
	log, _ := os.ReadFile(filepath.Join(b.dir, "chromium.log"))
	t.Fatalf("%s\nchecks: %+v\nchromium.log:\n%s", fmt.Sprintf(format, args...), j.Swaps[0].Checks, log)
}

// noneLeft fails the test if a process started with the test's HOME (a
// Chromium, or one of its helpers) is still running a moment after the
// run, and kills it.
func (b *browserWorld) noneLeft(t *testing.T) {
	var left []int
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if left = procsWithEnv("HOME=" + b.home); len(left) == 0 || time.Now().After(deadline) {
			break
		}
	}
	for _, pid := range left {
		syscall.Kill(pid, syscall.SIGKILL)
	}
	if len(left) > 0 {
		t.Errorf("processes started by the verify commands outlived the run (killed): %v", left)
	}
}

// procsWithEnv returns the processes whose environment holds kv.
func procsWithEnv(kv string) []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if env, err := os.ReadFile(filepath.Join("/proc", e.Name(), "environ")); err == nil && slices.Contains(strings.Split(string(env), "\x00"), kv) {
			pids = append(pids, pid)
		}
	}
	return pids
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// TestVerifyCommandsBrowser runs the user's own tests as a site's CI would:
// a real headless Chromium and a curl suite, through the pinning proxy, to
// https://www.demo.test on the new server before it gets traffic. They see
// the new server's page; a failing one rolls the swap back with its output
// in the checks, and the site's visitors see no failed request.
func TestVerifyCommandsBrowser(t *testing.T) {
	t.Run("pass", func(t *testing.T) {
		t.Parallel()
		b := newBrowserWorld(t)
		sw := b.swap(
			b.chromium(b.demoURL())+` | grep "Served by"`,
			`curl -sS -f --max-time 10 --cacert `+shellQuote(b.caFile)+` `+b.demoURL()+` | grep "Served by"`,
		)
		// An HTTPS check on its own port after the HTTP one: each check goes
		// to the new server on its URL's port (once all went to the first's).
		sw.Verify.HTTP = append(sw.Verify.HTTP, verify.HTTPCheck{URL: b.demoURL(), Status: 200, BodyContains: "Served by"})
		sw.Verify.CAFile = b.caFile
		res, j := b.run(b.plan(sw))
		if res.ExitCode != 0 {
			b.fatal(t, j, "exit %d: %s", res.ExitCode, res.Next)
		}
		newName := j.Swaps[0].NewName
		if newName == "" || newName == "web-1" {
			t.Fatalf("new server's name %q", newName)
		}
		if c := b.check(t, j, "http "+b.demoURL()); !c.OK {
			b.fatal(t, j, "the HTTPS check: %+v", c)
		}
		for _, prefix := range []string{"command chromium", "command curl"} {
			if c := b.check(t, j, prefix); !c.OK || !strings.Contains(c.Detail, "Served by "+newName+"<") {
				b.fatal(t, j, "%s did not see %s's page: %+v", prefix, newName, c)
			}
		}
		if sr := res.Swaps[0]; sr.Failed != 0 || sr.Requests == 0 {
			t.Fatalf("probe: %d of %d failed", sr.Failed, sr.Requests)
		}
	})
	t.Run("a failing command rolls back", func(t *testing.T) {
		t.Parallel()
		b := newBrowserWorld(t)
		sw := b.swap(b.chromium(b.demoURL()) + ` >dom.html; grep "Served by" dom.html; grep -q "Add to cart" dom.html`)
		// The swap's own probe starts at the cutover, which a failed verify
		// never reaches: visitors are probed from outside, the same way.
		visitors, err := probe.Start(probe.Config{URL: sw.Probe.URL, Rate: 50, Resolver: sw.Probe.Resolver})
		if err != nil {
			t.Fatal(err)
		}
		res, j := b.run(b.plan(sw))
		sum := visitors.Stop()
		if res.ExitCode != runner.ExitRolledBack {
			b.fatal(t, j, "exit %d, want %d (rolled back): %s", res.ExitCode, runner.ExitRolledBack, res.Next)
		}
		newName := j.Swaps[0].NewName
		if c := b.check(t, j, "command chromium"); c.OK || !strings.Contains(c.Detail, "exit status 1") || !strings.Contains(c.Detail, "Served by "+newName+"<") {
			b.fatal(t, j, "the failed command's check: %+v", c)
		}
		if sr := res.Swaps[0]; sr.Failed != 0 || sum.Failed != 0 || sum.Requests == 0 {
			t.Fatalf("probe: %d failed; visitors: %d of %d failed: %v", sr.Failed, sum.Failed, sum.Requests, sum.Errors)
		}
		if got := b.lbMembers(b.lbID); !slices.Equal(got, []int{b.srcID}) {
			t.Fatalf("load balancer members after the rollback: %v, want web-1 (%d) only", got, b.srcID)
		}
	})
}
