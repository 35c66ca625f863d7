// Command skiff is a whole Kubernetes cluster in one binary.
//
// It is a multicall binary: the name it is called by (or its first argument)
// picks the program it runs, so that links named kubectl and the like work.
package main

import (
	"os"
	"path/filepath"

	"github.com/skiff-dev/skiff/internal/cli"
	"github.com/skiff-dev/skiff/internal/kubectl"
)

func main() {
	switch filepath.Base(os.Args[0]) {
	case "kubectl":
		os.Exit(kubectl.Main(os.Args[1:]))
	}
	os.Exit(cli.Main(os.Args))
}
