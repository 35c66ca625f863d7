package helmchart

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"helm.sh/helm/v4/pkg/action"
	"helm.sh/helm/v4/pkg/chart"
	"helm.sh/helm/v4/pkg/chart/loader"
	"helm.sh/helm/v4/pkg/cli"
	"helm.sh/helm/v4/pkg/kube"
	"helm.sh/helm/v4/pkg/registry"
	"helm.sh/helm/v4/pkg/release"
	"helm.sh/helm/v4/pkg/release/common"
	releasev1 "helm.sh/helm/v4/pkg/release/v1"
	"helm.sh/helm/v4/pkg/storage/driver"
	"helm.sh/helm/v4/pkg/strvals"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"sigs.k8s.io/yaml"

	"github.com/skiff-dev/skiff/internal/atomicfile"
)

// staticPrefix is how k3s's manifests name a chart of the static charts
// dir; a bare NAME.tgz does too.
const staticPrefix = "https://%{KUBERNETES_API}%/static/charts/"

// defaultTimeout is Helm's own, for hooks and uninstalls.
const defaultTimeout = 5 * time.Minute

// desired is what a HelmChart asks for, resolved: the chart loaded, the
// values merged.
type desired struct {
	chart        chart.Charter
	chartName    string
	chartVersion string
	values       map[string]any
	timeout      time.Duration
	digest       string
}

// resolve loads the chart and merges the values of a HelmChart and its
// config.
func (c *Controller) resolve(ctx context.Context, ns string, spec Spec, config ConfigSpec) (desired, error) {
	d := desired{timeout: defaultTimeout}
	if spec.Timeout != nil && spec.Timeout.Duration > 0 {
		d.timeout = spec.Timeout.Duration
	}
	archive, err := c.fetch(ctx, ns, spec)
	if err != nil {
		return d, err
	}
	if d.chart, err = loader.LoadArchive(bytes.NewReader(archive)); err != nil {
		return d, fmt.Errorf("chart %s: %w", chartSource(spec), err)
	}
	acc, err := chart.NewAccessor(d.chart)
	if err != nil {
		return d, err
	}
	md := acc.MetadataAsMap()
	// The metadata's keys are its Go field names.
	d.chartName = acc.Name()
	d.chartVersion, _ = md["Version"].(string)

	// In k3s's order: the HelmChart's values, then its config's, each
	// valuesContent then valuesSecrets; spec.set last.
	d.values = map[string]any{}
	for _, src := range []struct {
		what    string
		content string
		secrets []ValuesSecret
	}{{"spec", spec.ValuesContent, spec.ValuesSecrets}, {"HelmChartConfig spec", config.ValuesContent, config.ValuesSecrets}} {
		if err := mergeYAML(d.values, src.content, src.what+".valuesContent"); err != nil {
			return d, err
		}
		for _, vs := range src.secrets {
			s, err := c.cs.CoreV1().Secrets(ns).Get(ctx, vs.Name, metav1.GetOptions{})
			if err != nil {
				return d, fmt.Errorf("%s.valuesSecrets: %w", src.what, err)
			}
			keys := vs.Keys
			if len(keys) == 0 {
				for k := range s.Data {
					keys = append(keys, k)
				}
				sort.Strings(keys)
			}
			for _, k := range keys {
				data, ok := s.Data[k]
				if !ok {
					return d, fmt.Errorf("%s.valuesSecrets: Secret %s has no key %q", src.what, vs.Name, k)
				}
				if err := mergeYAML(d.values, string(data), fmt.Sprintf("%s.valuesSecrets: Secret %s key %s", src.what, vs.Name, k)); err != nil {
					return d, err
				}
			}
		}
	}
	if err := set(d.values, spec.Set); err != nil {
		return d, err
	}

	sum := sha256.Sum256(archive)
	in, _ := json.Marshal(map[string]any{"chart": hex.EncodeToString(sum[:]), "values": d.values,
		"namespace": releaseNamespace(ns, spec), "createNamespace": spec.CreateNamespace, "timeout": d.timeout.String()})
	h := sha256.Sum256(in)
	d.digest = hex.EncodeToString(h[:16])
	return d, nil
}

// mergeYAML merges the values of a YAML document over dst.
func mergeYAML(dst map[string]any, doc, what string) error {
	over := map[string]any{}
	if err := yaml.Unmarshal([]byte(doc), &over); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	merge(dst, over)
	return nil
}

// merge copies over into dst, merging maps key by key: a HelmChartConfig's
// values over the chart's, as Helm merges values files given in order. (Helm
// keeps its own merge unexported.)
func merge(dst, over map[string]any) {
	for k, v := range over {
		if vm, ok := v.(map[string]any); ok {
			if dm, ok := dst[k].(map[string]any); ok {
				merge(dm, vm)
				continue
			}
		}
		dst[k] = v
	}
}

