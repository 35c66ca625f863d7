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

func main() {
	name := filepath.Base(os.Args[0])
	if name == "skiff" && len(os.Args) > 1 {
		switch os.Args[1] {
		case "containerd", "kubectl", "ctr", "crictl":
			name, os.Args = os.Args[1], os.Args[1:]
		}
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
