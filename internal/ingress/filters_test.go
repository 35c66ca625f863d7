package ingress

import (
	"net/http"
	"reflect"
	"testing"
)

func prefixRule(p string) *Rule { return &Rule{Path: PathMatch{Type: PathPrefix, Value: p}} }

// TestModifyPath: the table of the specification's ReplacePrefixMatch,
// and full replacement.
func TestModifyPath(t *testing.T) {
	for _, c := range []struct {
		path, prefix, replace, want string
	}{
		{"/foo/bar", "/foo", "/xyz", "/xyz/bar"},
		{"/foo/bar", "/foo", "/xyz/", "/xyz/bar"},
		{"/foo/bar", "/foo/", "/xyz", "/xyz/bar"},
		{"/foo/bar", "/foo/", "/xyz/", "/xyz/bar"},
		{"/foo", "/foo", "/xyz", "/xyz"},
		{"/foo/", "/foo", "/xyz", "/xyz/"},
		{"/foo/bar", "/foo", "", "/bar"},
		{"/foo/", "/foo", "", "/"},
		{"/foo", "/foo", "", "/"},
		{"/foo/", "/foo", "/", "/"},
		{"/foo", "/foo", "/", "/"},
		// Beyond the table.
		{"/foo/bar", "/", "/xyz", "/xyz/foo/bar"},
		{"/", "/", "/xyz", "/xyz/"},
		{"/foobar", "/foo", "/xyz", "/foobar"}, // not an element prefix: unchanged
	} {
		pm := &PathModifier{Type: ReplacePrefixMatch, Value: c.replace}
		if got := ModifyPath(pm, prefixRule(c.prefix), c.path); got != c.want {
			t.Errorf("%s with prefix %q replaced by %q: %q, want %q", c.path, c.prefix, c.replace, got, c.want)
		}
	}
	full := &PathModifier{Type: ReplaceFullPath, Value: "/new"}
	if got := ModifyPath(full, prefixRule("/foo"), "/foo/bar"); got != "/new" {
		t.Errorf("ReplaceFullPath: %q", got)
	}
	if got := ModifyPath(nil, prefixRule("/foo"), "/foo/bar"); got != "/foo/bar" {
		t.Errorf("no modifier: %q", got)
	}
}

func TestRedirectLocation(t *testing.T) {
	r := prefixRule("/old")
	for _, c := range []struct {
		name         string
		rd           Redirect
		scheme, host string
		port         int32
		path, query  string
		want         string
	}{
		{"host only", Redirect{Hostname: "example.org"}, "http", "example.com", 80, "/a", "", "http://example.org/a"},
		{"keeps the listener port", Redirect{}, "http", "example.com:8080", 8080, "/a", "q=1", "http://example.com:8080/a?q=1"},
		{"scheme sets the port", Redirect{Scheme: "https"}, "http", "example.com:8080", 8080, "/a", "", "https://example.com/a"},
		{"scheme http from https", Redirect{Scheme: "http"}, "https", "example.com", 443, "/a", "", "http://example.com/a"},
		{"explicit port", Redirect{Scheme: "https", Port: 8443}, "http", "example.com", 80, "/a", "", "https://example.com:8443/a"},
		{"explicit default port", Redirect{Port: 80}, "http", "example.com:8080", 8080, "/a", "", "http://example.com/a"},
		{"https listener port", Redirect{Hostname: "x.example.com"}, "https", "example.com", 443, "/a", "", "https://x.example.com/a"},
		{"prefix path", Redirect{Path: &PathModifier{Type: ReplacePrefixMatch, Value: "/new"}}, "http", "example.com", 80, "/old/x", "", "http://example.com/new/x"},
		{"full path", Redirect{Path: &PathModifier{Type: ReplaceFullPath, Value: "/new"}}, "http", "example.com", 80, "/old/x", "a=b", "http://example.com/new?a=b"},
		{"IPv6 host", Redirect{}, "http", "[2001:db8::1]:80", 80, "/a", "", "http://[2001:db8::1]/a"},
		{"IPv6 host with port", Redirect{Port: 81}, "http", "[2001:db8::1]", 80, "/a", "", "http://[2001:db8::1]:81/a"},
	} {
		if got := RedirectLocation(&c.rd, r, c.scheme, c.host, c.port, c.path, c.query); got != c.want {
			t.Errorf("%s: %s, want %s", c.name, got, c.want)
		}
	}
}

func TestHeaderModifier(t *testing.T) {
	h := http.Header{}
	h.Set("My-Header", "foo")
	h.Add("Multi", "a")
	h.Add("Multi", "b")
	h.Set("Gone", "x")
	h.Set("Replaced", "old")
	m := &HeaderModifier{
		Set:    []Header{{Name: "Replaced", Value: "new"}, {Name: "Fresh", Value: "1"}},
		Add:    []Header{{Name: "My-Header", Value: "bar,baz"}, {Name: "Multi", Value: "c"}, {Name: "Added", Value: "2"}},
		Remove: []string{"Gone"},
	}
	m.Apply(h)
	want := http.Header{
		"My-Header": {"foo,bar,baz"},
		"Multi":     {"a,b,c"},
		"Replaced":  {"new"},
		"Fresh":     {"1"},
		"Added":     {"2"},
	}
	if !reflect.DeepEqual(h, want) {
		t.Errorf("got %v, want %v", h, want)
	}
	var none *HeaderModifier
	none.Apply(h) // a nil modifier does nothing
}

func TestRequestHost(t *testing.T) {
	for in, want := range map[string]string{
		"Example.COM":        "example.com",
		"example.com:8080":   "example.com",
		"example.com.":       "example.com",
		"[2001:db8::1]:443":  "2001:db8::1",
		"[2001:db8::1]":      "2001:db8::1",
		"192.0.2.1:80":       "192.0.2.1",
		"":                   "",
		"a.example.com.:443": "a.example.com",
	} {
		if got := RequestHost(in); got != want {
			t.Errorf("RequestHost(%q) = %q, want %q", in, got, want)
		}
	}
}
