// Command vcsim serves govmomi's vCenter simulator on loopback over plain http so the vSphere
// driver's contract tests can talk to a real vSphere API without a vCenter. It prints the SDK
// URL on the first line of stdout and serves until killed.
package main

import (
	"fmt"
	"log"
	"net/url"
	"os"

	"github.com/vmware/govmomi/simulator"
)

func main() {
	model := simulator.VPX()
	if err := model.Create(); err != nil {
		log.Fatal(err)
	}
	model.Service.Listen = &url.URL{Scheme: "http", Host: "127.0.0.1:0"}
	server := model.Service.NewServer()
	fmt.Println(server.URL.String())
	os.Stdout.Sync()
	select {}
}
