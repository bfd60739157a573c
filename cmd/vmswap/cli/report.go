package cli

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"

	"github.com/vmswap/vmswap/plans"
	"github.com/vmswap/vmswap/plans/runner"
	"github.com/vmswap/vmswap/report"
)

// writeReport writes the HTML report of a run.
func writeReport(path string, doc *plans.Document, j *runner.Journal, res *runner.Result, cmp ...report.Comparison) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := report.Write(f, doc.Plan, j, res, cmp...); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// checkReportPath refuses a --report path that would overwrite what a run
// needs or what is not a report: the plan, its journal, or any existing
// file that is not HTML (a typo's tab completion lands on the plan).
func checkReportPath(path, planFile string) error {
	if path == "" {
		return nil
	}
	fi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("--report %s: %v", path, err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("--report %s is not a regular file: name a new .html file", path)
	}
	for _, own := range []string{planFile, runner.JournalPath(planFile)} {
		if o, err := os.Stat(own); err == nil && os.SameFile(fi, o) {
			return fmt.Errorf("--report %s is the plan's own file %s: the report would overwrite it; name a new .html file", path, own)
		}
	}
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("--report %s: %v", path, err)
	}
	defer f.Close()
	head := make([]byte, 512)
	n, _ := io.ReadFull(f, head)
	if h := strings.ToLower(strings.TrimSpace(string(head[:n]))); n > 0 && !strings.HasPrefix(h, "<!doctype html") && !strings.HasPrefix(h, "<html") {
		return fmt.Errorf("--report %s exists and is not an HTML report: vmswap will not overwrite it; name a new .html file", path)
	}
	return nil
}
