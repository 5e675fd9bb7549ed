//! Sockets the node listens on (the HTTP edge and the cluster port), and the open-file budget
//! they share: each gets its own part, so neither can run the other out of file descriptors.

use std::io;
use std::net::SocketAddr;

use tokio::net::TcpListener;

/// File descriptors kept out of every connection cap for everything else a node opens: store
/// files, links it dials, logs, the blocking pool's files.
pub const RESERVED_FILES: u64 = 128;

/// The fewest connections the HTTP edge is given, however low the open-file limit.
pub const MIN_EDGE_CONNECTIONS: u64 = 16;

/// Listens on `address` with an accept queue of `backlog` (the kernel caps it at
/// `net.core.somaxconn`); the address may be reused at once after a restart.
pub fn bind(address: SocketAddr, backlog: u32) -> io::Result<TcpListener> {
    let socket = if address.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(backlog)
}

/// Whether an accept failed for want of file descriptors (this process's or the system's),
/// or of kernel memory: errors that repeat at once if the accept is retried at once.
pub fn is_out_of_resources(error: &io::Error) -> bool {
    use rustix::io::Errno;
    matches!(
        error.raw_os_error(),
        Some(code) if [Errno::MFILE, Errno::NFILE, Errno::NOBUFS, Errno::NOMEM]
            .iter()
            .any(|errno| errno.raw_os_error() == code)
    )
}

/// Raises the soft open-file limit to the hard one, so that the connection caps can be as high
/// as the system allows. Returns the soft limit now in force (`None`: unlimited).
pub fn raise_file_limit() -> io::Result<Option<u64>> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        setrlimit(
            Resource::Nofile,
            Rlimit {
                current: limit.maximum,
                maximum: limit.maximum,
            },
        )?;
    }
    Ok(getrlimit(Resource::Nofile).current)
}

/// How the open-file limit is shared between the two ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileBudget {
    /// Connections the HTTP edge may hold.
    pub edge_connections: usize,
    /// Files the cluster port may hold (its listener, and the connections it accepts).
    pub cluster_files: u64,
}

/// Splits `file_limit` (`None`: unlimited): the cluster port gets `cluster_files` (0 for a
/// node alone) and [`RESERVED_FILES`] are kept for everything else; the edge gets the
/// configured cap, lowered to fit what is left. Fails, naming what to change, when fewer than
/// [`MIN_EDGE_CONNECTIONS`] would be left for the edge.
pub fn share_files(
    file_limit: Option<u64>,
    edge_configured: usize,
    cluster_files: u64,
) -> Result<FileBudget, String> {
    let Some(files) = file_limit else {
        return Ok(FileBudget {
            edge_connections: edge_configured.max(1),
            cluster_files,
        });
    };
    let left = files.saturating_sub(RESERVED_FILES + cluster_files);
    if cluster_files > 0 && left < MIN_EDGE_CONNECTIONS {
        return Err(format!(
            "the open-file limit ({files}) is too low: the cluster port takes {cluster_files} \
             (cluster.max_connections, its listener and the links this node dials), {RESERVED_FILES} are kept for the store and \
             logs, and the edge needs at least {MIN_EDGE_CONNECTIONS}; raise it (ulimit -n, or \
             LimitNOFILE= in a systemd unit) or lower cluster.max_connections"
        ));
    }
    let room = usize::try_from(left.max(MIN_EDGE_CONNECTIONS)).unwrap_or(usize::MAX);
    Ok(FileBudget {
        edge_connections: edge_configured.min(room).max(1),
        cluster_files,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_edge_gets_what_the_cluster_port_and_the_reserve_leave() {
        assert_eq!(
            share_files(Some(1024), 4096, 200),
            Ok(FileBudget {
                edge_connections: 1024 - 128 - 200,
                cluster_files: 200
            })
        );
        assert_eq!(
            share_files(Some(1 << 20), 4096, 200)
                .unwrap()
                .edge_connections,
            4096
        );
        assert_eq!(share_files(None, 4096, 200).unwrap().edge_connections, 4096);
    }

    #[test]
    fn a_node_alone_keeps_a_few_edge_connections_even_under_a_tiny_limit() {
        assert_eq!(
            share_files(Some(100), 4096, 0).unwrap().edge_connections,
            MIN_EDGE_CONNECTIONS as usize
        );
    }

    #[test]
    fn a_limit_too_low_for_both_ports_is_refused_with_what_to_change() {
        let error = share_files(Some(300), 4096, 200).unwrap_err();
        assert!(error.contains("300"), "{error}");
        assert!(error.contains("cluster.max_connections"), "{error}");
        assert!(error.contains("ulimit -n"), "{error}");
    }
}
