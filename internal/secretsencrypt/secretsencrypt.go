// Package secretsencrypt keeps the API server's encryption configuration
// for Secrets at rest (upstream's EncryptionConfiguration, which the API
// server reloads from its file by itself): made at the first start with
// --secrets-encryption, and changed key by key when keys are rotated.
package secretsencrypt

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"os"
	"strconv"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	apiserverv1 "k8s.io/apiserver/pkg/apis/apiserver/v1"
	"sigs.k8s.io/yaml"

	"github.com/skiff-dev/skiff/internal/atomicfile"
)

// Providers are the encryption providers --secrets-encryption-provider takes.
var Providers = []string{"secretbox", "aescbc"}

// Config is the file's content.
type Config struct {
	Provider string   // secretbox or aescbc
	Keys     []string // names, the primary first
	cfg      *apiserverv1.EncryptionConfiguration
}

// Prefix is how a Secret encrypted with the primary key starts in the
// datastore.
func (c *Config) Prefix() string {
	return "k8s:enc:" + c.Provider + ":v1:" + c.Keys[0] + ":"
}

// CheckProvider validates --secrets-encryption-provider.
func CheckProvider(p string) error {
	for _, ok := range Providers {
		if p == ok {
			return nil
		}
	}
	return fmt.Errorf("--secrets-encryption-provider %q: give secretbox (the default) or aescbc", p)
}

// Ensure makes the file at path, with one new key of provider, unless it
// exists; an existing file is checked and kept (its provider wins).
func Ensure(path, provider string) (*Config, error) {
	if _, err := os.Stat(path); err == nil {
		return Load(path)
	}
	key, err := newKey()
	if err != nil {
		return nil, err
	}
	ec := &apiserverv1.EncryptionConfiguration{
		TypeMeta: metav1.TypeMeta{APIVersion: "apiserver.config.k8s.io/v1", Kind: "EncryptionConfiguration"},
		Resources: []apiserverv1.ResourceConfiguration{{
			Resources: []string{"secrets"},
			// identity last: Secrets written before encryption was on are
			// still read, and rewritten encrypted by a rotation.
			Providers: []apiserverv1.ProviderConfiguration{providerWith(provider, []apiserverv1.Key{key}), {Identity: &apiserverv1.IdentityConfiguration{}}},
		}},
	}
	if err := write(path, ec); err != nil {
		return nil, err
	}
	return Load(path)
}

// Load reads and checks the file.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	ec := &apiserverv1.EncryptionConfiguration{}
	if err := yaml.UnmarshalStrict(data, ec); err != nil {
		return nil, fmt.Errorf("%s is not an encryption configuration: %v: restore it from a snapshot of this server (`skiff snapshot ls`)", path, err)
	}
	if len(ec.Resources) != 1 || len(ec.Resources[0].Providers) == 0 {
		return nil, fmt.Errorf("%s has not one resource list with its providers, as skiff writes it: restore it from a snapshot of this server (`skiff snapshot ls`)", path)
	}
	c := &Config{cfg: ec}
	p := ec.Resources[0].Providers[0]
	var keys []apiserverv1.Key
	switch {
	case p.Secretbox != nil:
		c.Provider, keys = "secretbox", p.Secretbox.Keys
	case p.AESCBC != nil:
		c.Provider, keys = "aescbc", p.AESCBC.Keys
	default:
		return nil, fmt.Errorf("%s: the first provider is neither secretbox nor aescbc", path)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("%s: the %s provider has no key", path, c.Provider)
	}
	for _, k := range keys {
		c.Keys = append(c.Keys, k.Name)
	}
	return c, nil
}

// AddKey puts a new key first (the one new writes use), keeping the others
// for what they encrypted.
func AddKey(path string) (*Config, error) {
	c, err := Load(path)
	if err != nil {
		return nil, err
	}
	key, err := newKey()
	if err != nil {
		return nil, err
	}
	keys := append([]apiserverv1.Key{key}, c.keys()...)
	c.cfg.Resources[0].Providers[0] = providerWith(c.Provider, keys)
	if err := write(path, c.cfg); err != nil {
		return nil, err
	}
	return Load(path)
}

// DropOldKeys keeps the primary key only: once every Secret is rewritten
// with it, the others decrypt nothing.
func DropOldKeys(path string) (*Config, error) {
	c, err := Load(path)
	if err != nil {
		return nil, err
	}
	c.cfg.Resources[0].Providers[0] = providerWith(c.Provider, c.keys()[:1])
	if err := write(path, c.cfg); err != nil {
		return nil, err
	}
	return Load(path)
}

func (c *Config) keys() []apiserverv1.Key {
	p := c.cfg.Resources[0].Providers[0]
	if p.Secretbox != nil {
		return p.Secretbox.Keys
	}
	return p.AESCBC.Keys
}

func providerWith(provider string, keys []apiserverv1.Key) apiserverv1.ProviderConfiguration {
	if provider == "aescbc" {
		return apiserverv1.ProviderConfiguration{AESCBC: &apiserverv1.AESConfiguration{Keys: keys}}
	}
	return apiserverv1.ProviderConfiguration{Secretbox: &apiserverv1.SecretboxConfiguration{Keys: keys}}
}

// newKey is a 32-byte key (both providers take one), named after when it
// was made.
func newKey() (apiserverv1.Key, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return apiserverv1.Key{}, err
	}
	return apiserverv1.Key{Name: "skiff-" + strconv.FormatInt(time.Now().UnixNano(), 36), Secret: base64.StdEncoding.EncodeToString(b[:])}, nil
}

func write(path string, ec *apiserverv1.EncryptionConfiguration) error {
	data, err := yaml.Marshal(ec)
	if err != nil {
		return err
	}
	return atomicfile.Write(path, data, 0o600)
}
