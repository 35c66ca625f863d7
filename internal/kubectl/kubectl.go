// Package kubectl runs the upstream kubectl built into skiff.
package kubectl

import (
	"os"

	"k8s.io/component-base/cli"
	"k8s.io/component-base/logs"
	"k8s.io/kubectl/pkg/cmd"
	"k8s.io/kubectl/pkg/cmd/util"

	// Client auth plugins, as the upstream kubectl has them.
	_ "k8s.io/client-go/plugin/pkg/client/auth"
)

// DefaultKubeconfig is the admin kubeconfig the server writes; kubectl uses it
// when the user names no other.
const DefaultKubeconfig = "/etc/skiff/skiff.yaml"

// Main runs kubectl with args (without the program name) and returns its exit code.
func Main(args []string) int {
	if os.Getenv("KUBECONFIG") == "" && !namesKubeconfig(args) {
		if _, err := os.Stat(DefaultKubeconfig); err == nil {
			os.Setenv("KUBECONFIG", DefaultKubeconfig)
		}
	}
	os.Args = append([]string{"kubectl"}, args...)
	logs.GlogSetter(cmd.GetLogVerbosity(os.Args)) //nolint:errcheck
	command := cmd.NewDefaultKubectlCommand()
	if err := cli.RunNoErrOutput(command); err != nil {
		util.CheckErr(err)
	}
	return 0
}

func namesKubeconfig(args []string) bool {
	for _, a := range args {
		if a == "--" {
			return false
		}
		if a == "--kubeconfig" || len(a) > 13 && a[:13] == "--kubeconfig=" {
			return true
		}
	}
	return false
}
