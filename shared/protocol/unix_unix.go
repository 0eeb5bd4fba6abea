//go:build unix

package protocol

import (
	"net"
	"syscall"
)

// listenUnix creates the socket with mode 0600 from the start: the umask is
// narrowed around the bind, so there is no window in which another user could
// connect before the chmod in Listen. (The umask is process-wide; for that
// instant other files this process creates are only more private.)
func listenUnix(path string) (net.Listener, error) {
	old := syscall.Umask(0o177)
	defer syscall.Umask(old)
	return net.Listen("unix", path)
}
