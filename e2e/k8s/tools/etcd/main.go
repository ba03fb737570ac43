// Command etcd is etcd's own server entry point, built here from
// go.etcd.io/etcd/server/v3 at the version Kubernetes requires, because etcd's
// root module (which holds its main package) is not needed for anything else.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
