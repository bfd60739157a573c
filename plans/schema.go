package plans

import (
	"reflect"
	"sort"
	"strings"
)

// Schema returns a JSON Schema (draft 2020-12) of the plan file, generated
// from the plan types so it cannot drift from what the parser accepts.
func Schema() map[string]any {
	s := schemaOf(reflect.TypeOf(Plan{}))
	s["$schema"] = "https://json-schema.org/draft/2020-12/schema"
	s["$id"] = "https://vmswap.dev/schema/plan-v1.json"
	s["title"] = "vmswap plan"
	props := s["properties"].(map[string]any)
	props["version"] = map[string]any{"const": Version, "description": "Plan format version; must be 1."}
	props["id"].(map[string]any)["pattern"] = planIDSyntax.String()
	s["required"] = []string{"version", "providers", "swaps"}
	return s
}

// custom types and how they are written.
var scalarSchemas = map[string]map[string]any{
	"plans.Duration": {"anyOf": []any{map[string]any{"type": "string", "pattern": `^(0|([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+)$`}, map[string]any{"const": 0}},
		"description": "A duration: 90s, 2m, 1h30m, or 0."},
	"plans.Budget":     {"type": []string{"integer", "string"}, "pattern": `^[0-9]+(\.[0-9]+)?%$`, "description": "A count of failed requests, or a percentage."},
	"verify.Threshold": {"type": "string", "pattern": `^\s*(>=|<=|==|=|>|<)?\s*[0-9.]+\s*([KMGT]i?B|[KMGT]|B)?\s*$`, "description": "A comparison: \">= 7.5GiB\", \">= 4\"."},
	"time.Time":        {"type": "string", "format": "date-time"},
	"time.Duration":    {"type": "string", "pattern": `^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`, "description": "A duration as written: 30s, 1m0s."},
	"dns.Seconds":      {"type": "integer"},
}

var requiredFields = map[string][]string{
	"plans.Provider": {"type"}, "plans.Swap": {"source", "target", "cutover"}, "plans.Source": {"provider", "server"},
	"plans.Target": {"size"}, "plans.LBCutover": {"provider", "id"}, "plans.DNSCutover": {"provider", "record"},
	"plans.IPCutover": {"provider", "ip"}, "plans.Probe": {"url"}, "plans.SSH": {"user"}, "verify.HTTPCheck": {"url"},
}

func schemaOf(t reflect.Type) map[string]any {
	if s, ok := scalarSchemas[t.String()]; ok {
		out := map[string]any{}
		for k, v := range s {
			out[k] = v
		}
		return out
	}
	switch t.Kind() {
	case reflect.Pointer:
		return schemaOf(t.Elem())
	case reflect.String:
		return map[string]any{"type": "string"}
	case reflect.Bool:
		return map[string]any{"type": "boolean"}
	case reflect.Int, reflect.Int64, reflect.Uint32:
		return map[string]any{"type": "integer"}
	case reflect.Float64:
		return map[string]any{"type": "number"}
	case reflect.Slice:
		return map[string]any{"type": "array", "items": schemaOf(t.Elem())}
	case reflect.Map:
		return map[string]any{"type": "object", "additionalProperties": schemaOf(t.Elem())}
	case reflect.Struct:
		props := map[string]any{}
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			name := strings.Split(f.Tag.Get("yaml"), ",")[0]
			if name == "" || name == "-" || !f.IsExported() {
				continue
			}
			ps := schemaOf(f.Type)
			ruleSchema(ruleOf(f), ps)
			if d := f.Tag.Get("doc"); d != "" {
				ps["description"] = d
			}
			props[name] = ps
		}
		s := map[string]any{"type": "object", "properties": props, "additionalProperties": false}
		if req := requiredFields[t.String()]; len(req) > 0 {
			r := append([]string{}, req...)
			sort.Strings(r)
			s["required"] = r
		}
		return s
	}
	return map[string]any{}
}
