// Package snapshot saves, lists, prunes and restores snapshots of the
// embedded datastore: online, consistent copies of its SQLite database
// (`VACUUM INTO`, which reads one transaction's view while the API server
// goes on writing) that also carry what a restore needs, the cluster's CAs
// and keys sealed with its token's secret. Scheduled snapshots are a server
// component of this package.
package snapshot

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
	"k8s.io/klog/v2"
	_ "modernc.org/sqlite" // the driver the embedded datastore runs on

	"github.com/skiff-dev/skiff/internal/atomicfile"
	"github.com/skiff-dev/skiff/internal/bootstrap"
)

const (
	// format marks a skiff snapshot, in its own table.
	format = "skiff-snapshot-v1"
	table  = "skiff_snapshot"
	// DefaultRetention is how many snapshots of one name are kept.
	DefaultRetention = 5
	// ScheduledName names the scheduled snapshots; on-demand ones are
	// OnDemandName unless named.
	ScheduledName = "scheduled"
	OnDemandName  = "on-demand"
)

// ErrNotSnapshot says a file is not a skiff snapshot.
var ErrNotSnapshot = errors.New("not a skiff snapshot")

// Source is what a snapshot is made of.
type Source struct {
	// DB is the embedded datastore's database file.
	DB string
	// Files are carried sealed with Secret: the cluster's CAs and keys.
	Files  []string
	Secret string
}

// Info describes a snapshot file.
type Info struct {
	Path    string
	Size    int64
	Created time.Time
}

// Save writes a snapshot named name-<host>-<unix time> into dir and returns
// its path. Nothing is left in dir if it fails.
func Save(ctx context.Context, src Source, dir, name string) (string, error) {
	if _, err := os.Stat(src.DB); err != nil {
		return "", fmt.Errorf("no embedded datastore at %s (%v): with an external datastore, use the database's own backups", src.DB, errors.Unwrap(err))
	}
	if name == "" {
		name = OnDemandName
	}
	if strings.ContainsAny(name, "/ ") {
		return "", fmt.Errorf("snapshot name %q has a slash or a space: give a plain name", name)
	}
	files, err := bootstrap.Read(src.Files)
	if err != nil {
		return "", fmt.Errorf("reading the cluster's CAs: %w", err)
	}
	sealed, err := bootstrap.Seal(src.Secret, files)
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	host, _ := os.Hostname()
	now := time.Now()
	path := filepath.Join(dir, fmt.Sprintf("%s-%s-%d", name, host, now.Unix()))
	// Two snapshots within a second: the second takes the next second.
	for _, err := os.Stat(path); err == nil; _, err = os.Stat(path) {
		now = now.Add(time.Second)
		path = filepath.Join(dir, fmt.Sprintf("%s-%s-%d", name, host, now.Unix()))
	}
	tmp := path + ".part"
	os.Remove(tmp)
	defer os.Remove(tmp)

	db, err := sql.Open("sqlite", "file:"+src.DB+"?mode=ro&_pragma=busy_timeout(30000)")
	if err != nil {
		return "", err
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, `VACUUM INTO ?`, tmp); err != nil {
		return "", fmt.Errorf("copying %s: %w", src.DB, err)
	}
	out, err := sql.Open("sqlite", "file:"+tmp+"?_pragma=synchronous(FULL)")
	if err != nil {
		return "", err
	}
	_, err = out.ExecContext(ctx, `CREATE TABLE `+table+` (key TEXT PRIMARY KEY, value BLOB);
		INSERT INTO `+table+` (key, value) VALUES ('format', ?), ('created', ?), ('bootstrap', ?)`,
		format, now.UTC().Format(time.RFC3339), sealed)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", fmt.Errorf("writing the snapshot: %w", err)
	}
	if err := atomicfile.Sync(tmp); err != nil {
		return "", err
	}
	if err := os.Rename(tmp, path); err != nil {
		return "", err
	}
	return path, atomicfile.SyncDir(dir)
}

// List returns the snapshots in dir, newest first.
func List(dir string) ([]Info, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []Info
	for _, e := range entries {
		created, ok := createdAt(e.Name())
		if !ok || !e.Type().IsRegular() {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			continue
		}
		out = append(out, Info{Path: filepath.Join(dir, e.Name()), Size: fi.Size(), Created: created})
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Created.Equal(out[j].Created) {
			return out[i].Created.After(out[j].Created)
		}
		return out[i].Path > out[j].Path
	})
	return out, nil
}

// createdAt reads the time at the end of NAME-HOST-UNIXTIME.
func createdAt(file string) (time.Time, bool) {
	i := strings.LastIndexByte(file, '-')
	if i <= 0 || strings.HasSuffix(file, ".part") {
		return time.Time{}, false
	}
	sec, err := strconv.ParseInt(file[i+1:], 10, 64)
	if err != nil {
		return time.Time{}, false
	}
	return time.Unix(sec, 0), true
}

