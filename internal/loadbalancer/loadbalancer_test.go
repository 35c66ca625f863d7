package loadbalancer

import (
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/utils/ptr"
)

func TestMergeAndOrder(t *testing.T) {
	got := merge([]string{"10.0.0.2:6443", "10.0.0.1:6443", "10.0.0.2:6443"}, "server.lan:6443")
	want := []string{"10.0.0.2:6443", "10.0.0.1:6443", "server.lan:6443"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("merge = %v, want %v (each once, the --server last)", got, want)
	}
	if got := order(want, "10.0.0.1:6443"); !reflect.DeepEqual(got, []string{"10.0.0.1:6443", "10.0.0.2:6443", "server.lan:6443"}) {
		t.Errorf("order = %v: want the current server first", got)
	}
	if got := order(want, "gone:6443"); !reflect.DeepEqual(got, want) {
		t.Errorf("order with a current server no longer listed = %v, want %v", got, want)
	}
}

func TestAddresses(t *testing.T) {
	slice := &discoveryv1.EndpointSlice{
		Ports: []discoveryv1.EndpointPort{{Name: ptr.To("https"), Port: ptr.To[int32](6443)}},
		Endpoints: []discoveryv1.Endpoint{
			{Addresses: []string{"10.0.0.2"}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}},
			{Addresses: []string{"10.0.0.3"}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(false)}},
			{Addresses: []string{"10.0.0.1"}},
		},
	}
	if got, want := addresses([]*discoveryv1.EndpointSlice{slice}), []string{"10.0.0.1:6443", "10.0.0.2:6443"}; !reflect.DeepEqual(got, want) {
		t.Errorf("addresses = %v, want %v (ready ones, sorted)", got, want)
	}
}

// TestFailover: with the current server gone, a new connection goes to the
// next one, which stays current; the list is kept in the file.
func TestFailover(t *testing.T) {
	up := echo(t, "up")
	down, _ := net.Listen("tcp", "127.0.0.1:0")
	gone := down.Addr().String()
	down.Close()

	file := filepath.Join(t.TempDir(), "servers.json")
	lb, err := New(Config{File: file, Server: "https://" + gone})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- lb.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	lb.setServers([]string{up})
	if got := read(t, lb); got != "up" {
		t.Errorf("through the load balancer: %q, want the live server's answer", got)
	}
	if lb.current != up {
		t.Errorf("current server %s, want %s", lb.current, up)
	}
	if data, err := os.ReadFile(file); err != nil || string(data) != `["`+up+`"]` {
		t.Errorf("kept servers: %s (%v)", data, err)
	}
	again, err := New(Config{File: file, Server: "https://" + gone})
	if err != nil {
		t.Fatal(err)
	}
	defer again.ln.Close()
	if got := again.Servers(); !reflect.DeepEqual(got, []string{up, gone}) {
		t.Errorf("servers after a restart: %v, want the kept one, then --server", got)
	}
}

// echo is a server that writes its name to each connection.
func echo(t *testing.T, name string) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte(name))
			c.Close()
		}
	}()
	return ln.Addr().String()
}

func read(t *testing.T, lb *LoadBalancer) string {
	c, err := net.Dial("tcp", lb.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	data, _ := io.ReadAll(c)
	return string(data)
}
