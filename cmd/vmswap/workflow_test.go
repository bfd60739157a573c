package main_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/vmswap/vmswap/plans"
)

type workflow struct {
	Jobs map[string]struct {
		Steps []struct {
			ID  string `yaml:"id"`
			Run string `yaml:"run"`
		} `yaml:"steps"`
	} `yaml:"jobs"`
}

// stepRun returns the shell of a step of a workflow in examples/.
func stepRun(t *testing.T, file, job, id string) string {
	b, err := os.ReadFile(filepath.Join("../../examples/github-actions", file))
	if err != nil {
		t.Fatal(err)
	}
	var wf workflow
	if err := yaml.Unmarshal(b, &wf); err != nil {
		t.Fatal(err)
	}
	for _, s := range wf.Jobs[job].Steps {
		if s.ID == id {
			return s.Run
		}
	}
	t.Fatalf("%s has no step %s in job %s", file, id, job)
	return ""
}

// TestCapacityWorkflow runs the commands of examples/github-actions, as
// their steps write them, against the lab (the droplets) and moto's S3 (the
// state): up in the morning, down at night, each from a fresh checkout, and
// the nightly expiry. web-1 ends at its night size, still named web-1, and
// the job's summary has the swap table.
func TestCapacityWorkflow(t *testing.T) {
	t.Parallel()
	rw := newRemoteWorld(t)
	binDir := filepath.Dir(bin)
	written := map[string]string{}
	for _, dir := range []string{"up", "down"} {
		checkout := t.TempDir()
		planRel := "examples/github-actions/plans/web-1-" + dir + ".yaml"
		p := *rw.plan
		p.ID = "web-1-" + dir
		sw := p.Swaps[0]
		sw.Target.Size = map[string]string{"up": "g-2vcpu-8gb", "down": "s-1vcpu-1gb"}[dir]
		sw.Retire.KeepFor = plans.Duration(24 * time.Hour)
		p.Swaps = []plans.Swap{sw}
		p.Observed, p.Mutations = nil, nil
		os.MkdirAll(filepath.Join(checkout, filepath.Dir(planRel)), 0o755)
		rw.writePlan(t, filepath.Join(checkout, planRel), &p)
		written[planRel] = filepath.Join(checkout, planRel)
		summary := filepath.Join(t.TempDir(), "summary.md")
		for _, id := range []string{"finish", "refresh", "apply"} {
			script := strings.ReplaceAll(stepRun(t, "capacity.yml", "swap", id), "${{ steps.dir.outputs.plan }}", planRel)
			cmd := exec.Command("bash", "-eo", "pipefail", "-c", script)
			cmd.Dir = checkout
			cmd.Env = append(os.Environ(), append(rw.env, "PATH="+binDir+":"+os.Getenv("PATH"), "GITHUB_STEP_SUMMARY="+summary,
				"SPACES_ACCESS_KEY_ID=testing", "SPACES_SECRET_ACCESS_KEY=testing")...)
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("%s: step %s: %v\n%s", dir, id, err, out)
			}
			if id == "apply" && !strings.Contains(string(out), `"event":"summary","time"`) {
				t.Fatalf("%s: the apply step printed no JSON summary:\n%s", dir, out)
			}
		}
		md, _ := os.ReadFile(summary)
		if !strings.Contains(string(md), "| web-1 |") || !strings.Contains(string(md), "| succeeded |") {
			t.Fatalf("%s: step summary:\n%s", dir, md)
		}
		if _, err := os.Stat(filepath.Join(checkout, "swap.html")); err != nil {
			t.Fatalf("%s: no report for the artifact: %v", dir, err)
		}
	}
	var active []string
	for _, d := range rw.l.Inventory().Droplets {
		if d.Status == "active" {
			active = append(active, d.Name+"@"+d.Size)
		}
	}
	if fmt.Sprint(active) != "[web-1@s-1vcpu-1gb]" {
		t.Fatalf("after up and down: active %v", active)
	}
	// The nightly expiry finds nothing expired yet (keep_for: 24h).
	checkout := t.TempDir()
	os.MkdirAll(filepath.Join(checkout, "examples/github-actions/plans"), 0o755)
	for rel, from := range written {
		b, _ := os.ReadFile(from)
		os.WriteFile(filepath.Join(checkout, rel), b, 0o644)
	}
	cmd := exec.Command("bash", "-eo", "pipefail", "-c", stepRun(t, "expire.yml", "expire", "expire"))
	cmd.Dir = checkout
	cmd.Env = append(os.Environ(), append(rw.env, "PATH="+binDir+":"+os.Getenv("PATH"))...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("expire step: %v\n%s", err, out)
	}
}
