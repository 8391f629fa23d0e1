//! Sockets: the listening sockets every listener kind binds, and a small
//! outgoing HTTP client for Fulcrum's own requests (webhooks), over plain TCP or
//! TLS.

use bytes::Bytes;
use http::{Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpStream;

/// POSTs a JSON body; returns the status, or why it could not be sent.
pub(crate) async fn post_json(
    url: &str,
    body: Vec<u8>,
    timeout: Duration,
) -> Result<StatusCode, String> {
    tokio::time::timeout(timeout, post(url, body))
        .await
        .map_err(|_| format!("no answer within {timeout:?}"))?
}

async fn post(url: &str, body: Vec<u8>) -> Result<StatusCode, String> {
    let uri: Uri = url.parse().map_err(|e| format!("invalid URL: {e}"))?;
    let https = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err("the URL must start with http:// or https://".into()),
    };
    let host = uri.host().ok_or("the URL has no host")?.to_string();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let path = uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
        .to_string();
    let authority = uri
        .authority()
        .map(|a| a.as_str())
        .unwrap_or(&host)
        .to_string();
    let tcp = TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let req = Request::post(path)
        .header(header::HOST, authority)
        .header(header::CONTENT_TYPE, "application/json")
        .header(
            header::USER_AGENT,
            concat!("fulcrum/", env!("CARGO_PKG_VERSION")),
        )
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    if https {
        let name = rustls_pki_types::ServerName::try_from(host.clone())
            .map_err(|e| format!("bad host name: {e}"))?;
        let connector = tokio_rustls::TlsConnector::from(crate::tls::client_config(&[b"http/1.1"]));
        let tls = connector
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        send(TokioIo::new(tls), req).await
    } else {
        send(TokioIo::new(tcp), req).await
    }
}

async fn send<I>(io: I, req: Request<Full<Bytes>>) -> Result<StatusCode, String>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let _ = resp.into_body().collect().await;
    Ok(status)
}

/// Binds a listening socket (SO_REUSEADDR, a deep backlog; IP_FREEBIND so an
/// address that is not (yet) on this host, like a floating VIP, can be bound).
pub(crate) fn bind(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = new_socket(addr)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

/// Binds `count` listening sockets to one address (see [`bind`]); with more
/// than one, all have SO_REUSEPORT and the kernel spreads new connections over
/// them. The first is bound before SO_REUSEPORT is set on it: an address that
/// another socket holds, with SO_REUSEPORT or not (another process, another
/// instance), fails with "address in use" instead of being shared. The others
/// take the port the first got (which matters for port 0).
pub(crate) fn bind_group(addr: SocketAddr, count: usize) -> io::Result<Vec<std::net::TcpListener>> {
    if count <= 1 {
        return Ok(vec![bind(addr)?]);
    }
    let first = new_socket(addr)?;
    first.bind(&addr.into())?;
    first.set_reuse_port(true)?;
    first.listen(BACKLOG)?;
    let bound = first
        .local_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::other("not an IP socket"))?;
    let mut group = Vec::with_capacity(count);
    group.push(first.into());
    for _ in 1..count {
        let socket = new_socket(addr)?;
        socket.set_reuse_port(true)?;
        socket.bind(&bound.into())?;
        socket.listen(BACKLOG)?;
        group.push(socket.into());
    }
    Ok(group)
}

const BACKLOG: i32 = 4096;

fn new_socket(addr: SocketAddr) -> io::Result<socket2::Socket> {
    let domain = socket2::Domain::for_address(addr);
    let socket = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        let _ = socket.set_only_v6(false);
        let _ = socket.set_freebind_v6(true);
    } else {
        let _ = socket.set_freebind_v4(true);
    }
    socket.set_nonblocking(true)?;
    Ok(socket)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_shares_one_port_and_does_not_join_a_foreign_socket() {
        let any: SocketAddr = "127.0.0.1:0".parse().expect("address");
        let group = bind_group(any, 3).expect("group");
        let port = group[0].local_addr().expect("addr").port();
        for s in &group {
            assert_eq!(s.local_addr().expect("addr").port(), port);
        }
        let taken = SocketAddr::from(([127, 0, 0, 1], port));
        // Another group on a held port fails, although every socket of the
        // holder has SO_REUSEPORT.
        let err = bind_group(taken, 2).expect_err("the port is held");
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        let err = bind(taken).expect_err("the port is held");
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        // So does a group on a port held without SO_REUSEPORT.
        let plain = std::net::TcpListener::bind(any).expect("plain");
        let held = plain.local_addr().expect("addr");
        let err = bind_group(held, 2).expect_err("the port is held");
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    }
}