// set applies spec.set as k3s does: numbers and true/false as `helm --set`,
// other strings as `--set-string`.
func set(values map[string]any, sets map[string]intstr.IntOrString) error {
	keys := make([]string, 0, len(sets))
	for k := range sets {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := sets[k]
		var err error
		switch {
		case v.Type == intstr.Int:
			err = strvals.ParseInto(fmt.Sprintf("%s=%d", k, v.IntVal), values)
		case v.StrVal == "true" || v.StrVal == "false":
			err = strvals.ParseInto(k+"="+v.StrVal, values)
		default:
			err = strvals.ParseIntoString(k+"="+v.StrVal, values)
		}
		if err != nil {
			return fmt.Errorf("spec.set %q: %w", k, err)
		}
	}
	return nil
}

func chartSource(spec Spec) string {
	switch {
	case spec.ChartContent != "":
		return "from spec.chartContent"
	case spec.Repo != "":
		return fmt.Sprintf("%s from %s", spec.Chart, spec.Repo)
	}
	return spec.Chart
}

// fetch returns the chart archive: spec.chartContent, a file of the static
// charts dir, or a chart fetched from a repository (or a URL, or an OCI
// registry) by Helm's downloader.
func (c *Controller) fetch(ctx context.Context, ns string, spec Spec) ([]byte, error) {
	if spec.ChartContent != "" {
		data, err := base64.StdEncoding.DecodeString(strings.Join(strings.Fields(spec.ChartContent), ""))
		if err != nil {
			return nil, fmt.Errorf("spec.chartContent is not base64 (of a chart .tgz): %w", err)
		}
		return data, nil
	}
	if spec.Chart == "" {
		return nil, errors.New("spec.chart or spec.chartContent is needed")
	}
	if name, ok := staticName(spec); ok {
		if name == "" || filepath.Base(name) != name || strings.HasPrefix(name, ".") {
			return nil, fmt.Errorf("spec.chart %q: a static chart is a file name in %s", spec.Chart, c.cfg.StaticDir)
		}
		data, err := os.ReadFile(filepath.Join(c.cfg.StaticDir, name))
		if err != nil {
			return nil, fmt.Errorf("spec.chart %q: %w (put the chart in %s)", spec.Chart, err, c.cfg.StaticDir)
		}
		return data, nil
	}
	if filepath.IsAbs(spec.Chart) || strings.HasPrefix(spec.Chart, ".") {
		return nil, fmt.Errorf("spec.chart %q: a chart is a repository's chart name, a URL, an oci:// reference or a .tgz of %s", spec.Chart, c.cfg.StaticDir)
	}
	opts := action.ChartPathOptions{RepoURL: spec.Repo, Version: spec.Version,
		InsecureSkipTLSVerify: spec.InsecureSkipTLSVerify, PlainHTTP: spec.PlainHTTP, PassCredentialsAll: spec.AuthPassCredentials}
	if spec.AuthSecret != nil {
		s, err := c.cs.CoreV1().Secrets(ns).Get(ctx, spec.AuthSecret.Name, metav1.GetOptions{})
		if err != nil {
			return nil, fmt.Errorf("spec.authSecret: %w", err)
		}
		opts.Username, opts.Password = string(s.Data["username"]), string(s.Data["password"])
	}
	ca := spec.RepoCA
	if spec.RepoCAConfigMap != nil {
		cm, err := c.cs.CoreV1().ConfigMaps(ns).Get(ctx, spec.RepoCAConfigMap.Name, metav1.GetOptions{})
		if err != nil {
			return nil, fmt.Errorf("spec.repoCAConfigMap: %w", err)
		}
		keys := make([]string, 0, len(cm.Data))
		for k := range cm.Data {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			ca += "\n" + cm.Data[k]
		}
	}
	if strings.TrimSpace(ca) != "" {
		// Helm's getters take the CA as a file.
		opts.CaFile = filepath.Join(c.cacheDir("ca"), fmt.Sprintf("%x.pem", sha256.Sum256([]byte(ns+"/"+spec.Chart+"/"+spec.Repo))))
		if err := atomicfile.Write(opts.CaFile, []byte(ca), 0o600); err != nil {
			return nil, err
		}
	}
	settings := c.settings()
	rc, err := registry.NewClient(registry.ClientOptCredentialsFile(settings.RegistryConfig), registry.ClientOptBasicAuth(opts.Username, opts.Password))
	if err != nil {
		return nil, err
	}
	inst := action.NewInstall(&action.Configuration{})
	inst.ChartPathOptions = opts
	inst.SetRegistryClient(rc)
	path, err := inst.ChartPathOptions.LocateChart(spec.Chart, settings)
	if err != nil {
		return nil, fmt.Errorf("fetching chart %s: %w", chartSource(spec), err)
	}
	return os.ReadFile(path)
}

// staticName is the file name of a static chart, if spec names one.
func staticName(spec Spec) (string, bool) {
	if name, ok := strings.CutPrefix(spec.Chart, staticPrefix); ok {
		return name, true
	}
	if spec.Repo == "" && !strings.Contains(spec.Chart, "/") && strings.HasSuffix(spec.Chart, ".tgz") {
		return spec.Chart, true
	}
	return "", false
}

