//! A small SMTP sink: enough of RFC 5321 (EHLO, AUTH PLAIN/LOGIN, MAIL, RCPT,
//! DATA, QUIT) to receive what Fulcrum sends, and keep it for the test.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

#[derive(Clone, Debug, Default)]
pub struct Mail {
    pub auth: Option<String>,
    pub to: Vec<String>,
    pub data: String,
}

pub struct SmtpSink {
    pub addr: SocketAddr,
    pub mails: Arc<Mutex<Vec<Mail>>>,
}

impl SmtpSink {
    pub async fn start() -> SmtpSink {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let mails = Arc::new(Mutex::new(Vec::new()));
        let m2 = mails.clone();
        tokio::spawn(async move {
            loop {
                let Ok((s, _)) = l.accept().await else { return };
                let mails = m2.clone();
                tokio::spawn(async move {
                    let (r, mut w) = s.into_split();
                    let mut lines = BufReader::new(r).lines();
                    let _ = w.write_all(b"220 sink ESMTP\r\n").await;
                    let mut mail = Mail::default();
                    while let Ok(Some(line)) = lines.next_line().await {
                        let upper = line.to_ascii_uppercase();
                        let reply: &[u8] = if upper.starts_with("EHLO") || upper.starts_with("HELO")
                        {
                            b"250-sink\r\n250-AUTH PLAIN LOGIN\r\n250 OK\r\n"
                        } else if upper.starts_with("AUTH PLAIN") {
                            mail.auth = Some(line[10..].trim().to_string());
                            b"235 2.7.0 ok\r\n"
                        } else if upper.starts_with("AUTH LOGIN") {
                            let _ = w.write_all(b"334 VXNlcm5hbWU6\r\n").await;
                            let u = lines.next_line().await.ok().flatten().unwrap_or_default();
                            let _ = w.write_all(b"334 UGFzc3dvcmQ6\r\n").await;
                            let p = lines.next_line().await.ok().flatten().unwrap_or_default();
                            mail.auth = Some(format!("{u}:{p}"));
                            b"235 2.7.0 ok\r\n"
                        } else if upper.starts_with("MAIL FROM") {
                            b"250 ok\r\n"
                        } else if upper.starts_with("RCPT TO") {
                            mail.to.push(line.to_string());
                            b"250 ok\r\n"
                        } else if upper == "DATA" {
                            let _ = w.write_all(b"354 go ahead\r\n").await;
                            let mut data = String::new();
                            while let Ok(Some(l)) = lines.next_line().await {
                                if l == "." {
                                    break;
                                }
                                data.push_str(&l);
                                data.push('\n');
                            }
                            mail.data = data;
                            mails.lock().unwrap().push(std::mem::take(&mut mail));
                            b"250 queued\r\n"
                        } else if upper == "QUIT" {
                            let _ = w.write_all(b"221 bye\r\n").await;
                            return;
                        } else if upper == "RSET" || upper == "NOOP" {
                            b"250 ok\r\n"
                        } else {
                            b"502 not implemented\r\n"
                        };
                        if w.write_all(reply).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        SmtpSink { addr, mails }
    }

    pub fn count(&self) -> usize {
        self.mails.lock().unwrap().len()
    }

    pub fn all(&self) -> Vec<Mail> {
        self.mails.lock().unwrap().clone()
    }
}
