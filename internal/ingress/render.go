package ingress

import (
	"fmt"
	"strings"
)

// String renders the table as text, one line per listener, host, rule,
// filter and backend: for logs and golden tests.
func (t *Table) String() string {
	var sb strings.Builder
	for _, l := range t.Listeners {
		fmt.Fprintf(&sb, "listener %d %s", l.Port, l.Protocol)
		if l.Addresses != nil {
			fmt.Fprintf(&sb, " on %v", l.Addresses)
		}
		sb.WriteString("\n")
		for _, c := range l.Certificates {
			fmt.Fprintf(&sb, "  certificate %q %s\n", c.Hostname, c.Secret)
		}
		for _, h := range l.Hosts {
			fmt.Fprintf(&sb, "  host %q\n", h.Name)
			for _, r := range h.Rules {
				sb.WriteString(r.String())
			}
		}
	}
	return sb.String()
}

// String renders a rule and its action.
func (r *Rule) String() string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "    %s rule %d", r.Route, r.RuleIndex)
	if r.RuleName != "" {
		fmt.Fprintf(&sb, " (%s)", r.RuleName)
	}
	fmt.Fprintf(&sb, " match %d: %s %q", r.MatchIndex, r.Path.Type, r.Path.Value)
	if r.Method != "" {
		fmt.Fprintf(&sb, " method %s", r.Method)
	}
	for _, h := range r.Headers {
		fmt.Fprintf(&sb, " header %s", h)
	}
	for _, q := range r.QueryParams {
		fmt.Fprintf(&sb, " query %s", q)
	}
	if r.oneLabel {
		sb.WriteString(" (one label)")
	}
	if r.defaultBackend {
		sb.WriteString(" (default backend)")
	}
	if r.scope != nil && r.scope.hostname != "" {
		fmt.Fprintf(&sb, " (listener %q)", r.scope.hostname)
	}
	sb.WriteString("\n")
	a := r.Action
	if a == nil {
		return sb.String()
	}
	if a.RequestHeaders != nil {
		fmt.Fprintf(&sb, "      request headers %s\n", a.RequestHeaders)
	}
	if a.ResponseHeaders != nil {
		fmt.Fprintf(&sb, "      response headers %s\n", a.ResponseHeaders)
	}
	if rd := a.Redirect; rd != nil {
		fmt.Fprintf(&sb, "      redirect %d scheme %q host %q port %d path %s\n", rd.StatusCode, rd.Scheme, rd.Hostname, rd.Port, rd.Path)
	}
	if rw := a.Rewrite; rw != nil {
		fmt.Fprintf(&sb, "      rewrite host %q path %s\n", rw.Hostname, rw.Path)
	}
	if a.Timeouts != (Timeouts{}) {
		fmt.Fprintf(&sb, "      timeouts request %s backend %s\n", a.Timeouts.Request, a.Timeouts.BackendRequest)
	}
	if rt := a.Retry; rt != nil {
		fmt.Fprintf(&sb, "      retry codes %v attempts %d backoff %s\n", rt.Codes, rt.Attempts, rt.Backoff)
	}
	for _, m := range a.Mirrors {
		fmt.Fprintf(&sb, "      mirror %d/%d %s\n", m.Numerator, m.Denominator, m.Backend)
	}
	for _, be := range a.Backends {
		fmt.Fprintf(&sb, "      backend %s\n", be)
	}
	return sb.String()
}

func (v ValueMatch) String() string {
	if v.re != nil {
		return fmt.Sprintf("%s~%q", v.Name, v.Value)
	}
	return fmt.Sprintf("%s=%q", v.Name, v.Value)
}

func (m *HeaderModifier) String() string {
	return fmt.Sprintf("set %v add %v remove %v", m.Set, m.Add, m.Remove)
}

func (p *PathModifier) String() string {
	if p == nil {
		return "-"
	}
	return fmt.Sprintf("%s %q", p.Type, p.Value)
}

func (b *Backend) String() string {
	s := fmt.Sprintf("%s:%d weight %d", b.Service, b.Port, b.Weight)
	if b.AppProtocol != "" {
		s += " appProtocol " + b.AppProtocol
	}
	if b.RequestHeaders != nil {
		s += " request headers " + b.RequestHeaders.String()
	}
	if b.Invalid != "" {
		return s + " invalid: " + b.Invalid
	}
	return s + " " + fmt.Sprint(b.Endpoints)
}
