package plans

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Error is a problem at a place in a plan file.
type Error struct {
	File      string
	Line, Col int
	Msg       string
}

func (e Error) Error() string {
	if e.Line == 0 {
		return fmt.Sprintf("%s: %s", e.File, e.Msg)
	}
	return fmt.Sprintf("%s:%d:%d: %s", e.File, e.Line, e.Col, e.Msg)
}

// Errors is every problem found in a plan file, in file order.
type Errors []Error

func (es Errors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// pos is a line and column.
type pos struct{ line, col int }

// Document is a parsed plan with the position of every field, so that
// problems found later can point into the file.
type Document struct {
	File string
	Plan *Plan
	// Raw is the file as read; its hash identifies the plan in the journal.
	Raw []byte
	pos map[string]pos
}

// at returns an Error at the position of path, or of its nearest parent
// present in the file.
func (d *Document) at(path, format string, args ...any) Error {
	for p := path; ; {
		if ps, ok := d.pos[p]; ok {
			return Error{File: d.File, Line: ps.line, Col: ps.col, Msg: fmt.Sprintf(format, args...)}
		}
		i := strings.LastIndexAny(p, ".[")
		if i < 0 {
			return Error{File: d.File, Line: 1, Col: 1, Msg: fmt.Sprintf(format, args...)}
		}
		p = p[:i]
	}
}

// Load reads and parses a plan file and checks it (Parse, then Validate).
//
// Only a regular file is read, and at most MaxPlanSize bytes of it: a plan
// named /dev/zero or a FIFO is refused at once instead of read forever.
func Load(file string) (*Document, error) {
	b, err := readPlanFile(file)
	if err != nil {
		return nil, Errors{{File: file, Msg: err.Error()}}
	}
	return Check(file, b)
}

// fileKind names what a path that is not a regular file is.
func fileKind(m os.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m&os.ModeNamedPipe != 0:
		return "a named pipe"
	case m&os.ModeSocket != 0:
		return "a socket"
	case m&os.ModeCharDevice != 0:
		return "a character device"
	case m&os.ModeDevice != 0:
		return "a device"
	}
	return "type " + m.Type().String()
}

// MaxPlanSize bounds a plan file. A plan of a thousand swaps is well under it.
const MaxPlanSize = 4 << 20

func readPlanFile(file string) ([]byte, error) {
	fi, err := os.Stat(file)
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("not a regular file (%s): a plan is a YAML file", fileKind(fi.Mode()))
	}
	// /dev/stdin with a file behind it is a regular file, but the run's
	// journal and lock go beside the plan's path: into /dev.
	if abs, err := filepath.Abs(file); err == nil && (strings.HasPrefix(abs, "/proc/") || strings.HasPrefix(abs, "/dev/")) {
		return nil, fmt.Errorf("a plan read through %s cannot keep its journal beside it: name the plan file itself", abs)
	}
	if fi.Size() > MaxPlanSize {
		return nil, fmt.Errorf("%d bytes is over the %d MiB a plan may have", fi.Size(), MaxPlanSize>>20)
	}
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxPlanSize+1))
	if err != nil {
		return nil, err
	}
	if len(b) > MaxPlanSize {
		return nil, fmt.Errorf("over the %d MiB a plan may have", MaxPlanSize>>20)
	}
	return b, nil
}

// Check parses and validates a plan, reporting the problems of both at
// once. A line with a decoding problem gets no second message from the
// validation of the value it left empty.
func Check(file string, data []byte) (*Document, error) {
	doc, perr := Parse(file, data)
	if doc == nil {
		return nil, perr
	}
	var all Errors
	errors.As(perr, &all)
	seen := map[int]bool{}
	for _, e := range all {
		seen[e.Line] = true
	}
	var verrs Errors
	if errors.As(doc.Validate(), &verrs) {
		for _, e := range verrs {
			if !seen[e.Line] {
				all = append(all, e)
			}
		}
	}
	if len(all) > 0 {
		sortErrors(all)
		return nil, all
	}
	return doc, nil
}

// Parse decodes a plan, reporting every unknown field and every value of the
// wrong kind at once, each as file:line:col. Unless the YAML itself is
// broken, it returns the document decoded as far as possible along with the
// errors, so that Check can validate the rest.
func Parse(file string, data []byte) (*Document, error) {
	d := &Document{File: file, Plan: &Plan{}, Raw: data, pos: map[string]pos{}}
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, Errors{yamlSyntax(file, err)}
	}
	if root.Kind == 0 || len(root.Content) == 0 {
		return nil, Errors{{File: file, Line: 1, Col: 1, Msg: "empty plan: start with `version: 1`"}}
	}
	var errs Errors
	d.decode(root.Content[0], reflect.ValueOf(d.Plan).Elem(), "", &errs)
	if len(errs) > 0 {
		sortErrors(errs)
		return d, errs
	}
	return d, nil
}

func yamlSyntax(file string, err error) Error {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	var line int
	if strings.HasPrefix(msg, "line ") {
		rest := strings.TrimPrefix(msg, "line ")
		if i := strings.Index(rest, ":"); i > 0 {
			line, _ = strconv.Atoi(rest[:i])
			msg = strings.TrimSpace(rest[i+1:])
		}
	}
	return Error{File: file, Line: line, Col: 1, Msg: "YAML syntax: " + msg}
}