// settings are Helm's, with every file of its own under the cache dir.
func (c *Controller) settings() *cli.EnvSettings {
	s := cli.New()
	s.RepositoryCache = c.cacheDir("repository")
	s.RepositoryConfig = c.cacheDir("repositories.yaml")
	s.RegistryConfig = c.cacheDir("registry.json")
	s.ContentCache = c.cacheDir("content")
	s.PluginsDirectory = c.cacheDir("plugins")
	s.KubeConfig = c.cfg.Kubeconfig
	return s
}

// actions is Helm's configuration for releases in namespace ns, stored as
// Secrets (Helm's default, which the helm CLI reads).
func (c *Controller) actions(ns string) (*action.Configuration, error) {
	kubeconfig, cacheDir := c.cfg.Kubeconfig, c.cacheDir("kube")
	flags := genericclioptions.NewConfigFlags(false)
	flags.KubeConfig, flags.Namespace, flags.CacheDir = &kubeconfig, &ns, &cacheDir
	cfg := action.NewConfiguration(action.ConfigurationSetLogger(c.log.Handler()))
	if err := cfg.Init(flags, ns, "secret"); err != nil {
		return nil, err
	}
	return cfg, nil
}

// release installs or upgrades the release name in ns, whose history is
// given, with Helm's configuration for ns. It returns the revision made,
// and verb says which it did.
func (c *Controller) release(ctx context.Context, cfg *action.Configuration, history []release.Releaser, name, ns string, spec Spec, d desired) (int, string, error) {
	raw, last, everDeployed := latest(history)
	if last != nil {
		switch common.Status(last.Status()) {
		case common.StatusPendingInstall, common.StatusPendingUpgrade, common.StatusPendingRollback:
			// Left by a server that stopped mid-operation: this controller
			// is the release's only actor, so the operation is over.
			if r, ok := raw.(*releasev1.Release); ok {
				r.Info.Status = common.StatusFailed
				r.Info.Description = "interrupted; marked failed by skiff"
				if err := cfg.Releases.Update(r); err != nil {
					return 0, "", err
				}
			}
		}
		if !everDeployed {
			// The install never succeeded: Helm cannot upgrade it; start
			// again.
			un := action.NewUninstall(cfg)
			un.IgnoreNotFound, un.Timeout, un.WaitStrategy = true, d.timeout, kube.HookOnlyStrategy
			if _, err := un.Run(name); err != nil {
				return 0, "", fmt.Errorf("uninstalling the failed release before installing again: %w", err)
			}
			last = nil
		}
	}
	var rel release.Releaser
	var err error
	verb := "Installed"
	if last == nil {
		inst := action.NewInstall(cfg)
		inst.ReleaseName, inst.Namespace, inst.CreateNamespace = name, ns, spec.CreateNamespace
		inst.Timeout, inst.WaitStrategy = d.timeout, kube.HookOnlyStrategy
		rel, err = inst.RunWithContext(ctx, d.chart, d.values)
	} else {
		verb = "Upgraded"
		up := action.NewUpgrade(cfg)
		up.Namespace, up.Timeout, up.WaitStrategy, up.MaxHistory = ns, d.timeout, kube.HookOnlyStrategy, 10
		// The values are the HelmChart's whole: none kept from before.
		up.ResetValues = true
		rel, err = up.RunWithContext(ctx, name, d.chart, d.values)
	}
	if err != nil {
		return 0, verb, fmt.Errorf("%s %s %s: %w", strings.ToLower(strings.TrimSuffix(verb, "ed")), d.chartName, d.chartVersion, err)
	}
	acc, err := release.NewAccessor(rel)
	if err != nil {
		return 0, verb, err
	}
	return acc.Version(), verb, nil
}

// latest returns the newest revision of a history (as stored, and its
// accessor), and whether any revision was ever deployed.
func latest(history []release.Releaser) (release.Releaser, release.Accessor, bool) {
	var raw release.Releaser
	var last release.Accessor
	deployed := false
	for _, r := range history {
		acc, err := release.NewAccessor(r)
		if err != nil {
			continue
		}
		switch common.Status(acc.Status()) {
		case common.StatusDeployed, common.StatusSuperseded:
			deployed = true
		}
		if last == nil || acc.Version() > last.Version() {
			raw, last = r, acc
		}
	}
	return raw, last, deployed
}

// uninstall removes the HelmChart's release from ns (its target namespace
// if ns is empty); the namespace stays.
func (c *Controller) uninstall(u *unstructured.Unstructured, ns string, spec Spec) error {
	if ns == "" {
		ns = releaseNamespace(u.GetNamespace(), spec)
	}
	cfg, err := c.actions(ns)
	if err != nil {
		return err
	}
	un := action.NewUninstall(cfg)
	un.IgnoreNotFound, un.Timeout, un.WaitStrategy = true, defaultTimeout, kube.HookOnlyStrategy
	if spec.Timeout != nil && spec.Timeout.Duration > 0 {
		un.Timeout = spec.Timeout.Duration
	}
	_, err = un.Run(u.GetName())
	if errors.Is(err, driver.ErrReleaseNotFound) {
		return nil
	}
	return err
}
