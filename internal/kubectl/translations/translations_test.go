package translations

import "testing"

func TestKubectl(t *testing.T) {
	for _, c := range []struct {
		args []string
		want bool
	}{
		{[]string{"/usr/local/bin/kubectl", "get", "pods"}, true},
		{[]string{"skiff", "kubectl", "get", "pods"}, true},
		{[]string{"/usr/local/bin/skiff", "server"}, false},
		{[]string{"skiff", "-namespace", "k8s.io", "-id", "x"}, false},
		{[]string{"skiff", "containerd", "--config", "c.toml"}, false},
		{nil, false},
	} {
		if got := kubectl(c.args); got != c.want {
			t.Errorf("kubectl(%q) = %v, want %v", c.args, got, c.want)
		}
	}
}

func TestEnglish(t *testing.T) {
	for l, want := range map[string]bool{
		"": true, "C": true, "C.UTF-8": true, "POSIX": true, "en_US.UTF-8": true, "en_GB.UTF-8": true,
		"de_DE.UTF-8": false, "ja_JP.UTF-8": false, "fr_FR": false,
	} {
		if got := english(l); got != want {
			t.Errorf("english(%q) = %v, want %v", l, got, want)
		}
	}
}
