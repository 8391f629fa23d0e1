//! Wrappers around a connection that only watch its read side (the smuggling
//! guard, the replay of bytes already read, the count of bytes a backend sent)
//! pass every write straight to the connection inside. `write_through!` writes
//! that `AsyncWrite` body once for all of them; `read_counting` is the read of
//! the two that count what they receive.

/// The methods of an `AsyncWrite` impl that forward to the field named, which
/// must itself be `AsyncWrite + Unpin` (so the wrapper is `Unpin` too). Used
/// inside the impl block: `impl AsyncWrite for W { write_through!(io); }`.
macro_rules! write_through {
    ($field:ident) => {
        fn poll_write(
            self: ::std::pin::Pin<&mut Self>,
            cx: &mut ::std::task::Context<'_>,
            buf: &[u8],
        ) -> ::std::task::Poll<::std::io::Result<usize>> {
            ::std::pin::Pin::new(&mut self.get_mut().$field).poll_write(cx, buf)
        }
        fn poll_write_vectored(
            self: ::std::pin::Pin<&mut Self>,
            cx: &mut ::std::task::Context<'_>,
            bufs: &[::std::io::IoSlice<'_>],
        ) -> ::std::task::Poll<::std::io::Result<usize>> {
            ::std::pin::Pin::new(&mut self.get_mut().$field).poll_write_vectored(cx, bufs)
        }
        fn is_write_vectored(&self) -> bool {
            self.$field.is_write_vectored()
        }
        fn poll_flush(
            self: ::std::pin::Pin<&mut Self>,
            cx: &mut ::std::task::Context<'_>,
        ) -> ::std::task::Poll<::std::io::Result<()>> {
            ::std::pin::Pin::new(&mut self.get_mut().$field).poll_flush(cx)
        }
        fn poll_shutdown(
            self: ::std::pin::Pin<&mut Self>,
            cx: &mut ::std::task::Context<'_>,
        ) -> ::std::task::Poll<::std::io::Result<()>> {
            ::std::pin::Pin::new(&mut self.get_mut().$field).poll_shutdown(cx)
        }
    };
}
pub(crate) use write_through;

/// A read through `io` that adds the bytes it brought to `count`: the read side
/// of the wrappers that count a connection's received bytes (a listener's
/// connections, a backend's).
pub fn read_counting<IO: tokio::io::AsyncRead + Unpin>(
    io: &mut IO,
    cx: &mut std::task::Context<'_>,
    buf: &mut tokio::io::ReadBuf<'_>,
    count: &std::sync::atomic::AtomicU64,
) -> std::task::Poll<std::io::Result<()>> {
    let before = buf.filled().len();
    let r = std::pin::Pin::new(io).poll_read(cx, buf);
    let n = buf.filled().len() - before;
    if n > 0 {
        count.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
    }
    r
}
