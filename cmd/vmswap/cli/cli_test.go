package cli

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vmswap/vmswap/plans"
	"github.com/vmswap/vmswap/plans/runner"
)

// cliRun runs vmswap's Main with in-memory streams and no environment.
func cliRun(args ...string) (code int, stdout, stderr string) {
	var out, errb bytes.Buffer
	f := &Factory{IO: &IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &errb}, Getenv: func(string) string { return "" }}
	code = Main(args, f)
	return code, out.String(), errb.String()
}

// planWithRun copies an example plan into a temporary directory and writes
// a journal whose last run is in the given state. The plan's provider has
// no endpoint a test could reach: every command here must decide from the
// journal alone.
func planWithRun(t *testing.T, state runner.State) string {
	t.Helper()
	b, err := os.ReadFile("../../../examples/digitalocean-reserved-ip.yaml")
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "w.yaml")
	if err := os.WriteFile(file, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if state == "" {
		return file
	}
	doc, err := plans.Load(file)
	if err != nil {
		t.Fatal(err)
	}
	j := runner.NewJournal(runner.JournalPath(file), doc, "run123")
	j.Status = state
	if err := j.Save(); err != nil {
		t.Fatal(err)
	}
	return file
}

func TestCommandsDecideFromTheJournal(t *testing.T) {
	tests := []struct {
		desc  string
		state runner.State
		args  []string
		code  int
		want  string
	}{
		{desc: "apply of a succeeded plan does nothing", state: runner.StatusSucceeded, args: []string{"apply"}, code: 0, want: "already applied"},
		{desc: "finish with no run does nothing", args: []string{"apply", "--finish"}, code: 0, want: "no run to finish"},
		{desc: "rollback with no run", args: []string{"rollback"}, code: 2, want: "nothing to roll back"},
		{desc: "rollback of a reverted run does nothing", state: runner.StatusReverted, args: []string{"rollback"}, code: 0, want: "already rolled back"},
		{desc: "rollback of a refused run does nothing", state: runner.StatusRefused, args: []string{"rollback"}, code: 0, want: "changed nothing"},
		{desc: "cleanup refuses an interrupted run", state: runner.StatusInterrupted, args: []string{"cleanup", "--yes"}, code: 2, want: "owns what it created"},
		{desc: "status of an interrupted run says what to run", state: runner.StatusInterrupted, args: []string{"status"}, code: 0, want: "next: vmswap apply"},
		{desc: "a run marked running with no lock was killed", state: runner.StatusRunning, args: []string{"status"}, code: 0, want: ": interrupted"},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			file := planWithRun(t, tt.state)
			code, out, errs := cliRun(append(tt.args, file)...)
			if code != tt.code || !strings.Contains(out+errs, tt.want) {
				t.Fatalf("exit %d (want %d)\nstdout: %s\nstderr: %s\nwant %q", code, tt.code, out, errs, tt.want)
			}
		})
	}
}

// TestReplanRefusedOverAnUnfinishedRun: `plan -o` never writes over a plan
// whose run is unfinished, and says so before asking any API.
func TestReplanRefusedOverAnUnfinishedRun(t *testing.T) {
	file := planWithRun(t, runner.StatusInterrupted)
	before, _ := os.ReadFile(file)
	code, _, errs := cliRun("plan", "--endpoint", "http://127.0.0.1:1", "--source", "web-1", "--size", "s-2vcpu-4gb", "--reserved-ip", "192.0.2.1", "-o", file)
	after, _ := os.ReadFile(file)
	if code != runner.ExitBadInput || !strings.Contains(errs, "has an unfinished run (run123, interrupted)") || !bytes.Equal(before, after) {
		t.Fatalf("exit %d: %s", code, errs)
	}
}

// TestJSONErrorsBeforeTheRun: with --output json, an error before any run
// is an event on stdout too.
func TestJSONErrorsBeforeTheRun(t *testing.T) {
	code, out, _ := cliRun("apply", "-o", "json", filepath.Join(t.TempDir(), "none.yaml"))
	var ev struct {
		Event    string `json:"event"`
		Message  string `json:"message"`
		ExitCode int    `json:"exit_code"`
	}
	if err := json.Unmarshal([]byte(strings.TrimSpace(out)), &ev); err != nil || ev.Event != "error" || ev.ExitCode != 2 || code != 2 {
		t.Fatalf("exit %d, stdout %q (%v)", code, out, err)
	}
}

// TestProbeFlagsNeedAURL: a probe setting without --probe-url is refused,
// never dropped.
func TestProbeFlagsNeedAURL(t *testing.T) {
	code, _, errs := cliRun("plan", "--source", "web-1", "--size", "s-2vcpu-4gb", "--lb", "x", "--probe-rate", "200")
	if code != runner.ExitBadInput || !strings.Contains(errs, "--probe-rate and --probe-resolver need --probe-url") {
		t.Fatalf("exit %d: %s", code, errs)
	}
	code, _, errs = cliRun("plan", "--source", "web-1", "--size", "s-2vcpu-4gb", "--lb", "x", "--probe-url", "http://192.0.2.1/", "--probe-rate", "0")
	if code != runner.ExitBadInput || !strings.Contains(errs, "--probe-rate 0") {
		t.Fatalf("exit %d: %s", code, errs)
	}
}

// TestPasswordInAURLFlag: a password in --endpoint, --probe-url or --http
// is refused before any API is asked (the endpoint here would never
// answer), and never shown.
func TestPasswordInAURLFlag(t *testing.T) {
	code, out, errs := cliRun("plan", "--endpoint", "http://me:tok3n@127.0.0.1:1/", "--source", "web-1", "--size", "s-2vcpu-4gb", "--lb", "x",
		"--probe-url", "http://u:s3cret@www.example.com/", "--http", "https://adm:hunter2@www.example.com/health")
	if code != runner.ExitBadInput || strings.Count(errs, "no user or password in the URL") != 3 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	for _, secret := range []string{"tok3n", "s3cret", "hunter2"} {
		if strings.Contains(errs+out, secret) {
			t.Fatalf("the password %s is shown: %s", secret, errs)
		}
	}
}

// TestStatusOfARunThatNeedsAttention: a run whose rollback failed needs
// attention, and status says so on its first line; it said "interrupted",
// which sends the operator to `apply` instead of the list of what is left.
func TestStatusOfARunThatNeedsAttention(t *testing.T) {
	file := planWithRun(t, runner.StatusNeedsAttention)
	j, err := runner.LoadJournal(runner.JournalPath(file))
	if err != nil {
		t.Fatal(err)
	}
	j.Swaps[0].Status = runner.StatusNeedsAttention
	j.Swaps[0].Steps["rollback"] = &runner.StepLog{Status: "failed"}
	if err := j.Save(); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := cliRun("status", file)
	first, _, _ := strings.Cut(out, "\n")
	if code != 0 || !strings.Contains(first, ": needs_attention") {
		t.Fatalf("status: exit %d, first line %q\n%s%s", code, first, out, errOut)
	}
}
