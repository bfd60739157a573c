package plans

import (
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"

	"github.com/vmswap/vmswap/verify"
)

// A field's `check` tag is its rule. Validate applies it and Schema writes
// it into the JSON Schema, so that an editor and vmswap accept the same
// plans. Rules, comma-separated:
//
//	enum=a|b      a value, when set, is one of these (@drivers: the registered provider types)
//	range=lo..hi  a number written in the file lies in [lo, hi]
//	nonempty      a list or map has at least one entry
//	one           exactly one of the struct's fields is set
//	unit=bytes    a threshold with a size unit (a bare number would be bytes)
//	unit=count    a threshold without a unit
//	label=text    how messages name the field
type rule struct {
	enum     []string
	lo, hi   *float64
	nonempty bool
	one      bool
	unit     string
	label    string
}

func ruleOf(f reflect.StructField) rule {
	var r rule
	for _, part := range strings.Split(f.Tag.Get("check"), ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
		switch k {
		case "enum":
			if v == "@drivers" {
				r.enum = DriverTypes()
			} else {
				r.enum = strings.Split(v, "|")
			}
		case "range":
			a, b, _ := strings.Cut(v, "..")
			lo, _ := strconv.ParseFloat(a, 64)
			hi, _ := strconv.ParseFloat(b, 64)
			r.lo, r.hi = &lo, &hi
		case "nonempty":
			r.nonempty = true
		case "one":
			r.one = true
		case "unit":
			r.unit = v
		case "label":
			r.label = v
		}
	}
	if r.label == "" {
		r.label = strings.Split(f.Tag.Get("yaml"), ",")[0]
	}
	return r
}

// checkRules walks v (a plan value at path) and reports every broken rule.
func (d *Document) checkRules(v reflect.Value, path string, add func(string, string, ...any)) {
	join := func(name string) string {
		if path == "" {
			return name
		}
		return path + "." + name
	}
	switch v.Kind() {
	case reflect.Pointer:
		if !v.IsNil() {
			d.checkRules(v.Elem(), path, add)
		}
	case reflect.Slice:
		for i := 0; i < v.Len(); i++ {
			d.checkRules(v.Index(i), fmt.Sprintf("%s[%d]", path, i), add)
		}
	case reflect.Map:
		keys := v.MapKeys()
		slices.SortFunc(keys, func(a, b reflect.Value) int { return strings.Compare(a.String(), b.String()) })
		for _, k := range keys {
			d.checkRules(v.MapIndex(k), join(k.String()), add)
		}
	case reflect.Struct:
		if _, scalar := scalarSchemas[v.Type().String()]; scalar {
			return
		}
		t := v.Type()
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			name := strings.Split(f.Tag.Get("yaml"), ",")[0]
			if name == "" || name == "-" || !f.IsExported() {
				continue
			}
			fv, fp := v.Field(i), join(name)
			d.checkRule(ruleOf(f), fv, fp, add)
			d.checkRules(fv, fp, add)
		}
	}
}

func (d *Document) checkRule(r rule, v reflect.Value, path string, add func(string, string, ...any)) {
	_, written := d.pos[path]
	switch {
	case r.enum != nil && v.Kind() == reflect.String && v.String() != "" && !slices.Contains(r.enum, v.String()):
		add(path, "unknown %s %q (known: %s)", r.label, v.String(), strings.Join(r.enum, ", "))
	case r.lo != nil && v.CanInt() && written && (float64(v.Int()) < *r.lo || float64(v.Int()) > *r.hi):
		add(path, "%s %d: want %g to %g", r.label, v.Int(), *r.lo, *r.hi)
	case r.nonempty && (v.Kind() == reflect.Slice || v.Kind() == reflect.Map) && v.Len() == 0:
		add(path, "no %s: add at least one", r.label)
	case r.one && v.Kind() == reflect.Struct:
		var set, all []string
		for i := 0; i < v.NumField(); i++ {
			name := strings.Split(v.Type().Field(i).Tag.Get("yaml"), ",")[0]
			all = append(all, name)
			if !v.Field(i).IsZero() {
				set = append(set, name)
			}
		}
		if len(set) == 0 {
			add(path, "missing %s: set one of %s", r.label, strings.Join(all, ", "))
		} else if len(set) > 1 {
			add(path, "%s sets %s: choose one of %s", r.label, strings.Join(set, " and "), strings.Join(all, ", "))
		}
	case r.unit != "" && v.Kind() == reflect.Pointer && !v.IsNil():
		t := v.Interface().(*verify.Threshold)
		switch {
		case r.unit == "bytes" && !t.HasUnit():
			add(path, "%s %q has no unit, so it means bytes: write one, like %q", r.label, t.Text, t.Text+"GiB")
		case r.unit == "count" && t.HasUnit():
			add(path, "%s %q: a count takes no unit, like \">= 4\"", r.label, t.Text)
		}
	}
}

// ruleSchema adds a field's rule to its schema.
func ruleSchema(r rule, s map[string]any) {
	if r.enum != nil {
		s["enum"] = r.enum
	}
	if r.lo != nil {
		s["minimum"], s["maximum"] = *r.lo, *r.hi
	}
	if r.nonempty {
		if s["type"] == "array" {
			s["minItems"] = 1
		} else {
			s["minProperties"] = 1
		}
	}
	if r.one {
		s["minProperties"], s["maxProperties"] = 1, 1
	}
	switch r.unit {
	case "bytes":
		s["pattern"] = `^\s*(>=|<=|==|=|>|<)?\s*[0-9]+(\.[0-9]+)?\s*([KMGTkmgt][iI]?[Bb]|[KMGTkmgt]|[Bb])\s*$`
	case "count":
		s["pattern"] = `^\s*(>=|<=|==|=|>|<)?\s*[0-9]+(\.[0-9]+)?\s*$`
	}
}
