//! Control sockets: read-write (0600) and read-only (0666), JSON lines.
