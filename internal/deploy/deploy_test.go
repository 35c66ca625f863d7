package deploy

import (
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	objs, err := parse([]byte("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n---\n# two\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: b}\n---\n"))
	if err != nil || len(objs) != 2 || objs[0].line != 1 || objs[1].line != 6 || objs[1].u.GetName() != "b" {
		t.Fatalf("parse: %v %+v", err, objs)
	}
	for _, c := range []struct{ in, want string }{
		{"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: [b\n", "line 9: not valid YAML"},
		{"apiVersion: v1\nkind: ConfigMap\n", "line 1: the ConfigMap has no metadata.name"},
		{"a: b\n  c: d\n", "line 2: not valid YAML"},
	} {
		if _, err := parse([]byte(c.in)); err == nil || !strings.HasPrefix(err.Error(), c.want) {
			t.Errorf("parse(%q): %v, want %q", c.in, err, c.want)
		}
	}
}

func TestAddonName(t *testing.T) {
	for in, want := range map[string]string{"traefik.yaml": "traefik", "apps/My_App.yml": "apps-my-app", "x.json": "x"} {
		if got := addonName(in); got != want {
			t.Errorf("addonName(%q) = %q, want %q", in, got, want)
		}
	}
}
