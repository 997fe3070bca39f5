// Command vcsim serves govmomi's vCenter simulator on loopback over plain http so the vSphere
// driver's contract tests can talk to a real vSphere API without a vCenter. It prints the SDK
// URL on the first line of stdout and serves until killed.
//
// Two of the simulator's storage methods are brought closer to ESXi, without adding any method
// it lacks:
//
//   - VirtualDiskManager.CreateVirtualDisk_Task writes the disk's descriptor (the `.vmdk` text
//     file with its `RW <sectors>` extent line) next to its `-flat.vmdk` extent, as ESXi does;
//     the simulator leaves both files empty, so no client could learn a disk's capacity. The
//     model's own VM disks get descriptors too (16 MiB, the size the tests give the template).
//   - HostDatastoreSystem.CreateNasDatastore mounts an NFS export of this machine
//     (remoteHost 127.0.0.1 or localhost) as a datastore named by localPath, as ESXi does; the
//     simulator would take localPath for a directory of its own and name the datastore after
//     its last element. Other exports are left to the simulator (and fail as it fails them).
package main

import (
	"fmt"
	"log"
	"net/url"
	"os"
	"os/signal"
	"path"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

// modelDiskKB is the capacity of the model's VM disks (the template the tests deploy from).
const modelDiskKB = 16 * 1024

func main() {
	model := simulator.VPX()
	if err := model.Create(); err != nil {
		log.Fatal(err)
	}
	mounts, err := os.MkdirTemp("", "vcsim-nfs-mounts-")
	if err != nil {
		log.Fatal(err)
	}
	if err := describeModelDisks(); err != nil {
		log.Fatal(err)
	}
	simulator.Map.Put(&diskManager{*simulator.Map.VirtualDiskManager().(*simulator.VirtualDiskManager)})
	for _, entity := range simulator.Map.All("HostSystem") {
		host := entity.(*simulator.HostSystem)
		system := simulator.Map.Get(*host.ConfigManager.DatastoreSystem)
		simulator.Map.Put(&nasDatastores{*system.(*simulator.HostDatastoreSystem), mounts})
	}
	model.Service.Listen = &url.URL{Scheme: "http", Host: "127.0.0.1:0"}
	server := model.Service.NewServer()
	fmt.Println(server.URL.String())
	os.Stdout.Sync()

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	<-stop
	server.Close()
	model.Remove()
	_ = os.RemoveAll(mounts)
}

// descriptor is the text of a VMFS disk descriptor for a thin disk of capacityKB.
func descriptor(flat string, capacityKB int64) string {
	return fmt.Sprintf(`# Disk DescriptorFile
version=1
encoding="UTF-8"
CID=fffffffe
parentCID=ffffffff
createType="vmfs"

# Extent description
RW %d VMFS "%s"

# The Disk Data Base
#DDB

ddb.adapterType = "lsilogic"
ddb.thinProvisioned = "1"
`, capacityKB*2, flat)
}

// localFile is where the simulator keeps the datastore file `[ds] path`.
func localFile(name string) (string, types.BaseMethodFault) {
	var p object.DatastorePath
	if !p.FromString(name) {
		return "", &types.InvalidDatastorePath{DatastorePath: name}
	}
	for _, entity := range simulator.Map.All("Datastore") {
		ds := entity.(*simulator.Datastore)
		if ds.Name == p.Datastore {
			return path.Join(ds.Info.GetDatastoreInfo().Url, p.Path), nil
		}
	}
	return "", &types.InvalidDatastore{Name: p.Datastore}
}

func writeDisk(name string, capacityKB int64) types.BaseMethodFault {
	file, fault := localFile(name)
	if fault != nil {
		return fault
	}
	flat := strings.Replace(file, ".vmdk", "-flat.vmdk", 1)
	if err := os.WriteFile(flat, nil, 0o600); err != nil {
		return &types.CannotCreateFile{FileFault: types.FileFault{File: name}}
	}
	if err := os.WriteFile(file, []byte(descriptor(filepath.Base(flat), capacityKB)), 0o600); err != nil {
		return &types.CannotCreateFile{FileFault: types.FileFault{File: name}}
	}
	return nil
}

func describeModelDisks() error {
	for _, entity := range simulator.Map.All("VirtualMachine") {
		vm := entity.(*simulator.VirtualMachine)
		for _, device := range vm.Config.Hardware.Device {
			disk, ok := device.(*types.VirtualDisk)
			if !ok {
				continue
			}
			backing, ok := disk.Backing.(*types.VirtualDiskFlatVer2BackingInfo)
			if !ok {
				continue
			}
			disk.CapacityInKB = modelDiskKB
			disk.CapacityInBytes = modelDiskKB * 1024
			if fault := writeDisk(backing.FileName, modelDiskKB); fault != nil {
				return fmt.Errorf("describe disk %s: %T", backing.FileName, fault)
			}
		}
	}
	return nil
}

// The wrappers embed the simulator's objects by value: its property collector finds an
// object's properties through the first field of the registered struct.
type diskManager struct {
	simulator.VirtualDiskManager
}

func (m *diskManager) CreateVirtualDiskTask(_ *simulator.Context, req *types.CreateVirtualDisk_Task) soap.HasFault {
	task := simulator.CreateTask(m, "createVirtualDisk", func(*simulator.Task) (types.AnyType, types.BaseMethodFault) {
		file, fault := localFile(req.Name)
		if fault != nil {
			return nil, fault
		}
		if _, err := os.Stat(file); err == nil {
			return nil, &types.FileAlreadyExists{FileFault: types.FileFault{File: req.Name}}
		}
		var capacityKB int64
		if spec, ok := req.Spec.(*types.FileBackedVirtualDiskSpec); ok {
			capacityKB = spec.CapacityKb
		}
		if fault := writeDisk(req.Name, capacityKB); fault != nil {
			return nil, fault
		}
		return req.Name, nil
	})
	return &methods.CreateVirtualDisk_TaskBody{
		Res: &types.CreateVirtualDisk_TaskResponse{Returnval: task.Run()},
	}
}

type nasDatastores struct {
	simulator.HostDatastoreSystem
	mounts string
}

func (s *nasDatastores) CreateNasDatastore(ctx *simulator.Context, req *types.CreateNasDatastore) soap.HasFault {
	spec := req.Spec
	loopback := spec.RemoteHost == "127.0.0.1" || spec.RemoteHost == "localhost"
	if loopback && path.IsAbs(spec.RemotePath) && spec.LocalPath != "" && !strings.Contains(spec.LocalPath, "/") {
		// Mount the export: the mount point (named by localPath) is a link to the exported
		// folder; a missing export fails the mount with NotFound, as the simulator does.
		point := filepath.Join(s.mounts, spec.LocalPath)
		if _, err := os.Lstat(point); os.IsNotExist(err) {
			_ = os.Symlink(spec.RemotePath, point)
		}
		spec.LocalPath = point
		req = &types.CreateNasDatastore{This: req.This, Spec: spec}
	}
	return s.HostDatastoreSystem.CreateNasDatastore(ctx, req)
}
