package config

import (
	"reflect"
	"strings"
	"testing"
)

var flags = map[string]Flag{
	"data-dir":           {},
	"d":                  {},
	"tls-san":            {Slice: true},
	"https-listen-port":  {},
	"disable-agent":      {},
	"write-kubeconfig":   {Set: true},
	"kube-apiserver-arg": {Slice: true},
}

func TestParseMergesFileUnderCommandLine(t *testing.T) {
	got, err := Parse([]byte(`
data-dir: /srv/skiff
tls-san: [a.example, 10.0.0.1]
https-listen-port: 7443
disable-agent: true
write-kubeconfig: /from/file
kube-apiserver-arg: audit-log-maxage=3
`), flags)
	if err != nil {
		t.Fatal(err)
	}
	want := []Setting{
		{Name: "data-dir", Values: []string{"/srv/skiff"}},
		{Name: "disable-agent", Values: []string{"true"}},
		{Name: "https-listen-port", Values: []string{"7443"}},
		{Name: "kube-apiserver-arg", Values: []string{"audit-log-maxage=3"}},
		{Name: "tls-san", Values: []string{"a.example", "10.0.0.1"}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v\nwant %+v", got, want)
	}
}

func TestParseRejects(t *testing.T) {
	for _, tc := range []struct{ doc, want string }{
		{"data-dri: /x", `unknown key "data-dri"`},
		{"data-dir: [a, b]", `takes one value`},
		{"data-dir:", `has no value`},
		{"tls-san: {a: b}", `not a map`},
		{"- a\n- b", `must be a map`},
		{"a: [", `not valid YAML`},
	} {
		_, err := Parse([]byte(tc.doc), flags)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: got %v, want an error with %q", tc.doc, err, tc.want)
		}
	}
}

func TestParseEmptyFile(t *testing.T) {
	got, err := Parse([]byte("# nothing yet\n"), flags)
	if err != nil || len(got) != 0 {
		t.Fatalf("got %v, %v", got, err)
	}
}
