// Package bootstrap shares what every server of one cluster must hold alike,
// its CAs and the service-account signing key, through the datastore. Servers
// that share an external datastore thereby serve one cluster: the first one
// to start stores its files, sealed with the secret of the server token; the
// others, given the same token, take them before they make certificates of
// their own.
package bootstrap

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"

	"github.com/skiff-dev/skiff/internal/atomicfile"
	clientv3 "go.etcd.io/etcd/client/v3"
	"k8s.io/klog/v2"
)

// Key is where the sealed files live in the datastore.
const Key = "/skiff/bootstrap"

// ErrToken says that the sealed files do not open with the given secret.
var ErrToken = errors.New("the datastore holds a cluster whose server token is another one: give that cluster's token with --token (it is in <data-dir>/server/token on its first server)")

// iterations of PBKDF2-SHA256 that turn the token's secret into the key.
const iterations = 100_000

// sealed is the stored form: AES-256-GCM over the JSON of the files.
type sealed struct {
	Salt  []byte `json:"salt"`
	Nonce []byte `json:"nonce"`
	Data  []byte `json:"data"`
}

// Seal encrypts files with a key derived from secret.
func Seal(secret string, files map[string][]byte) ([]byte, error) {
	plain, err := json.Marshal(files)
	if err != nil {
		return nil, err
	}
	s := sealed{Salt: make([]byte, 16)}
	rand.Read(s.Salt)
	aead, err := newAEAD(secret, s.Salt)
	if err != nil {
		return nil, err
	}
	s.Nonce = make([]byte, aead.NonceSize())
	rand.Read(s.Nonce)
	s.Data = aead.Seal(nil, s.Nonce, plain, []byte(Key))
	return json.Marshal(s)
}

// Open decrypts what Seal made; a wrong secret gives ErrToken.
func Open(secret string, data []byte) (map[string][]byte, error) {
	var s sealed
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("the cluster's shared files in the datastore (%s) are damaged: %w", Key, err)
	}
	aead, err := newAEAD(secret, s.Salt)
	if err != nil {
		return nil, err
	}
	if len(s.Nonce) != aead.NonceSize() {
		return nil, fmt.Errorf("the cluster's shared files in the datastore (%s) are damaged: bad nonce", Key)
	}
	plain, err := aead.Open(nil, s.Nonce, s.Data, []byte(Key))
	if err != nil {
		return nil, ErrToken
	}
	files := map[string][]byte{}
	if err := json.Unmarshal(plain, &files); err != nil {
		return nil, fmt.Errorf("the cluster's shared files in the datastore (%s) are damaged: %w", Key, err)
	}
	return files, nil
}

func newAEAD(secret string, salt []byte) (cipher.AEAD, error) {
	key, err := pbkdf2.Key(sha256.New, secret, salt, iterations, 32)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// Read returns the files at paths, by base name.
func Read(paths []string) (map[string][]byte, error) {
	files := map[string][]byte{}
	for _, path := range paths {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		files[filepath.Base(path)] = data
	}
	return files, nil
}

// Write puts each of files at the one of paths with its base name, and
// returns the names of those that were there with other contents.
func Write(paths []string, files map[string][]byte) (replaced []string, err error) {
	for _, path := range paths {
		name := filepath.Base(path)
		data, ok := files[name]
		if !ok {
			return nil, fmt.Errorf("the cluster's shared files in the datastore (%s) lack %s", Key, name)
		}
		old, err := os.ReadFile(path)
		if err == nil && bytes.Equal(old, data) {
			continue
		}
		if err == nil {
			replaced = append(replaced, name)
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, err
		}
		if err := atomicfile.Write(path, data, 0o600); err != nil {
			return nil, err
		}
	}
	slices.Sort(replaced)
	return replaced, nil
}

// Sync makes the files at paths the cluster's shared ones. When the
// datastore has them, they are written there (replacing files of another
// cluster) before ensure runs; otherwise ensure creates them and they are
// stored, unless another server stored its own first, which then win.
func Sync(ctx context.Context, kv clientv3.KV, paths []string, secret string, ensure func() error) error {
	for {
		resp, err := kv.Get(ctx, Key)
		if err != nil {
			return fmt.Errorf("reading %s from the datastore: %w", Key, err)
		}
		if len(resp.Kvs) > 0 {
			files, err := Open(secret, resp.Kvs[0].Value)
			if err != nil {
				return err
			}
			// Files a newer skiff shares that the stored ones lack (a CA
			// added since): this server's own, made by ensure, are added
			// for the others, unless another server added its first.
			var stored, missing []string
			for _, p := range paths {
				if _, ok := files[filepath.Base(p)]; ok {
					stored = append(stored, p)
				} else {
					missing = append(missing, p)
				}
			}
			replaced, err := Write(stored, files)
			if err != nil {
				return err
			}
			if len(replaced) > 0 {
				klog.InfoS("replaced this server's CA files with the cluster's from the datastore", "files", replaced)
			}
			if err := ensure(); err != nil {
				return err
			}
			if len(missing) == 0 {
				return nil
			}
			added, err := Read(missing)
			if err != nil {
				return err
			}
			for name, data := range added {
				files[name] = data
			}
			won, err := store(ctx, kv, secret, files, resp.Kvs[0].ModRevision)
			if err != nil {
				return err
			}
			if won {
				klog.InfoS("added files to the cluster's shared ones in the datastore", "files", slices.Sorted(maps.Keys(added)))
				return nil
			}
			continue // another server changed them meanwhile: take its
		}
		if err := ensure(); err != nil {
			return err
		}
		files, err := Read(paths)
		if err != nil {
			return err
		}
		won, err := store(ctx, kv, secret, files, 0)
		if err != nil {
			return err
		}
		if won {
			klog.InfoS("stored the cluster's CA files in the datastore, for the servers that join it")
			return nil
		}
		// Another server stored its files meanwhile: take those.
	}
}

// Reseal seals the cluster's shared files in the datastore under newSecret
// instead of oldSecret, for a rotation of the server token. It says whether
// the datastore held any (an embedded datastore holds none).
func Reseal(ctx context.Context, kv clientv3.KV, oldSecret, newSecret string) (bool, error) {
	for {
		resp, err := kv.Get(ctx, Key)
		if err != nil {
			return false, fmt.Errorf("reading %s from the datastore: %w", Key, err)
		}
		if len(resp.Kvs) == 0 {
			return false, nil
		}
		files, err := Open(oldSecret, resp.Kvs[0].Value)
		if err != nil {
			return false, err
		}
		won, err := store(ctx, kv, newSecret, files, resp.Kvs[0].ModRevision)
		if err != nil || won {
			return won, err
		}
		// A server added files meanwhile: seal those too.
	}
}

// store seals files under secret and puts them at Key if Key is still at
// revision rev (0: not there yet). It says whether the put won.
func store(ctx context.Context, kv clientv3.KV, secret string, files map[string][]byte, rev int64) (bool, error) {
	value, err := Seal(secret, files)
	if err != nil {
		return false, err
	}
	txn := kv.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(Key), "=", rev)).
		Then(clientv3.OpPut(Key, string(value)))
	if rev != 0 {
		// The only form of update kine accepts has this Else.
		txn = txn.Else(clientv3.OpGet(Key))
	}
	resp, err := txn.Commit()
	if err != nil {
		return false, fmt.Errorf("storing %s in the datastore: %w", Key, err)
	}
	return resp.Succeeded, nil
}
