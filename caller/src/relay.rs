//! Opening a relayed stream without waiting for the proxy's answer first.
//!
//! A session starts with a relay request to the proxy (`Open::Relay`), which answers one
//! [`RelayReply`] frame and then splices the stream to the agent. Waiting for that answer
//! before starting the end-to-end handshake would cost a round trip to the proxy on every
//! new session, so the caller sends its TLS ClientHello right behind the request: the
//! proxy reads exactly the request frame and forwards what follows once the agent's stream
//! is open. [`AfterReply`] is the reading half the handshake sees: it first consumes the
//! proxy's answer, and if that is not `Connected` it ends the handshake with an error and
//! keeps the answer for [`AfterReply`]'s owner to report. Nothing in the ClientHello is
//! secret (the caller's certificate travels later, encrypted), so sending it early tells
//! the proxy nothing it would not learn a moment later.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};
use wtd_wire::{decode, RelayReply};

use crate::defaults::MAX_RELAY_REPLY;

/// What the proxy answered, once known.
pub type Answer = Arc<Mutex<Option<Result<RelayReply, String>>>>;

enum State {
    Prefix { buf: [u8; 4], got: usize },
    Reply { buf: Vec<u8>, want: usize },
    Through,
}

/// Reads the proxy's [`RelayReply`] off the front of `inner`, then passes the stream
/// through (see the module docs).
pub struct AfterReply<R> {
    inner: R,
    state: State,
    answer: Answer,
}

impl<R> std::fmt::Debug for AfterReply<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match self.state {
            State::Prefix { .. } | State::Reply { .. } => "awaiting the proxy's answer",
            State::Through => "connected",
        };
        f.debug_struct("AfterReply")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}

impl<R> AfterReply<R> {
    pub fn new(inner: R) -> (AfterReply<R>, Answer) {
        let answer = Answer::default();
        let reader = AfterReply {
            inner,
            state: State::Prefix { buf: [0; 4], got: 0 },
            answer: answer.clone(),
        };
        (reader, answer)
    }

    fn answered(&self, a: Result<RelayReply, String>) -> io::Error {
        let e = match &a {
            Ok(r) => io::Error::other(format!("the proxy did not connect the relay: {r:?}")),
            Err(why) => io::Error::other(why.clone()),
        };
        *self.answer.lock().expect("not poisoned") = Some(a);
        e
    }
}

/// Reads into `dst` from `inner`; `Ok(0)` means the stream ended.
fn poll_some<R: AsyncRead + Unpin>(
    inner: &mut R,
    cx: &mut Context<'_>,
    dst: &mut [u8],
) -> Poll<io::Result<usize>> {
    let mut rb = ReadBuf::new(dst);
    ready!(Pin::new(inner).poll_read(cx, &mut rb))?;
    Poll::Ready(Ok(rb.filled().len()))
}

impl<R: AsyncRead + Unpin> AsyncRead for AfterReply<R> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, out: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            match &mut this.state {
                State::Through => return Pin::new(&mut this.inner).poll_read(cx, out),
                State::Prefix { buf, got } => {
                    let n = ready!(poll_some(&mut this.inner, cx, &mut buf[*got..]))?;
                    if n == 0 {
                        return Poll::Ready(Err(this.answered(Err("the proxy closed the stream".into()))));
                    }
                    *got += n;
                    if *got == 4 {
                        let want = u32::from_be_bytes(*buf) as usize;
                        if want > MAX_RELAY_REPLY {
                            let why =
                                format!("the proxy's answer announced {want} bytes, over {MAX_RELAY_REPLY}");
                            return Poll::Ready(Err(this.answered(Err(why))));
                        }
                        this.state = State::Reply {
                            buf: Vec::with_capacity(want),
                            want,
                        };
                    }
                }
                State::Reply { buf, want } => {
                    if buf.len() < *want {
                        let mut chunk = [0u8; 256];
                        let room = (*want - buf.len()).min(chunk.len());
                        let n = ready!(poll_some(&mut this.inner, cx, &mut chunk[..room]))?;
                        if n == 0 {
                            let why = "the proxy closed the stream inside its answer".to_string();
                            return Poll::Ready(Err(this.answered(Err(why))));
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        continue;
                    }
                    match decode::<RelayReply>(buf) {
                        Ok(RelayReply::Connected) => {
                            *this.answer.lock().expect("not poisoned") = Some(Ok(RelayReply::Connected));
                            this.state = State::Through;
                        }
                        Ok(other) => return Poll::Ready(Err(this.answered(Ok(other)))),
                        Err(e) => {
                            let why = format!("the proxy's answer is damaged: {e}");
                            return Poll::Ready(Err(this.answered(Err(why))));
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use wtd_wire::encode;

    fn framed(reply: &RelayReply, then: &[u8]) -> Vec<u8> {
        let body = encode(reply);
        let mut v = (body.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(&body);
        v.extend_from_slice(then);
        v
    }

    async fn read_all(bytes: Vec<u8>) -> (io::Result<Vec<u8>>, Option<Result<RelayReply, String>>) {
        // One byte at a time, the worst case for the state machine.
        let (mut client, mut server) = tokio::io::duplex(1);
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            for b in bytes {
                if server.write_all(&[b]).await.is_err() {
                    break;
                }
            }
        });
        let (mut r, answer) = AfterReply::new(&mut client);
        let mut out = Vec::new();
        let res = r.read_to_end(&mut out).await.map(|_| out);
        let a = answer.lock().unwrap().clone();
        (res, a)
    }

    #[tokio::test]
    async fn connected_passes_the_rest_through() {
        let (res, answer) = read_all(framed(&RelayReply::Connected, b"server hello")).await;
        assert_eq!(res.unwrap(), b"server hello");
        assert_eq!(answer, Some(Ok(RelayReply::Connected)));
    }

    #[tokio::test]
    async fn a_refusal_ends_the_stream_and_is_kept() {
        for reply in [RelayReply::NoSuchAgent, RelayReply::Unreachable("gone".into())] {
            let (res, answer) = read_all(framed(&reply, b"never read")).await;
            assert!(res.is_err());
            assert_eq!(answer, Some(Ok(reply)));
        }
    }

    #[tokio::test]
    async fn a_damaged_short_or_oversized_answer_is_an_error() {
        let mut damaged = framed(&RelayReply::Connected, b"");
        let last = damaged.len() - 1;
        damaged[last] = 0xee;
        let oversized = ((MAX_RELAY_REPLY + 1) as u32).to_be_bytes().to_vec();
        let short = framed(&RelayReply::Unreachable("a long reason".into()), b"");
        for (bytes, says) in [
            (damaged, "damaged"),
            (oversized, "over"),
            (short[..short.len() - 3].to_vec(), "inside its answer"),
            (vec![0, 0], "closed the stream"),
        ] {
            let (res, answer) = read_all(bytes).await;
            assert!(res.is_err());
            match answer {
                Some(Err(why)) => assert!(why.contains(says), "{why}"),
                other => panic!("expected an error saying {says}, got {other:?}"),
            }
        }
    }
}
