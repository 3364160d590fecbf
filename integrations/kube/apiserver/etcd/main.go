// Command etcd is etcd's own server (go.etcd.io/etcd/server/v3 etcdmain),
// built here at the version kube-apiserver's module graph pins, because
// Debian's etcd-server (3.4) is older than kube-apiserver 1.37 supports.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
