package main_test

import (
	"bufio"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vmswap/vmswap/plans/runner"
)

// TestPreviewAtTheGate: a plan with gates: [before_cutover] stops after
// verify (exit 4); `vmswap preview` then serves the site's hostname from
// the new server through its proxy while the load balancer still sends
// every user to the old one, refuses any other destination, and stops on
// Ctrl-C; apply --continue moves the traffic; after a rollback (the new
// server powered off) there is nothing to preview.
func TestPreviewAtTheGate(t *testing.T) {
	t.Parallel()
	w := newCutoverWorld(t, "", "loadbalancer")
	must(t, vmswap(t, w.env, "preview", w.planFile), runner.ExitBadInput, "has not been applied")
	w.plan.Swaps[0].Gates = []string{"before_cutover"}
	w.writePlan(t, w.planFile, w.plan)
	must(t, vmswap(t, w.env, "apply", "--poll", "50ms", w.planFile), runner.ExitDecision, "gate before_cutover")
	j, err := runner.LoadJournal(runner.JournalPath(w.planFile))
	if err != nil {
		t.Fatal(err)
	}
	st := j.Swaps[0]

	cmd := exec.Command(bin, "preview", "--for", "2m", w.planFile)
	cmd.Env = append(os.Environ(), w.env...)
	stdout, _ := cmd.StdoutPipe()
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill() })
	var printed strings.Builder
	proxy := ""
	sc := bufio.NewScanner(stdout)
	for proxy == "" && sc.Scan() {
		printed.WriteString(sc.Text() + "\n")
		if p, ok := strings.CutPrefix(sc.Text(), "Proxy: "); ok {
			proxy = p
		}
	}
	if proxy == "" {
		t.Fatalf("preview printed no proxy: %s %s", printed.String(), stderr.String())
	}
	rest := make(chan string)
	go func() { // the scanner may hold what follows the proxy line
		var b strings.Builder
		for sc.Scan() {
			b.WriteString(sc.Text() + "\n")
		}
		rest <- b.String()
	}()
	pu, _ := url.Parse(proxy)
	c := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(pu)}, Timeout: 5 * time.Second}
	site := w.plan.Swaps[0].Verify.HTTP[0].URL
	resp, err := c.Get(site)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := resp.Header.Get("X-Served-By"); resp.StatusCode != 200 || got != st.NewName {
		t.Fatalf("through the preview proxy %s answered %s, served by %q; want the new server %s", site, resp.Status, got, st.NewName)
	}
	if lb := w.l.Inventory().LBs[0].Droplets; len(lb) != 1 || lb[0] != w.srcID {
		t.Fatalf("during the preview the load balancer sends to %v", lb)
	}
	if resp, err := c.Get("http://example.com/"); err != nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("another destination through the preview proxy: %v %v", resp, err)
	}
	cmd.Process.Signal(syscall.SIGINT)
	printed.WriteString(<-rest)
	if code := exitCode(cmd.Wait()); code != 0 || !strings.Contains(stderr.String(), "preview stopped") {
		t.Fatalf("preview after Ctrl-C: exit %d: %s", code, stderr.String())
	}
	for _, want := range []string{"chromium --user-data-dir", "--proxy-server=" + proxy, "curl --proxy " + proxy, "apply " + w.planFile + " --continue"} {
		if !strings.Contains(printed.String(), want) {
			t.Fatalf("preview's instructions lack %q:\n%s", want, printed.String())
		}
	}

	must(t, vmswap(t, w.env, "apply", "--poll", "50ms", "--continue", w.planFile), 0, "vmswap: succeeded")
	// A preview left running stops once the run is rolled back: the new
	// server's address may be anyone's after that.
	running := exec.Command(bin, "preview", "--for", "2m", w.planFile)
	running.Env = append(os.Environ(), w.env...)
	var runOut strings.Builder
	running.Stdout, running.Stderr = &runOut, &runOut
	if err := running.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { running.Process.Kill() })
	time.Sleep(time.Second)
	must(t, vmswap(t, w.env, "rollback", "--yes", "--poll", "50ms", w.planFile), 0, "vmswap: reverted")
	done := make(chan int)
	go func() { done <- exitCode(running.Wait()) }()
	select {
	case code := <-done:
		if code != runner.ExitBadInput || !strings.Contains(runOut.String(), "preview stopped: ") {
			t.Fatalf("the running preview after the rollback: exit %d: %s", code, runOut.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("the running preview went on after the rollback: %s", runOut.String())
	}
	must(t, vmswap(t, w.env, "preview", "--for", "1s", w.planFile), runner.ExitBadInput, "nothing to preview")
	must(t, vmswap(t, w.env, "preview", "--for", "-5s", w.planFile), runner.ExitBadInput, "--for -5s")
}
