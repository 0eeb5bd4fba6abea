package relay

import "syscall"

var syscallEMFILE error = syscall.EMFILE
