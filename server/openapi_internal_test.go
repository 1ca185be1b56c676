package server

import (
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// openAPIDoc is the part of openapi.json these checks read.
type openAPIDoc struct {
	OpenAPI    string                                `json:"openapi"`
	Security   []map[string][]string                 `json:"security"`
	Paths      map[string]map[string]json.RawMessage `json:"paths"`
	Components struct {
		Schemas map[string]struct {
			Properties map[string]json.RawMessage `json:"properties"`
			Required   []string                   `json:"required"`
		} `json:"schemas"`
	} `json:"components"`
}

func loadOpenAPI(t *testing.T) openAPIDoc {
	t.Helper()
	var doc openAPIDoc
	if err := json.Unmarshal(openAPI, &doc); err != nil {
		t.Fatalf("openapi.json: %v", err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.1") {
		t.Fatalf("openapi %q, want 3.1", doc.OpenAPI)
	}
	return doc
}

// TestOpenAPIHasEveryRouteAndNoOther: the document's operations are the
// route table's, and the public routes are the ones it marks as needing no
// key.
func TestOpenAPIHasEveryRouteAndNoOther(t *testing.T) {
	doc := loadOpenAPI(t)
	if len(doc.Security) != 1 || doc.Security[0]["bearer"] == nil {
		t.Fatalf("document-wide security is %v, want bearer", doc.Security)
	}
	documented := map[string]bool{} // "GET /v1/runs" → public
	for path, item := range doc.Paths {
		for method, op := range item {
			if method == "parameters" {
				continue
			}
			var o struct {
				Security *[]map[string][]string `json:"security"`
			}
			if err := json.Unmarshal(op, &o); err != nil {
				t.Fatal(err)
			}
			documented[strings.ToUpper(method)+" "+path] = o.Security != nil && len(*o.Security) == 0
		}
	}
	s := &Server{}
	served := map[string]bool{}
	for _, r := range s.routeTable() {
		served[r.pattern] = r.public != nil
	}
	for p, public := range served {
		doc, ok := documented[p]
		switch {
		case !ok:
			t.Errorf("route %s is not in openapi.json", p)
		case doc != public:
			t.Errorf("route %s: public %v, but openapi.json says %v", p, public, doc)
		}
	}
	for p := range documented {
		if _, ok := served[p]; !ok {
			t.Errorf("openapi.json has %s, which no route serves", p)
		}
	}
}

// TestOpenAPISchemasMatchTheJSONTypes: every field the handlers read or
// write is a property of its schema, and every property is a field.
func TestOpenAPISchemasMatchTheJSONTypes(t *testing.T) {
	doc := loadOpenAPI(t)
	for schema, v := range map[string]any{
		"SubmitRequest":     submitRequest{},
		"ScheduleRequest":   scheduleRequest{},
		"RejectRequest":     rejectBody{},
		"ToolResultRequest": toolResultBody{},
		"Schedule":          ScheduleJSON{},
		"Message":           messageJSON{},
		"ToolCall":          toolCallJSON{},
		"CancelResult":      cancelResult{},
		"RunList":           runList{},
		"Problem":           problem{},
		"WebhookSecret":     webhookSecretJSON{},
	} {
		s, ok := doc.Components.Schemas[schema]
		if !ok {
			t.Errorf("openapi.json has no schema %s", schema)
			continue
		}
		var props, fields []string
		for p := range s.Properties {
			props = append(props, p)
		}
		typ := reflect.TypeOf(v)
		for i := range typ.NumField() {
			name, _, _ := strings.Cut(typ.Field(i).Tag.Get("json"), ",")
			fields = append(fields, name)
		}
		slices.Sort(props)
		slices.Sort(fields)
		if !slices.Equal(props, fields) {
			t.Errorf("schema %s has properties %v; %s has fields %v", schema, props, typ.Name(), fields)
		}
	}
}
