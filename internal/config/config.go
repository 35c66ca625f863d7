// Package config reads skiff's config file: a YAML map whose keys are the
// command's flag names. Values given on the command line win over the file.
//
// urfave/cli's altsrc could load such a file, but it silently ignores keys that
// are no flag, and a misspelt key must be an error here.
package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/urfave/cli/v2"
	"sigs.k8s.io/yaml"
)

// DefaultPath is read when it exists and no other file is named.
const DefaultPath = "/etc/skiff/config.yaml"

// Setting is one flag's value(s) taken from the file.
type Setting struct {
	Name   string
	Values []string
}

// Flag tells Parse about one flag of the command.
type Flag struct {
	Slice bool // takes a list
	Set   bool // already given on the command line
}

// Parse turns the file's content into settings for the flags in flags (keyed
// by every name and alias). Keys that are no flag are an error; keys whose
// flag was given on the command line are skipped.
func Parse(data []byte, flags map[string]Flag) ([]Setting, error) {
	js, err := yaml.YAMLToJSON(data)
	if err != nil {
		return nil, fmt.Errorf("not valid YAML: %w", err)
	}
	var doc map[string]any
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.UseNumber()
	if err := dec.Decode(&doc); err != nil {
		return nil, errors.New("must be a map of flag names to values")
	}
	keys := make([]string, 0, len(doc))
	for k := range doc {
		keys = append(keys, k)
	}
	sort.Strings(keys)

	var out []Setting
	for _, key := range keys {
		f, ok := flags[key]
		if !ok {
			return nil, fmt.Errorf("unknown key %q: it is not a flag of this command", key)
		}
		if f.Set {
			continue
		}
		values, err := scalars(doc[key])
		if err != nil {
			return nil, fmt.Errorf("key %q: %w", key, err)
		}
		if len(values) > 1 && !f.Slice {
			return nil, fmt.Errorf("key %q takes one value, not a list", key)
		}
		out = append(out, Setting{Name: key, Values: values})
	}
	return out, nil
}

func scalars(v any) ([]string, error) {
	switch v := v.(type) {
	case nil:
		return nil, errors.New("has no value")
	case []any:
		var out []string
		for _, e := range v {
			s, err := scalars(e)
			if err != nil {
				return nil, err
			}
			out = append(out, s...)
		}
		return out, nil
	case map[string]any:
		return nil, errors.New("must be a value or a list of values, not a map")
	case string:
		return []string{v}, nil
	default:
		return []string{fmt.Sprint(v)}, nil
	}
}

// Values is a repeatable flag's values, each taken whole (no splitting at
// commas).
type Values []string

// Set implements flag.Value: each use adds one value.
func (v *Values) Set(s string) error {
	*v = append(*v, s)
	return nil
}

func (v *Values) String() string {
	if v == nil {
		return ""
	}
	return strings.Join(*v, " ")
}

// Apply reads the config file named by the command's --config flag, or
// DefaultPath when that flag is not given and the file exists, and sets the
// flags it names that the command line left unset.
func Apply(c *cli.Context) error {
	path := c.String("config")
	if path == "" {
		return nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) && !c.IsSet("config") {
			return nil
		}
		return fmt.Errorf("config file %s: %w", path, err)
	}
	flags := map[string]Flag{}
	for _, f := range c.Command.Flags {
		_, slice := f.(*cli.StringSliceFlag)
		if g, ok := f.(*cli.GenericFlag); ok {
			_, slice = g.Value.(*Values)
		}
		set := false
		for _, n := range f.Names() {
			set = set || c.IsSet(n)
		}
		for _, n := range f.Names() {
			if n != "config" {
				flags[n] = Flag{Slice: slice, Set: set}
			}
		}
	}
	settings, err := Parse(data, flags)
	if err != nil {
		return fmt.Errorf("config file %s: %w (see %s --help)", path, err, strings.TrimSpace(c.Command.HelpName))
	}
	for _, s := range settings {
		for _, v := range s.Values {
			if err := c.Set(s.Name, v); err != nil {
				return fmt.Errorf("config file %s: key %q: %w", path, s.Name, err)
			}
		}
	}
	return nil
}
