package cluster

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// Postgres is a PostgreSQL server from the host's packages (Debian's
// postgresql), its data in a temp dir of its own, for servers that share an
// external datastore.
type Postgres struct {
	Dir  string
	Addr string
	cmd  *exec.Cmd
	done chan struct{}
}

// PostgresBin is the dir of the host's PostgreSQL server programs.
func PostgresBin() (string, error) {
	found, _ := filepath.Glob("/usr/lib/postgresql/*/bin/postgres")
	if len(found) == 0 {
		return "", errors.New("no PostgreSQL server on this host: apt-get install postgresql")
	}
	return filepath.Dir(found[len(found)-1]), nil
}

// StartPostgres initialises a database cluster with one superuser, skiff,
// trusted without a password, and serves it on host:port. PostgreSQL refuses
// to run as root: it runs as the postgres user the package created.
func StartPostgres(host string, port int) (*Postgres, error) {
	bin, err := PostgresBin()
	if err != nil {
		return nil, err
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("the postgres user: %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	dir, err := os.MkdirTemp("", "skiff-test-pg-")
	if err != nil {
		return nil, err
	}
	p := &Postgres{Dir: dir, Addr: net.JoinHostPort(host, strconv.Itoa(port))}
	if err := os.Chown(dir, uid, gid); err != nil {
		p.Stop()
		return nil, err
	}
	cred := &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, Setpgid: true}
	initdb := exec.Command(filepath.Join(bin, "initdb"), "-D", filepath.Join(dir, "data"), "-U", "skiff", "-A", "trust", "-E", "UTF8", "--no-sync")
	initdb.SysProcAttr = cred
	initdb.Dir = dir
	if out, err := initdb.CombinedOutput(); err != nil {
		p.Stop()
		return nil, fmt.Errorf("initdb: %v: %s", err, out)
	}
	// initdb trusts loopback only; the servers connect from the LAN.
	hba, err := os.OpenFile(filepath.Join(dir, "data", "pg_hba.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err == nil {
		_, err = hba.WriteString("host all all 0.0.0.0/0 trust\n")
		hba.Close()
	}
	if err != nil {
		p.Stop()
		return nil, err
	}
	log, err := os.Create(filepath.Join(dir, "postgres.log"))
	if err != nil {
		p.Stop()
		return nil, err
	}
	p.cmd = exec.Command(filepath.Join(bin, "postgres"), "-D", filepath.Join(dir, "data"),
		"-k", dir, "-h", host, "-p", strconv.Itoa(port), "-F", "-c", "max_connections=200")
	p.cmd.SysProcAttr = cred
	p.cmd.Dir = dir
	p.cmd.Stdout, p.cmd.Stderr = log, log
	if err := p.cmd.Start(); err != nil {
		log.Close()
		p.Stop()
		return nil, err
	}
	p.done = make(chan struct{})
	go func() { p.cmd.Wait(); log.Close(); close(p.done) }()
	deadline := time.Now().Add(time.Minute)
	for {
		c, err := net.DialTimeout("tcp", p.Addr, time.Second)
		if err == nil {
			c.Close()
			return p, nil
		}
		select {
		case <-p.done:
			out, _ := os.ReadFile(filepath.Join(dir, "postgres.log"))
			p.Stop()
			return nil, fmt.Errorf("postgres exited: %s", out)
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			p.Stop()
			return nil, fmt.Errorf("postgres does not answer on %s", p.Addr)
		}
	}
}

// Endpoint is the kine endpoint of database db (kine creates it).
func (p *Postgres) Endpoint(db string) string {
	return fmt.Sprintf("postgres://skiff@%s/%s?sslmode=disable", p.Addr, db)
}

// Stop shuts the server down (fast mode) and removes its files.
func (p *Postgres) Stop() {
	if p.cmd != nil && p.cmd.Process != nil {
		p.cmd.Process.Signal(syscall.SIGINT)
		select {
		case <-p.done:
		case <-time.After(30 * time.Second):
			p.cmd.Process.Kill()
			<-p.done
		}
	}
	os.RemoveAll(p.Dir)
}
