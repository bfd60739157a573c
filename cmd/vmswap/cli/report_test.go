package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vmswap/vmswap/plans/runner"
)

// TestReportPathRefusesWhatARunNeeds: --report never overwrites the plan,
// its journal or a file that is not a report; a new path, or an earlier
// report, is fine.
func TestReportPathRefusesWhatARunNeeds(t *testing.T) {
	dir := t.TempDir()
	plan := filepath.Join(dir, "web-1.yaml")
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	write("web-1.yaml", "version: 1\n")
	write(filepath.Base(runner.JournalPath(plan)), "{}")
	old := write("old.html", "<!doctype html>\n<title>vmswap</title>")
	other := write("notes.txt", "my notes")
	link := filepath.Join(dir, "link.yaml")
	if err := os.Symlink(plan, link); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		path, want string
	}{
		{plan, "plan's own file"},
		{link, "plan's own file"},
		{runner.JournalPath(plan), "plan's own file"},
		{other, "not an HTML report"},
		{dir, "not a regular file"},
		{filepath.Join(dir, "new.html"), ""},
		{old, ""},
		{"", ""},
	} {
		err := checkReportPath(tc.path, plan)
		if tc.want == "" {
			if err != nil {
				t.Errorf("%s refused: %v", tc.path, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want %q", tc.path, err, tc.want)
		}
	}
	if b, _ := os.ReadFile(plan); string(b) != "version: 1\n" {
		t.Fatal("the plan was changed")
	}
}
