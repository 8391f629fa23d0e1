//! A minimal WebSocket (RFC 6455) client and echo server: enough to prove that an
//! upgraded connection passes through the proxy both ways.

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::backend::{Body, full};

/// Backend handler: accepts the upgrade, then echoes every text frame.
pub async fn echo_upgrade(mut req: Request<Incoming>) -> Response<Body> {
    if req.headers().get("upgrade").is_none() {
        return Response::new(full("not a websocket request"));
    }
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let mut io = TokioIo::new(upgraded);
        while let Some(msg) = read_frame(&mut io).await {
            if write_frame(&mut io, &msg, false).await.is_err() {
                break;
            }
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header("upgrade", "websocket")
        .header("connection", "Upgrade")
        .header("sec-websocket-accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
        .body(full(Bytes::new()))
        .unwrap()
}

pub struct WsClient {
    stream: TcpStream,
    pub response_head: String,
}

impl WsClient {
    pub async fn connect(addr: SocketAddr, path: &str) -> WsClient {
        Self::connect_host(addr, "localhost", path).await
    }

    pub async fn connect_host(addr: SocketAddr, host: &str, path: &str) -> WsClient {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream.write_all(req.as_bytes()).await.unwrap();
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            let n = stream.read(&mut b).await.unwrap();
            assert!(
                n > 0,
                "connection closed during the handshake: {}",
                String::from_utf8_lossy(&head)
            );
            head.push(b[0]);
        }
        let response_head = String::from_utf8_lossy(&head).to_string();
        assert!(
            response_head.starts_with("HTTP/1.1 101"),
            "no upgrade: {response_head}"
        );
        WsClient {
            stream,
            response_head,
        }
    }

    pub async fn echo(&mut self, text: &str) -> String {
        write_frame(&mut self.stream, text.as_bytes(), true)
            .await
            .unwrap();
        let msg = read_frame(&mut self.stream).await.expect("echo frame");
        String::from_utf8(msg).unwrap()
    }
}

async fn write_frame<W: AsyncWrite + Unpin>(
    w: &mut W,
    payload: &[u8],
    mask: bool,
) -> std::io::Result<()> {
    let mut f = vec![0x81u8];
    let mask_bit = if mask { 0x80 } else { 0 };
    if payload.len() < 126 {
        f.push(mask_bit | payload.len() as u8);
    } else {
        f.push(mask_bit | 126);
        f.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    }
    if mask {
        let key = [1u8, 2, 3, 4];
        f.extend_from_slice(&key);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    } else {
        f.extend_from_slice(payload);
    }
    w.write_all(&f).await?;
    w.flush().await
}

async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> Option<Vec<u8>> {
    let mut h = [0u8; 2];
    r.read_exact(&mut h).await.ok()?;
    let masked = h[1] & 0x80 != 0;
    let mut len = (h[1] & 0x7f) as usize;
    if len == 126 {
        let mut l = [0u8; 2];
        r.read_exact(&mut l).await.ok()?;
        len = u16::from_be_bytes(l) as usize;
    }
    let mut key = [0u8; 4];
    if masked {
        r.read_exact(&mut key).await.ok()?;
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).await.ok()?;
    if masked {
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= key[i % 4];
        }
    }
    if h[0] & 0x0f == 0x8 {
        return None;
    }
    Some(payload)
}
