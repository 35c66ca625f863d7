package controlplane

import (
	"slices"
	"testing"

	cliflag "k8s.io/component-base/cli/flag"
)

// A list flag the user passes replaces skiff's value instead of adding to
// it, and keeps its commas.
func TestUserFlagReplacesGenerated(t *testing.T) {
	var fss cliflag.NamedFlagSets
	fs := fss.FlagSet("admission")
	plugins := fs.StringSlice("enable-admission-plugins", nil, "")
	port := fs.Int("secure-port", 0, "")
	err := parseFlags("kube-apiserver", fss,
		[]string{flag("enable-admission-plugins", "NodeRestriction"), flag("secure-port", 6443)},
		[]string{"enable-admission-plugins=NodeRestriction,EventRateLimit"})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"NodeRestriction", "EventRateLimit"}; !slices.Equal(*plugins, want) || *port != 6443 {
		t.Errorf("plugins %v port %d, want %v and skiff's port", *plugins, *port, want)
	}
}
