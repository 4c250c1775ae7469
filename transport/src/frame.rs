//! Length-prefixed frames on a QUIC stream.
//!
//! A QUIC stream is a byte pipe; messages need edges. Each frame is its length as a 4-byte
//! big-endian number, then that many bytes:
//!
//! ```text
//! +----------------+---------------------+----------------+-----
//! | len (u32, BE)  | len bytes of payload | len (u32, BE)  | ...
//! +----------------+---------------------+----------------+-----
//! ```
//!
//! The reader sets a maximum and refuses a larger announced length *before* reading or
//! allocating anything, so a peer cannot make us reserve 4 GiB with four bytes. Finishing
//! the stream between frames is the normal end (`Ok(None)`); finishing it inside one is an
//! error.

use quinn::{ReadError, ReadExactError, RecvStream, SendStream, WriteError};

use crate::defaults;

/// Reading a frame failed. The stream is no longer usable for frames: reset or stop it.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The peer announced a frame larger than we accept. It is misbehaving, or speaks a
    /// protocol version with bigger messages. Nothing was read past the length prefix.
    #[error("the peer announced a {len}-byte frame, over the {max}-byte limit")]
    TooLong { len: u32, max: usize },
    /// The stream finished inside the 4-byte length prefix: the peer crashed or has a bug.
    #[error("the stream ended inside a frame's length prefix ({got} of 4 bytes)")]
    TruncatedPrefix { got: usize },
    /// The stream finished inside a frame's payload: the peer crashed, was cut off, or has
    /// a bug.
    #[error("the stream ended inside a frame ({got} of {len} bytes)")]
    Truncated { len: u32, got: usize },
    /// The peer reset the stream, or the connection was lost.
    #[error("reading the stream failed: {0}")]
    Read(#[from] ReadError),
}

/// Writing a frame failed.
#[derive(Debug, thiserror::Error)]
pub enum WriteFrameError {
    /// The payload does not fit a 4-byte length. Split it; frames are for messages, not files.
    #[error("a {len}-byte payload is too big for one frame (at most 4 GiB - 1)")]
    TooLong { len: usize },
    /// The peer stopped reading the stream, or the connection was lost.
    #[error("writing the stream failed: {0}")]
    Write(#[from] WriteError),
}

/// Writes `payload` as one frame.
pub async fn write_frame(send: &mut SendStream, payload: &[u8]) -> Result<(), WriteFrameError> {
    let len = u32::try_from(payload.len()).map_err(|_| WriteFrameError::TooLong { len: payload.len() })?;
    send.write_all(&len.to_be_bytes()).await?;
    send.write_all(payload).await?;
    Ok(())
}

/// Reads one frame of at most `max_len` bytes. `Ok(None)` means the peer finished the stream
/// cleanly between frames.
pub async fn read_frame(recv: &mut RecvStream, max_len: usize) -> Result<Option<Vec<u8>>, FrameError> {
    let mut prefix = [0u8; 4];
    match recv.read_exact(&mut prefix).await {
        Ok(()) => {}
        Err(ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(ReadExactError::FinishedEarly(got)) => return Err(FrameError::TruncatedPrefix { got }),
        Err(ReadExactError::ReadError(e)) => return Err(FrameError::Read(e)),
    }
    let len = u32::from_be_bytes(prefix);
    let want = match usize::try_from(len) {
        Ok(want) if want <= max_len => want,
        _ => return Err(FrameError::TooLong { len, max: max_len }),
    };

    // Grow the buffer as bytes arrive (never beyond `want`), so announcing a big frame and
    // sending nothing costs us nothing.
    let mut payload = Vec::with_capacity(want.min(defaults::FRAME_PREALLOCATE));
    while payload.len() < want {
        let Some(chunk) = recv.read_chunk(want - payload.len(), true).await? else {
            return Err(FrameError::Truncated {
                len,
                got: payload.len(),
            });
        };
        let needed = payload.len() + chunk.bytes.len();
        if needed > payload.capacity() {
            let grown = (payload.capacity() * 2).clamp(needed, want);
            payload.reserve_exact(grown - payload.len());
        }
        payload.extend_from_slice(&chunk.bytes);
    }
    Ok(Some(payload))
}
