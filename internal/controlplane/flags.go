package controlplane

import (
	"fmt"
	"strings"

	"github.com/spf13/pflag"
	cliflag "k8s.io/component-base/cli/flag"
	apiserveroptions "k8s.io/kubernetes/cmd/kube-apiserver/app/options"
	cmapp "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	cmoptions "k8s.io/kubernetes/cmd/kube-controller-manager/app/options"
	scheduleroptions "k8s.io/kubernetes/cmd/kube-scheduler/app/options"
)

// parseFlags parses the flags skiff generates for an upstream component, then
// the user's pass-through arguments (name=value, as given to
// --kube-<component>-arg), into the component's own flag sets. The user's
// value wins for a flag given twice.
func parseFlags(component string, fss cliflag.NamedFlagSets, generated, user []string) error {
	fs := pflag.NewFlagSet(component, pflag.ContinueOnError)
	fs.SetOutput(discard{})
	for _, name := range fss.Order {
		fs.AddFlagSet(fss.FlagSets[name])
	}
	// A flag the user gives replaces skiff's value of it: a list flag
	// would otherwise add to it.
	given := map[string]bool{}
	for _, a := range UserArgs(user) {
		name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
		given[name] = true
	}
	var kept []string
	for _, a := range generated {
		name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !given[name] {
			kept = append(kept, a)
		}
	}
	generated = kept
	if err := fs.Parse(generated); err != nil {
		return fmt.Errorf("%s: %w", component, err)
	}
	if err := fs.Parse(UserArgs(user)); err != nil {
		return fmt.Errorf("--%s-arg: %w (see `%s --help` upstream for its flags)", component, err, component)
	}
	return nil
}

// UserArgs turns pass-through values ("name=value", "--name=value", "name")
// into command-line flags.
func UserArgs(values []string) []string {
	out := make([]string, 0, len(values))
	for _, v := range values {
		out = append(out, "--"+strings.TrimLeft(v, "-"))
	}
	return out
}

// flag formats one generated flag.
func flag(name string, value any) string { return fmt.Sprintf("--%s=%v", name, value) }

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// CheckArgs parses the user's pass-through flags into fresh option sets of
// each component, so that a wrong one is reported before anything is written.
func (c *Config) CheckArgs() error {
	if err := parseFlags("kube-apiserver", apiserveroptions.NewServerRunOptions().Flags(), nil, c.APIServerArgs); err != nil {
		return err
	}
	cm, err := cmoptions.NewKubeControllerManagerOptions()
	if err != nil {
		return err
	}
	cmFlags := cm.Flags(cmapp.KnownControllers(), cmapp.ControllersDisabledByDefault(), cmapp.ControllerAliases())
	if err := parseFlags("kube-controller-manager", cmFlags, nil, c.ControllerManagerArgs); err != nil {
		return err
	}
	return parseFlags("kube-scheduler", *scheduleroptions.NewOptions().Flags, nil, c.SchedulerArgs)
}
