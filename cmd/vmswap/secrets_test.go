package main_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vmswap/vmswap/lab"
	"github.com/vmswap/vmswap/plans"
	"github.com/vmswap/vmswap/plans/runner"
	"golang.org/x/crypto/ssh"
	"gopkg.in/yaml.v3"
)

// keyBody returns the base64 lines of a PEM private key: what must never be
// echoed.
func keyBody(t *testing.T, file string) []string {
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if len(l) > 20 && !strings.HasPrefix(l, "-----") {
			out = append(out, l)
		}
	}
	if len(out) == 0 {
		t.Fatalf("no key body in %s", file)
	}
	return out
}

// searchSecrets fails the test for every secret found in the outputs or in
// the files under dir (skipping the key files themselves and the lab's own
// state, which is the fake cloud's database).
func searchSecrets(t *testing.T, dir string, outputs []string, secrets []string, skip func(string) bool) int {
	hits, files := 0, 0
	check := func(where, text string) {
		for _, s := range secrets {
			if strings.Contains(text, s) {
				t.Errorf("secret %.12s… found in %s", s, where)
				hits++
			}
		}
	}
	for i, o := range outputs {
		check(fmt.Sprintf("output %d", i), o)
	}
	filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || skip(path) {
			return nil
		}
		b, err := os.ReadFile(path)
		if err == nil {
			files++
			check(path, string(b))
		}
		return nil
	})
	t.Logf("searched %d outputs and %d files for %d secrets: %d hits", len(outputs), files, len(secrets), hits)
	return hits
}

// TestSecretsNeverWritten runs the demo and faulty swaps with a distinctive
// token and SSH key, then searches everything vmswap wrote and printed.
func TestSecretsNeverWritten(t *testing.T) {
	t.Parallel()
	// The demo: its lab's token and its SSH key.
	demoDir := t.TempDir()
	demo := vmswap(t, nil, "demo", "--dir", demoDir, "--report", filepath.Join(demoDir, "report.html"), "--output", "json")
	if demo.code != 0 {
		t.Fatalf("demo: exit %d: %s", demo.code, demo.stderr)
	}
	var ep lab.Endpoints
	stateB, err := os.ReadFile(filepath.Join(demoDir, "lab", "state.json"))
	if err != nil {
		t.Fatal(err)
	}
	var st struct{ Token string }
	json.Unmarshal(stateB, &st)
	ep.Token = st.Token
	secrets := append([]string{ep.Token}, keyBody(t, filepath.Join(demoDir, "id_ed25519"))...)
	skip := func(p string) bool {
		return strings.HasSuffix(p, "id_ed25519") || strings.Contains(p, string(filepath.Separator)+"lab"+string(filepath.Separator))
	}
	if ep.Token == "" || searchSecrets(t, demoDir, []string{demo.stdout, demo.stderr}, secrets, skip) != 0 {
		t.Fatal("the demo leaked a secret")
	}

	// Faulty runs against a lab whose token is distinctive.
	const token = "dop_v1_SECRET7c1f9a0b3e5d7f9a1c3e5d7f9a1c3e5d7f9a1c3e5d7f9a1c3e5d7f9a1c"
	var outputs []string
	dir := t.TempDir()
	for _, fault := range []lab.Fault{{Kind: lab.FaultServe500}, {Kind: lab.FaultActionErrored, Operation: "snapshot"}, {Kind: lab.FaultRateLimit, Operation: "droplets_create", Count: 2}} {
		w := newKillWorld(t, token)
		w.l.Inject(fault)
		// Add an SSH check with a distinctive key the droplets do not accept.
		doc, err := plans.Load(w.planFile)
		if err != nil {
			t.Fatal(err)
		}
		keyFile := filepath.Join(dir, "id_"+fault.Kind)
		writeKey(t, keyFile)
		secrets = append(secrets, keyBody(t, keyFile)...)
		doc.Plan.Swaps[0].Verify.SSH = &plans.SSH{User: "root", Key: keyFile, Port: w.l.SSHPort(), KnownHosts: "accept-new", KnownHostsFile: filepath.Join(dir, "known_hosts")}
		doc.Plan.Swaps[0].Divergence = &plans.Divergence{OnFound: "warn"} // it warns without SSH to the source; verify fails
		b, _ := yaml.Marshal(doc.Plan)
		planFile := filepath.Join(dir, fault.Kind+".yaml")
		os.WriteFile(planFile, b, 0o644)
		r := vmswap(t, w.env, "apply", "--poll", "50ms", "--report", filepath.Join(dir, fault.Kind+".html"), planFile)
		outputs = append(outputs, r.stdout, r.stderr)
		rj := vmswap(t, w.env, "status", "--output", "json", planFile)
		outputs = append(outputs, rj.stdout, rj.stderr)
		t.Logf("%s: exit %d", fault.Kind, r.code)
		if r.code != runner.ExitRolledBack {
			t.Fatalf("%s: exit %d: %s", fault.Kind, r.code, r.stderr)
		}
	}
	// A refused token is reported without being echoed.
	w := newKillWorld(t, "")
	bad := vmswap(t, []string{"DIGITALOCEAN_TOKEN=" + token}, "apply", w.planFile)
	outputs = append(outputs, bad.stdout, bad.stderr)
	secrets = append(secrets, token)
	if searchSecrets(t, dir, outputs, secrets, func(p string) bool { return strings.Contains(filepath.Base(p), "id_") }) != 0 {
		t.Fatal("a secret leaked")
	}
}

func writeKey(t *testing.T, file string) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := ssh.MarshalPrivateKey(priv, "")
	if err := os.WriteFile(file, pem.EncodeToMemory(blk), 0o600); err != nil {
		t.Fatal(err)
	}
}