// Prune deletes all but the newest retention snapshots in dir whose file
// names start with name (k3s's rule), and returns the paths it deleted.
func Prune(dir, name string, retention int) ([]string, error) {
	if retention < 1 {
		return nil, fmt.Errorf("a retention of %d would delete every snapshot: keep at least 1", retention)
	}
	all, err := List(dir)
	if err != nil {
		return nil, err
	}
	var deleted []string
	kept := 0
	for _, s := range all {
		if !strings.HasPrefix(filepath.Base(s.Path), name+"-") {
			continue
		}
		if kept < retention {
			kept++
			continue
		}
		if err := os.Remove(s.Path); err != nil {
			return deleted, err
		}
		deleted = append(deleted, s.Path)
	}
	return deleted, nil
}

// Open checks that path is a snapshot and returns the files it carries,
// opened with secret (bootstrap.ErrToken if it is another cluster's).
func Open(path, secret string) (map[string][]byte, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, err
	}
	db, err := sql.Open("sqlite", "file:"+path+"?mode=ro")
	if err != nil {
		return nil, err
	}
	defer db.Close()
	var f string
	var sealed []byte
	if err := db.QueryRow(`SELECT value FROM ` + table + ` WHERE key = 'format'`).Scan(&f); err != nil || f != format {
		return nil, ErrNotSnapshot
	}
	if err := db.QueryRow(`SELECT value FROM ` + table + ` WHERE key = 'bootstrap'`).Scan(&sealed); err != nil {
		return nil, ErrNotSnapshot
	}
	return bootstrap.Open(secret, sealed)
}

// Restore makes the snapshot at path the database at db: the current one,
// if any, is kept beside it as <db>.before-restore-<unix time>.
func Restore(path, db string) error {
	tmp := db + ".restore"
	os.Remove(tmp)
	defer os.Remove(tmp)
	if err := os.MkdirAll(filepath.Dir(db), 0o700); err != nil {
		return err
	}
	in, err := sql.Open("sqlite", "file:"+path+"?mode=ro")
	if err != nil {
		return err
	}
	_, err = in.Exec(`VACUUM INTO ?`, tmp)
	in.Close()
	if err != nil {
		return fmt.Errorf("copying the snapshot: %w", err)
	}
	out, err := sql.Open("sqlite", "file:"+tmp)
	if err != nil {
		return err
	}
	_, err = out.Exec(`DROP TABLE ` + table)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err := atomicfile.Sync(tmp); err != nil {
		return err
	}
	if _, err := os.Stat(db); err == nil {
		aside := fmt.Sprintf("%s.before-restore-%d", db, time.Now().Unix())
		for _, suffix := range []string{"", "-wal", "-shm"} {
			if err := os.Rename(db+suffix, aside+suffix); err != nil && !errors.Is(err, os.ErrNotExist) {
				return err
			}
		}
	}
	if err := os.Rename(tmp, db); err != nil {
		return err
	}
	return atomicfile.SyncDir(filepath.Dir(db))
}

// ParseSchedule checks a cron spec (five fields, or @every/@daily...).
func ParseSchedule(spec string) (cron.Schedule, error) {
	s, err := cron.ParseStandard(spec)
	if err != nil {
		return nil, fmt.Errorf("--snapshot-schedule-cron %q: %v: give five fields such as \"0 */12 * * *\"", spec, err)
	}
	return s, nil
}

// Scheduler is the server component that saves snapshots on a schedule and
// keeps the newest Retention of them.
type Scheduler struct {
	src       func() (Source, error)
	dir       string
	schedule  cron.Schedule
	retention int
}

// NewScheduler checks the schedule; it writes nothing. src is asked for
// the source at each snapshot, so that a secret rotated while the server
// runs seals the next one.
func NewScheduler(src func() (Source, error), dir, spec string, retention int) (*Scheduler, error) {
	s, err := ParseSchedule(spec)
	if err != nil {
		return nil, err
	}
	if retention < 1 {
		return nil, fmt.Errorf("--snapshot-retention %d: keep at least 1", retention)
	}
	return &Scheduler{src: src, dir: dir, schedule: s, retention: retention}, nil
}

// Name implements component.Component.
func (s *Scheduler) Name() string { return "snapshots" }

// Run implements component.Component.
func (s *Scheduler) Run(ctx context.Context) error {
	for {
		next := s.schedule.Next(time.Now())
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Until(next)):
		}
		var path string
		src, err := s.src()
		if err == nil {
			path, err = Save(ctx, src, s.dir, ScheduledName)
		}
		if err != nil {
			klog.ErrorS(err, "scheduled snapshot failed; the next one is tried on schedule")
			continue
		}
		deleted, err := Prune(s.dir, ScheduledName, s.retention)
		if err != nil {
			klog.ErrorS(err, "pruning scheduled snapshots")
		}
		klog.InfoS("snapshot saved", "path", path, "pruned", len(deleted))
	}
}
