//! Bodies for the errors hyper answers by itself. A request line or header block that does not
//! parse (a NUL in a header, garbage instead of a method), an over-long URI or an over-large
//! header block never reaches the application: hyper writes `400`, `414` or `431` with an empty
//! body and closes the connection, and it has no hook to change that response. This wrapper
//! around the accepted socket recognises that response as it is written (a 4xx with
//! `connection: close` and `content-length: 0`, which triage's own handlers never send) and
//! gives it the OpenAI error body every other error has.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use axum::http::StatusCode;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::error::ApiError;

/// What hyper writes for a request it could not parse: status line, then these headers.
const BARE_HEADERS: &[u8] = b"\r\nconnection: close\r\ncontent-length: 0\r\n";

/// An accepted connection whose parse-error responses get a body.
pub struct ParseErrorBodies<S> {
    inner: S,
    /// The rewritten response, written out before anything else.
    pending: Vec<u8>,
    /// Bytes of `pending` already written.
    written: usize,
}

impl<S> ParseErrorBodies<S> {
    pub fn new(inner: S) -> Self {
        ParseErrorBodies {
            inner,
            pending: Vec::new(),
            written: 0,
        }
    }
}

/// The response with a JSON body, when `head` is one of hyper's bare parse-error responses.
fn with_body(head: &[u8]) -> Option<Vec<u8>> {
    let status = head.strip_prefix(b"HTTP/1.1 ")?.get(..3)?;
    let (code, message) = match status {
        b"400" => (
            "bad_request",
            "The request could not be parsed: a malformed request line or header.",
        ),
        b"414" => ("uri_too_long", "The request URI is too long."),
        b"431" => (
            "header_too_large",
            "The request's header block is too large.",
        ),
        _ => return None,
    };
    let at = head
        .windows(BARE_HEADERS.len())
        .position(|w| w == BARE_HEADERS)?;
    if !head.ends_with(b"\r\n\r\n") {
        return None;
    }
    let status = StatusCode::from_bytes(status).ok()?;
    let body = ApiError::at_http_layer(status, code, message)
        .body()
        .to_string();
    let mut out = Vec::with_capacity(head.len() + body.len() + 64);
    out.extend_from_slice(&head[..at]);
    out.extend_from_slice(b"\r\nconnection: close\r\ncontent-type: application/json\r\n");
    out.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
    out.extend_from_slice(&head[at + BARE_HEADERS.len()..]);
    out.extend_from_slice(body.as_bytes());
    Some(out)
}

impl<S: AsyncWrite + Unpin> ParseErrorBodies<S> {
    /// Writes what is left of `pending`; ready once it is all out.
    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.pending.len() {
            let n =
                ready!(Pin::new(&mut self.inner).poll_write(cx, &self.pending[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ParseErrorBodies<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ParseErrorBodies<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        ready!(this.drain(cx))?;
        if let Some(rewritten) = with_body(buf) {
            this.pending = rewritten;
            this.written = 0;
            // The bytes are ours now; what does not go out at once goes on the next poll.
            let _ = this.drain(cx)?;
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        // A bare error response is one buffer; anything else goes through as it came.
        match bufs.iter().find(|b| !b.is_empty()) {
            Some(first) if first.starts_with(b"HTTP/1.1 4") => self.poll_write(cx, first),
            _ => {
                let this = &mut *self;
                ready!(this.drain(cx))?;
                Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.drain(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.drain(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BARE: &[u8] = b"HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\ncontent-length: 0\r\ndate: Sat, 05 Dec 2026 23:01:41 GMT\r\n\r\n";

    #[test]
    fn a_bare_parse_error_gets_a_json_body_of_its_stated_length() {
        let out = String::from_utf8(with_body(BARE).unwrap()).unwrap();
        let (head, body) = out.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"));
        assert!(head.contains("\r\ncontent-type: application/json\r\n"));
        assert!(head.contains(&format!("\r\ncontent-length: {}\r\n", body.len())));
        assert!(head.contains("\r\ndate: "));
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["error"]["code"], "header_too_large");
        assert_eq!(json["error"]["type"], "invalid_request_error");
    }

    #[test]
    fn other_responses_pass_unchanged() {
        // A response with a body, a 2xx, a 5xx, and a 400 that is not hyper's bare one.
        for head in [
            &b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 20\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 404 Not Found\r\nconnection: close\r\ncontent-length: 0\r\n\r\n",
        ] {
            assert_eq!(with_body(head), None, "{}", String::from_utf8_lossy(head));
        }
    }

    #[tokio::test]
    async fn the_whole_rewritten_response_reaches_the_peer() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // A pipe of 64 bytes: the rewritten response needs several polls to get through.
        let (ours, mut theirs) = tokio::io::duplex(64);
        let writer = tokio::spawn(async move {
            let mut io = ParseErrorBodies::new(ours);
            io.write_all(BARE).await.unwrap();
            io.flush().await.unwrap();
            io.shutdown().await.unwrap();
        });
        let mut received = Vec::new();
        theirs.read_to_end(&mut received).await.unwrap();
        writer.await.unwrap();
        assert_eq!(received, with_body(BARE).unwrap());
    }
}
