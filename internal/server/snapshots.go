package server

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"k8s.io/klog/v2"

	"github.com/skiff-dev/skiff/internal/bootstrap"
	"github.com/skiff-dev/skiff/internal/controlplane"
	"github.com/skiff-dev/skiff/internal/datastore"
	"github.com/skiff-dev/skiff/internal/etcd"
	"github.com/skiff-dev/skiff/internal/join"
	"github.com/skiff-dev/skiff/internal/snapshot"
)

// SnapshotDir is where a data dir's snapshots go unless told otherwise.
func SnapshotDir(dataDir, flag string) string {
	if flag != "" {
		return flag
	}
	return filepath.Join(dataDir, "server", "db", "snapshots")
}

// snapshotFiles are what a snapshot carries besides the database: the
// cluster's CAs and keys, and, when the data dir has them, the server
// node's password (its Node's binding is in the database) and the
// encryption configuration its Secrets need.
func snapshotFiles(c *controlplane.Config) (always, optional []string) {
	return c.Files.Shared(), append([]string{filepath.Join(c.DataDir, "server", "node-password"), c.Files.EncryptionConfig()}, c.Files.ETCDShared()...)
}

// SnapshotFiles are the files a snapshot of the data dir carries.
func SnapshotFiles(c *controlplane.Config) []string {
	files, optional := snapshotFiles(c)
	for _, f := range optional {
		if fileExists(f) {
			files = append(files, f)
		}
	}
	return files
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// checkSnapshots validates the snapshot flags; it writes nothing.
func (p *plan) checkSnapshots() error {
	o := p.o
	embedded := datastore.Embedded(o.DatastoreEndpoint)
	if o.ClusterResetRestorePath != "" && !o.ClusterReset {
		return errors.New("--cluster-reset-restore-path restores only with --cluster-reset: give both")
	}
	if o.ClusterReset {
		if p.etcd != nil {
			return fmt.Errorf("--cluster-reset does not restore the embedded etcd yet (this data dir runs on it, %s): restore a SQLite snapshot into another --data-dir", ETCDDir(p.cfg.DataDir))
		}
		if !embedded {
			return errors.New("--cluster-reset restores the embedded datastore; with --datastore-endpoint, restore the database from its own backups")
		}
		if o.ClusterResetRestorePath == "" {
			return errors.New("--cluster-reset needs --cluster-reset-restore-path=FILE: a snapshot (`skiff snapshot ls` lists them)")
		}
		path := o.ClusterResetRestorePath
		if _, err := snapshot.Open(path, p.secret); errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("--cluster-reset-restore-path %s does not exist: give the path of a snapshot (`skiff snapshot ls` lists them)", path)
		} else if errors.Is(err, snapshot.ErrNotSnapshot) {
			return fmt.Errorf("--cluster-reset-restore-path %s is not a skiff snapshot: give a file that `skiff snapshot save` made", path)
		} else if errors.Is(err, bootstrap.ErrToken) {
			return fmt.Errorf("the snapshot %s is another cluster's (its CAs do not open with this data dir's token): give that cluster's token with --token", path)
		} else if err != nil {
			return fmt.Errorf("--cluster-reset-restore-path %s: %v", path, err)
		}
		return nil
	}
	if o.SnapshotCron == "" {
		return nil
	}
	if !embedded {
		return errors.New("--snapshot-schedule-cron snapshots the embedded datastore; with --datastore-endpoint, use the database's own backups")
	}
	if p.etcd != nil {
		return errors.New("--snapshot-schedule-cron does not snapshot the embedded etcd yet: leave it out, and back up <data-dir>/server while the server is stopped")
	}
	var err error
	// Each snapshot is sealed with the token file's secret, as `skiff
	// snapshot save` does: after `skiff token rotate`, the new one.
	source := func() (snapshot.Source, error) {
		t, err := join.ReadServerToken(tokenFile(p.cfg))
		if err != nil {
			return snapshot.Source{}, fmt.Errorf("the server token: %w (restart the server to write it again)", err)
		}
		return snapshot.Source{DB: p.store.DBPath(), Files: SnapshotFiles(p.cfg), Secret: t.Server}, nil
	}
	p.snapshots, err = snapshot.NewScheduler(source, SnapshotDir(p.cfg.DataDir, o.SnapshotDir), o.SnapshotCron, o.SnapshotRetention)
	return err
}

// restore puts the snapshot's database and files into the data dir, with
// the token they open with. The server then stops: started again without
// --cluster-reset, it runs the restored cluster.
func (p *plan) restore() error {
	path := p.o.ClusterResetRestorePath
	files, err := snapshot.Open(path, p.secret)
	if err != nil {
		return err
	}
	paths, optional := snapshotFiles(p.cfg)
	for _, f := range optional {
		if _, ok := files[filepath.Base(f)]; ok {
			paths = append(paths, f)
		}
	}
	if err := os.MkdirAll(p.cfg.Files.Dir, 0o700); err != nil {
		return err
	}
	if err := snapshot.Restore(path, p.store.DBPath()); err != nil {
		return fmt.Errorf("restoring %s: %w", path, err)
	}
	replaced, err := bootstrap.Write(paths, files)
	if err != nil {
		return err
	}
	if _, err := writeToken(p.cfg, p.secret, p.givenHash); err != nil {
		return err
	}
	klog.InfoS("the cluster is restored from the snapshot: start skiff server again without --cluster-reset", "snapshot", path,
		"dataDir", p.cfg.DataDir, "replacedFiles", replaced)
	return nil
}

// SnapshotSource is what `skiff snapshot save` copies from the data dir of
// a server (running or not): its database, and its CAs sealed with its
// token's secret.
func SnapshotSource(dataDir string) (snapshot.Source, error) {
	c := &controlplane.Config{DataDir: dataDir, Files: controlplane.Files{Dir: filepath.Join(dataDir, "server", "tls")}}
	if etcd.Exists(ETCDDir(dataDir)) {
		return snapshot.Source{}, fmt.Errorf("the server in %s runs on the embedded etcd, which `skiff snapshot save` does not snapshot yet: back up %s while the server is stopped", dataDir, filepath.Join(dataDir, "server"))
	}
	t, err := join.ReadServerToken(tokenFile(c))
	var unread *fs.PathError
	if errors.As(err, &unread) {
		return snapshot.Source{}, fmt.Errorf("%s holds no server token (%v): give the server's data dir with --data-dir", dataDir, unread.Err)
	} else if err != nil {
		return snapshot.Source{}, fmt.Errorf("%v: give the server's data dir with --data-dir", err)
	}
	return snapshot.Source{DB: filepath.Join(dataDir, "server", "db", "state.db"), Files: SnapshotFiles(c), Secret: t.Server}, nil
}
