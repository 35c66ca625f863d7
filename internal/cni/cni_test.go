package cni

import (
	"os"
	"path/filepath"
	"testing"
)

// Every plugin the Makefile builds is installed, and nothing else.
func TestEveryBuiltPluginIsInstalled(t *testing.T) {
	entries, err := os.ReadDir("bin")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if _, ok := plugins[e.Name()]; !ok {
			t.Errorf("internal/cni/bin/%s is built but not embedded: add it to plugins", e.Name())
		}
	}
	if len(entries) != len(plugins) {
		t.Errorf("%d plugins built, %d embedded", len(entries), len(plugins))
	}
	dir := t.TempDir()
	if err := Install(dir); err != nil {
		t.Fatal(err)
	}
	for name, content := range plugins {
		got, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil || string(got) != *content {
			t.Errorf("%s installed wrong (%v)", name, err)
		}
	}
}
