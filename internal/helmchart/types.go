package helmchart

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// The kinds, k3s's: manifests written for k3s apply unchanged.
var (
	ChartResource  = schema.GroupVersionResource{Group: "helm.cattle.io", Version: "v1", Resource: "helmcharts"}
	ConfigResource = schema.GroupVersionResource{Group: "helm.cattle.io", Version: "v1", Resource: "helmchartconfigs"}
)

// Spec is a HelmChart's spec. Fields k3s uses for its install Job (jobImage,
// bootstrap, helmVersion, backOffLimit, the security contexts, the Docker
// registry Secret) are accepted and have no use here: the release is made
// in-process.
type Spec struct {
	TargetNamespace       string                        `json:"targetNamespace,omitempty"`
	CreateNamespace       bool                          `json:"createNamespace,omitempty"`
	Chart                 string                        `json:"chart,omitempty"`
	Version               string                        `json:"version,omitempty"`
	Repo                  string                        `json:"repo,omitempty"`
	RepoCA                string                        `json:"repoCA,omitempty"`
	RepoCAConfigMap       *Ref                          `json:"repoCAConfigMap,omitempty"`
	Set                   map[string]intstr.IntOrString `json:"set,omitempty"`
	ValuesContent         string                        `json:"valuesContent,omitempty"`
	ValuesSecrets         []ValuesSecret                `json:"valuesSecrets,omitempty"`
	ChartContent          string                        `json:"chartContent,omitempty"`
	Timeout               *metav1.Duration              `json:"timeout,omitempty"`
	FailurePolicy         string                        `json:"failurePolicy,omitempty"`
	AuthSecret            *Ref                          `json:"authSecret,omitempty"`
	AuthPassCredentials   bool                          `json:"authPassCredentials,omitempty"`
	InsecureSkipTLSVerify bool                          `json:"insecureSkipTLSVerify,omitempty"`
	PlainHTTP             bool                          `json:"plainHTTP,omitempty"`
}

// ValuesSecret names values files held in a Secret of the HelmChart's
// namespace: its keys, in order (all of them, sorted, if none is named).
// They are read at each sync; a changed Secret takes effect at the next
// one.
type ValuesSecret struct {
	Name          string   `json:"name"`
	Keys          []string `json:"keys,omitempty"`
	IgnoreUpdates bool     `json:"ignoreUpdates,omitempty"`
}

// Ref names an object in the HelmChart's namespace.
type Ref struct {
	Name string `json:"name"`
}

// ConfigSpec is a HelmChartConfig's spec: values merged over those of the
// HelmChart of the same name and namespace, and its failure policy.
type ConfigSpec struct {
	ValuesContent string         `json:"valuesContent,omitempty"`
	ValuesSecrets []ValuesSecret `json:"valuesSecrets,omitempty"`
	FailurePolicy string         `json:"failurePolicy,omitempty"`
}

// Status is what the controller last did with a HelmChart.
type Status struct {
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// Revision and ChartVersion of the release deployed.
	Revision     int    `json:"revision,omitempty"`
	ChartVersion string `json:"chartVersion,omitempty"`
	// ReleaseNamespace is where the release is (the target namespace when
	// it was made), so that a changed target uninstalls the old one.
	ReleaseNamespace string `json:"releaseNamespace,omitempty"`
	// Digest of the chart, values and options of the last attempt: an
	// unchanged HelmChart is not upgraded again.
	Digest string `json:"digest,omitempty"`
}

// The conditions, and the Status column's reasons.
const (
	Installed = "Installed"
	Failed    = "Failed"

	ReasonDeployed = "Deployed"
	ReasonFailed   = "Failed"
)

// Failure policies: reinstall (the default) uninstalls a release whose
// install failed and tries again; abort leaves it until the HelmChart
// changes.
const (
	PolicyReinstall = "reinstall"
	PolicyAbort     = "abort"
)
