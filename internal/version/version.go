// Package version holds the skiff release and the Kubernetes release it embeds.
// Both are set at link time by the Makefile.
package version

import (
	"fmt"

	k8sversion "k8s.io/component-base/version"
)

var (
	// Version is the skiff release, e.g. v0.1.0.
	Version = "dev"
	// Commit is the git commit skiff was built from.
	Commit = "unknown"
)

// String is what `skiff --version` prints.
func String() string {
	return fmt.Sprintf("skiff version %s (%s)\nkubernetes %s", Version, Commit, k8sversion.Get().GitVersion)
}
