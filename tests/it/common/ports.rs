//! Loopback ports for servers that cannot bind port 0 and report it (nginx, Redis), and
//! ports where nothing listens.

use std::net::TcpListener;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// A loopback port that was free a moment ago. Another process may bind it before the
/// server does: whoever starts a server on it (see [`super::Nginx`], [`super::Redis`])
/// retries with a new port when the bind fails with EADDRINUSE, and waits for a sign that
/// it is *its* server that listens (nginx's pid file, Redis's own PONG).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A loopback port that is bound but does not listen, until dropped: a connection to it is
/// refused at once, and no other process can take the port while it is held (the socket
/// has no SO_REUSEADDR), unlike a port that was merely free a moment ago.
pub struct ClosedPort {
    _socket: OwnedFd,
    /// The port.
    pub port: u16,
}

impl ClosedPort {
    /// Binds a new one.
    pub fn new() -> ClosedPort {
        // SAFETY: socket(2) takes no pointers; the descriptor is owned from here on.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        // SAFETY: `fd` is a new descriptor that nothing else owns.
        let socket = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes([127, 0, 0, 1]),
            },
            sin_zero: [0; 8],
        };
        let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        // SAFETY: `addr` is a valid sockaddr_in and `len` its size, for both calls.
        unsafe {
            let sa = std::ptr::from_mut(&mut addr).cast::<libc::sockaddr>();
            assert_eq!(
                libc::bind(socket.as_raw_fd(), sa, len),
                0,
                "bind: {}",
                std::io::Error::last_os_error()
            );
            assert_eq!(
                libc::getsockname(socket.as_raw_fd(), sa, &mut len),
                0,
                "getsockname: {}",
                std::io::Error::last_os_error()
            );
        }
        ClosedPort {
            _socket: socket,
            port: u16::from_be(addr.sin_port),
        }
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}
