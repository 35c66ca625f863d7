package cluster

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"time"
)

// DemoChart is a real Helm chart .tgz, chart demo at version: a ConfigMap
// named after the release, showing the values tests change.
func DemoChart(version string) []byte {
	files := map[string]string{
		"Chart.yaml":  "apiVersion: v2\nname: demo\nversion: " + version + "\n",
		"values.yaml": "greeting: hello\ncolor: none\nsize: {width: 1, height: 1}\n",
		"templates/configmap.yaml": `apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}-cm
data:
  greeting: {{ .Values.greeting | quote }}
  color: {{ .Values.color | quote }}
  size: "{{ .Values.size.width }}x{{ .Values.size.height }}"
  chart: {{ .Chart.Version | quote }}
`,
	}
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for _, name := range []string{"Chart.yaml", "values.yaml", "templates/configmap.yaml"} {
		body := files[name]
		// Writes to memory do not fail.
		tw.WriteHeader(&tar.Header{Name: "demo/" + name, Mode: 0o644, Size: int64(len(body)), ModTime: time.Now()})
		tw.Write([]byte(body))
	}
	tw.Close()
	gz.Close()
	return buf.Bytes()
}
