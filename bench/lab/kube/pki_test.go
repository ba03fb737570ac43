package kube

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"testing"
)

func TestIssuedCertificatesVerifyForTheirUse(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca, err := newCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.cert)
	cases := []struct {
		name  string
		spec  certSpec
		usage x509.ExtKeyUsage
		host  string // verified as a server name when set
	}{
		{"apiserver", certSpec{name: "apiserver", cn: "kube-apiserver", server: true, ips: []net.IP{net.ParseIP("10.214.0.2")}, dns: []string{"kubernetes.default.svc"}}, x509.ExtKeyUsageServerAuth, "10.214.0.2"},
		{"node client", certSpec{name: "node1-client", cn: "system:node:node1", orgs: []string{"system:nodes"}, client: true}, x509.ExtKeyUsageClientAuth, ""},
		{"kubelet serving", certSpec{name: "node1-serving", cn: "node1", server: true, ips: []net.IP{net.ParseIP("10.214.0.3")}}, x509.ExtKeyUsageServerAuth, "10.214.0.3"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			kp, err := ca.issue(tc.spec)
			if err != nil {
				t.Fatal(err)
			}
			pair, err := tls.LoadX509KeyPair(kp.Cert, kp.Key)
			if err != nil {
				t.Fatal(err)
			}
			cert, err := x509.ParseCertificate(pair.Certificate[0])
			if err != nil {
				t.Fatal(err)
			}
			if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, DNSName: tc.host, KeyUsages: []x509.ExtKeyUsage{tc.usage}}); err != nil {
				t.Errorf("verify: %v", err)
			}
			if cert.Subject.CommonName != tc.spec.cn || len(cert.Subject.Organization) != len(tc.spec.orgs) {
				t.Errorf("subject = %v, want CN %s O %v", cert.Subject, tc.spec.cn, tc.spec.orgs)
			}
			if st, err := os.Stat(kp.Key); err != nil || st.Mode().Perm() != 0o600 {
				t.Errorf("key file mode: %v %v", st.Mode(), err)
			}
		})
	}
}
