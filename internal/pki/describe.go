package pki

import (
	"errors"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	certutil "k8s.io/client-go/util/cert"
)

// Described is one certificate file, for `skiff certificate check`.
type Described struct {
	File     string
	Subject  string
	Issuer   string
	IsCA     bool
	NotAfter time.Time
}

// Describe lists the certificates in the *.crt files of dirs, by file name;
// a dir that does not exist has none.
func Describe(dirs ...string) ([]Described, error) {
	var out []Described
	for _, dir := range dirs {
		files, err := filepath.Glob(filepath.Join(dir, "*.crt"))
		if err != nil {
			return nil, err
		}
		for _, f := range files {
			data, err := os.ReadFile(f)
			if errors.Is(err, os.ErrNotExist) {
				continue
			}
			if err != nil {
				return nil, err
			}
			certs, err := certutil.ParseCertsPEM(data)
			if err != nil {
				return nil, errors.New(f + ": " + err.Error())
			}
			c := certs[0]
			out = append(out, Described{File: f, Subject: name(c.Subject.CommonName, c.Subject.Organization), Issuer: c.Issuer.CommonName, IsCA: c.IsCA, NotAfter: c.NotAfter})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].File < out[j].File })
	return out, nil
}

func name(cn string, orgs []string) string {
	if len(orgs) == 0 {
		return cn
	}
	return cn + " (" + strings.Join(orgs, ",") + ")"
}
