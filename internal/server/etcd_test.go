package server

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCheckDatastore(t *testing.T) {
	const pg = "postgres://skiff@db/skiff"
	for _, c := range []struct {
		name    string
		sqlite  []byte // state.db's contents; nil: none
		etcd    bool   // server/db/etcd exists
		o       Options
		want    bool
		wantErr string
	}{
		{name: "fresh, SQLite", want: false},
		{name: "fresh, --cluster-init", o: Options{ClusterInit: true}, want: true},
		{name: "etcd's dir, no flag", etcd: true, want: true},
		{name: "etcd's dir, --cluster-init", etcd: true, o: Options{ClusterInit: true}, want: true},
		{name: "etcd's dir and a SQLite file", etcd: true, sqlite: []byte("SQLite format 3\x00"), want: true},
		{name: "an empty SQLite file, --cluster-init", sqlite: []byte{}, o: Options{ClusterInit: true}, want: true},
		{name: "external datastore", o: Options{DatastoreEndpoint: pg}, want: false},
		{name: "--cluster-init with --datastore-endpoint", o: Options{ClusterInit: true, DatastoreEndpoint: pg}, wantErr: "give one or the other"},
		{name: "etcd's dir with --datastore-endpoint", etcd: true, o: Options{DatastoreEndpoint: pg}, wantErr: "would leave behind"},
		{name: "SQLite, --cluster-init", sqlite: []byte("SQLite format 3\x00"), o: Options{ClusterInit: true}, wantErr: "moving it into etcd is not supported yet"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			if c.sqlite != nil {
				os.MkdirAll(dbDir(dir), 0o700)
				os.WriteFile(filepath.Join(dbDir(dir), "state.db"), c.sqlite, 0o600)
			}
			if c.etcd {
				os.MkdirAll(ETCDDir(dir), 0o700)
			}
			got, err := checkDatastore(c.o, dir)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("checkDatastore = %v, %v; want an error with %q", got, err, c.wantErr)
				}
				return
			}
			if err != nil || got != c.want {
				t.Fatalf("checkDatastore = %v, %v; want %v", got, err, c.want)
			}
		})
	}
}
