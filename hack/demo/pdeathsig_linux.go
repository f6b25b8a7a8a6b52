package main

import (
	"os"
	"syscall"
)

// dieWithParent asks the kernel to send SIGTERM when the parent (demo.sh) exits, so a killed
// demo never leaves the control plane running. The signal goes through the normal shutdown path.
func dieWithParent() {
	ppid := os.Getppid()
	_, _, _ = syscall.RawSyscall(syscall.SYS_PRCTL, syscall.PR_SET_PDEATHSIG, uintptr(syscall.SIGTERM), 0)
	if os.Getppid() != ppid { // the parent died before prctl took effect
		_ = syscall.Kill(os.Getpid(), syscall.SIGTERM)
	}
}
