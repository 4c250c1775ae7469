//! Length-prefixed frames over a real stream: the writer and reader run together, because a
//! stream holds only a flow-control window's worth of unread bytes.

use quinn::{RecvStream, SendStream};
use wtd_transport::{read_frame, write_frame, FrameError};

use crate::harness::Link;

/// Opens a stream from the client; returns the client's send half and the server's receive
/// half. quinn announces a stream to the peer with its first bytes, so `first` is written
/// before the server accepts it.
async fn stream(link: &Link, first: &[u8]) -> (SendStream, RecvStream) {
    let (mut send, _) = link.connection.open_bi().await.expect("open");
    send.write_all(first).await.expect("write");
    let (_, recv) = link.accepted.connection().accept_bi().await.expect("accept");
    (send, recv)
}

#[tokio::test]
async fn frames_round_trip_and_a_finished_stream_reads_as_none() {
    let link = Link::new().await;
    let (mut send, _) = link.connection.open_bi().await.expect("open");
    // Bigger than a stream's receive window, so the reader must drain while the writer writes.
    let big: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
    let payloads: Vec<&[u8]> = vec![b"hello", b"", &big, b"bye"];

    let writer = async {
        for p in &payloads {
            write_frame(&mut send, p).await.expect("write frame");
        }
        send.finish().expect("finish");
    };
    let reader = async {
        let (_, mut recv) = link.accepted.connection().accept_bi().await.expect("accept");
        let mut got = Vec::new();
        while let Some(frame) = read_frame(&mut recv, 256 * 1024).await.expect("read frame") {
            got.push(frame);
        }
        got
    };
    let ((), got) = tokio::join!(writer, reader);
    assert_eq!(got, payloads.iter().map(|p| p.to_vec()).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_stream_finished_before_any_frame_reads_as_none() {
    let link = Link::new().await;
    let (mut send, _) = link.connection.open_bi().await.expect("open");
    send.finish().expect("finish");
    let (_, mut recv) = link.accepted.connection().accept_bi().await.expect("accept");
    assert_eq!(read_frame(&mut recv, 1024).await.expect("clean end"), None);
}

#[tokio::test]
async fn an_oversized_frame_is_refused_before_its_body_is_read() {
    let link = Link::new().await;
    let body = vec![7u8; 1025];
    let (mut send, mut recv) = stream(&link, &1025u32.to_be_bytes()).await;
    send.write_all(&body).await.expect("write");
    send.finish().expect("finish");

    match read_frame(&mut recv, 1024).await {
        Err(FrameError::TooLong { len: 1025, max: 1024 }) => {}
        other => panic!("expected TooLong, got {other:?}"),
    }
    // The body is still there, unread: the reader stopped at the length prefix.
    assert_eq!(recv.read_to_end(4096).await.expect("rest of stream"), body);
}

#[tokio::test]
async fn a_4_gib_announcement_is_refused_without_waiting_or_allocating() {
    // Four bytes claiming a 4 GiB frame, then the end of the stream. A reader that allocated
    // first would try to reserve 4 GiB; one that read first would report a truncated frame.
    let link = Link::new().await;
    let (mut send, mut recv) = stream(&link, &u32::MAX.to_be_bytes()).await;
    send.finish().expect("finish");

    match read_frame(&mut recv, 1024).await {
        Err(FrameError::TooLong {
            len: u32::MAX,
            max: 1024,
        }) => {}
        other => panic!("expected TooLong, got {other:?}"),
    }
}

#[tokio::test]
async fn a_stream_ending_inside_a_frame_is_an_error() {
    let link = Link::new().await;
    let (mut send, mut recv) = stream(&link, &10u32.to_be_bytes()).await;
    send.write_all(b"abc").await.expect("write");
    send.finish().expect("finish");

    match read_frame(&mut recv, 1024).await {
        Err(FrameError::Truncated { len: 10, got: 3 }) => {}
        other => panic!("expected Truncated, got {other:?}"),
    }
}

#[tokio::test]
async fn a_stream_ending_inside_a_length_prefix_is_an_error() {
    let link = Link::new().await;
    let (mut send, mut recv) = stream(&link, &[0, 0]).await;
    send.finish().expect("finish");

    match read_frame(&mut recv, 1024).await {
        Err(FrameError::TruncatedPrefix { got: 2 }) => {}
        other => panic!("expected TruncatedPrefix, got {other:?}"),
    }
}

#[tokio::test]
async fn a_reset_stream_is_a_read_error() {
    let link = Link::new().await;
    let (mut send, mut recv) = stream(&link, &10u32.to_be_bytes()).await;
    send.reset(42u32.into()).expect("reset");

    match read_frame(&mut recv, 1024).await {
        Err(FrameError::Read(quinn::ReadError::Reset(code))) => assert_eq!(code, 42u32.into()),
        other => panic!("expected a reset, got {other:?}"),
    }
}
