// Package translations keeps kubectl's message catalogs from being loaded
// where nobody reads them. kubectl's packages translate their help texts in
// package-level variables, so every process of the multicall binary (the
// server, containerd) would parse the catalog at start:
// about 4 MB and 25 ms each. With upstream's hook for it, the catalog is
// loaded only for kubectl itself, and only for a language other than
// English, whose texts are the untranslated ones.
//
// It must be initialised before any package that calls i18n.T: it imports
// nothing else of kubectl, and Go initialises packages in import path order
// once their imports are, so it goes before every k8s.io one.
package translations

import (
	"os"
	"path/filepath"
	"strings"

	"k8s.io/kubectl/pkg/util/i18n"
)

func init() {
	if err := i18n.SetLoadTranslationsFunc(load); err != nil {
		panic(err)
	}
}

func load() error {
	if !kubectl(os.Args) || english(language()) {
		return nil
	}
	return i18n.LoadTranslations("kubectl", nil)
}

// kubectl says whether the binary runs as kubectl: under that name, or as
// `skiff kubectl`.
func kubectl(args []string) bool {
	return len(args) > 0 && (filepath.Base(args[0]) == "kubectl" || len(args) > 1 && args[1] == "kubectl")
}

// language is the messages' locale, as kubectl reads it.
func language() string {
	for _, v := range []string{"LC_ALL", "LC_MESSAGES", "LANG"} {
		if l := os.Getenv(v); l != "" {
			return l
		}
	}
	return ""
}

// english says whether texts in locale l are kubectl's own.
func english(l string) bool {
	return l == "" || l == "C" || l == "POSIX" || strings.HasPrefix(l, "en_") || strings.HasPrefix(l, "C.")
}
