// Command etcd is etcd's own server entry point, built from the published
// go.etcd.io/etcd/server/v3 module (the root etcd module carries replace
// directives, so `go install` of it fails from the module proxy).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
