// Command skiff is a whole Kubernetes cluster in one binary.
//
// It is a multicall binary: the name it is called by (or its first argument)
// picks the program it runs, so that links named kubectl and the like work.
package main

import (
	"os"
	"path/filepath"

	"github.com/skiff-dev/skiff/internal/cli"
	"github.com/skiff-dev/skiff/internal/containerd"
	"github.com/skiff-dev/skiff/internal/crictl"
	"github.com/skiff-dev/skiff/internal/kubectl"

	// Initialised before any kubectl package, wherever it is imported: see
	// its doc.
	_ "github.com/skiff-dev/skiff/internal/kubectl/translations"
)

// programs are the names the binary answers to besides skiff.
var programs = map[string]bool{"containerd": true, "kubectl": true, "ctr": true, "crictl": true}

func main() {
	name := filepath.Base(os.Args[0])
	// Called by any other name (skiff, or a release file such as
	// skiff-linux-arm64 run as it is), the first argument picks: the node
	// starts its containerd as `<this binary> containerd`.
	if !programs[name] && len(os.Args) > 1 && programs[os.Args[1]] {
		name, os.Args = os.Args[1], os.Args[1:]
	}
	switch name {
	case "kubectl":
		os.Exit(kubectl.Main(os.Args[1:]))
	case "containerd":
		os.Exit(containerd.Main(os.Args))
	case "ctr":
		os.Exit(containerd.CtrMain(os.Args))
	case "crictl":
		os.Exit(crictl.Main(os.Args))
	}
	os.Exit(cli.Main(os.Args))
}