func sortErrors(es Errors) {
	sort.SliceStable(es, func(i, j int) bool {
		if es[i].Line != es[j].Line {
			return es[i].Line < es[j].Line
		}
		return es[i].Col < es[j].Col
	})
}

var unmarshalerType = reflect.TypeOf((*yaml.Unmarshaler)(nil)).Elem()

// decode fills v from n, recording positions under path and collecting
// errors instead of stopping at the first.
func (d *Document) decode(n *yaml.Node, v reflect.Value, path string, errs *Errors) {
	d.pos[path] = pos{n.Line, n.Column}
	fail := func(format string, args ...any) {
		*errs = append(*errs, Error{File: d.File, Line: n.Line, Col: n.Column, Msg: fmt.Sprintf(format, args...)})
	}
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if v.Kind() != reflect.Pointer && v.CanAddr() && v.Addr().Type().Implements(unmarshalerType) {
		if err := n.Decode(v.Addr().Interface()); err != nil {
			fail("%s", cleanYAMLError(err))
		}
		return
	}
	switch v.Kind() {
	case reflect.Pointer:
		if n.Tag == "!!null" {
			return
		}
		nv := reflect.New(v.Type().Elem())
		d.decode(n, nv.Elem(), path, errs)
		v.Set(nv)
	case reflect.Struct:
		if v.Type().String() == "time.Time" {
			if err := n.Decode(v.Addr().Interface()); err != nil {
				fail("want a time like 2026-01-02T15:04:05Z, got %q", n.Value)
			}
			return
		}
		if n.Kind != yaml.MappingNode {
			fail("%s: want a mapping (key: value lines), got %s", nameOf(path), kindName(n))
			return
		}
		fields := map[string]int{}
		var names []string
		for i := 0; i < v.NumField(); i++ {
			tag := strings.Split(v.Type().Field(i).Tag.Get("yaml"), ",")[0]
			if tag != "" && tag != "-" {
				fields[tag] = i
				names = append(names, tag)
			}
		}
		seen := map[string]bool{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			idx, ok := fields[k.Value]
			if !ok {
				*errs = append(*errs, Error{File: d.File, Line: k.Line, Col: k.Column,
					Msg: fmt.Sprintf("unknown field %q in %s%s", k.Value, nameOf(path), suggest(k.Value, names))})
				continue
			}
			if seen[k.Value] {
				*errs = append(*errs, Error{File: d.File, Line: k.Line, Col: k.Column, Msg: fmt.Sprintf("field %q given twice", k.Value)})
				continue
			}
			seen[k.Value] = true
			d.decode(val, v.Field(idx), join(path, k.Value), errs)
			if val.Kind != yaml.ScalarNode {
				// A problem with a block is shown at its key; with a value, at the value.
				d.pos[join(path, k.Value)] = pos{k.Line, k.Column}
			}
		}
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			fail("%s: want a mapping, got %s", nameOf(path), kindName(n))
			return
		}
		m := reflect.MakeMap(v.Type())
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			ev := reflect.New(v.Type().Elem()).Elem()
			d.decode(val, ev, join(path, k.Value), errs)
			if val.Kind != yaml.ScalarNode {
				d.pos[join(path, k.Value)] = pos{k.Line, k.Column}
			}
			m.SetMapIndex(reflect.ValueOf(k.Value), ev)
		}
		v.Set(m)
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			fail("%s: want a list, got %s", nameOf(path), kindName(n))
			return
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, item := range n.Content {
			d.decode(item, s.Index(i), fmt.Sprintf("%s[%d]", path, i), errs)
		}
		v.Set(s)
	default:
		if n.Kind != yaml.ScalarNode {
			fail("%s: want a single value, got %s", nameOf(path), kindName(n))
			return
		}
		if v.CanInt() && v.Type() != durationType && n.ShortTag() != "!!int" {
			// yaml.v3 would decode 2.5 into an int as 2.
			fail("%s: want a whole number, got %q", nameOf(path), n.Value)
			return
		}
		if err := n.Decode(v.Addr().Interface()); err != nil {
			want := map[reflect.Kind]string{reflect.Int: "a whole number", reflect.Bool: "true or false", reflect.String: "a string", reflect.Float64: "a number"}[v.Kind()]
			fail("%s: want %s, got %q", nameOf(path), want, n.Value)
		}
	}
}

var durationType = reflect.TypeOf(time.Duration(0))

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func nameOf(path string) string {
	if path == "" {
		return "the plan"
	}
	return path
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	}
	return fmt.Sprintf("%q", n.Value)
}

func cleanYAMLError(err error) string {
	var te *yaml.TypeError
	if errors.As(err, &te) && len(te.Errors) > 0 {
		return te.Errors[0]
	}
	return err.Error()
}

// suggest names the closest known field, or lists them.
func suggest(got string, known []string) string {
	best, bestD := "", 3
	for _, k := range known {
		if dd := editDistance(got, k); dd < bestD {
			best, bestD = k, dd
		}
	}
	if best != "" {
		return fmt.Sprintf(" (did you mean %q?)", best)
	}
	return fmt.Sprintf(" (known: %s)", strings.Join(known, ", "))
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}
