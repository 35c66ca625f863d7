// Package manifests holds the YAML that skiff server applies at every start,
// embedded in the binary. Each file is one add-on, named by its file name
// without .yaml (the name --disable takes). Files are Go templates over
// Values.
package manifests

import "embed"

// FS holds the add-ons' manifests.
//
//go:embed *.yaml
var FS embed.FS

// Values fill the manifests' templates.
type Values struct {
	ClusterDNS    string
	ClusterDomain string
}
