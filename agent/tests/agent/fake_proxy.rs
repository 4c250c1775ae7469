//! A fake proxy: a real QUIC server (wtd-transport) speaking the real wire messages, with
//! no roster and no logic of its own. Each agent connection becomes a [`Session`] the test
//! drives by hand: read what the agent sent, send it what the test wants.
//!
//! It answers every hello with `Welcome`, unless told to refuse the next ones
//! ([`FakeProxy::refuse_next`]). When an agent says `Leaving` it closes the connection,
//! as the real proxy does.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use wtd_keys::{ProxyInfo, PublicId, SecretKey};
use wtd_transport::{read_frame, write_frame, Limits, Pending, Server};
use wtd_wire::defaults::MAX_FRAME;
use wtd_wire::{decode, encode, AgentHello, FromAgent, Load, Open, Refusal, ToAgent};

use crate::harness::WAIT;

/// A listening fake proxy. Dropping it aborts every task it runs.
pub struct FakeProxy {
    key: SecretKey,
    server: Arc<Server>,
    /// Replies queued for the next hellos; empty means `Welcome`.
    replies: Arc<Mutex<VecDeque<ToAgent>>>,
    sessions: mpsc::UnboundedReceiver<Session>,
    /// The accept loop, which owns one task per connection.
    tasks: JoinSet<()>,
}

/// One agent connection, as the fake proxy saw it.
pub struct Session {
    /// The agent's key, proven by TLS.
    pub agent: PublicId,
    pub hello: AgentHello,
    /// What the fake proxy answered the hello with.
    pub reply: ToAgent,
    from_agent: mpsc::UnboundedReceiver<FromAgent>,
    to_agent: mpsc::UnboundedSender<ToAgent>,
}

impl FakeProxy {
    /// A fake proxy with a fixed key on a free port of 127.0.0.1.
    pub async fn start() -> FakeProxy {
        FakeProxy::start_at(
            crate::harness::secret(9),
            "127.0.0.1:0".parse().expect("an address"),
        )
        .await
    }

    /// A fake proxy with `key` on `addr`. Retries the bind while the port is still held by
    /// a proxy that was just shut down (its socket closes once its last task is gone).
    pub async fn start_at(key: SecretKey, addr: SocketAddr) -> FakeProxy {
        let server = tokio::time::timeout(WAIT, async {
            loop {
                match Server::bind(&key, addr, &Limits::default()) {
                    Ok(server) => return server,
                    Err(_) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("could not bind the fake proxy to {addr}"));
        let server = Arc::new(server);
        let replies = Arc::new(Mutex::new(VecDeque::new()));
        let (sessions_tx, sessions) = mpsc::unbounded_channel();
        let mut tasks = JoinSet::new();
        tasks.spawn(accept_loop(server.clone(), replies.clone(), sessions_tx));
        FakeProxy {
            key,
            server,
            replies,
            sessions,
            tasks,
        }
    }

    /// What a join ticket would carry: our address and pinned key.
    pub fn info(&self) -> ProxyInfo {
        ProxyInfo {
            id: self.key.public().into(),
            addrs: vec![self.addr()],
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.local_addr().expect("a bound socket")
    }

    /// Refuse the next hello with `refusal` (queued: call twice to refuse twice).
    pub fn refuse_next(&self, refusal: Refusal) {
        self.replies
            .lock()
            .expect("not poisoned")
            .push_back(ToAgent::Refused(refusal));
    }

    /// The next agent connection that got as far as its hello.
    pub async fn next_session(&mut self) -> Session {
        tokio::time::timeout(WAIT, self.sessions.recv())
            .await
            .expect("an agent connects")
            .expect("the accept loop runs")
    }

    /// Stops like a proxy being restarted: closes every connection, stops every task, and
    /// returns once the port is free to bind again.
    pub async fn shutdown(mut self) -> (SecretKey, SocketAddr) {
        let addr = self.addr();
        self.server.endpoint().close(0u32.into(), b"proxy restarting");
        self.tasks.shutdown().await;
        let _ = tokio::time::timeout(WAIT, self.server.endpoint().wait_idle()).await;
        let key = SecretKey::from_seed(&self.key.seed());
        (key, addr)
    }
}

impl Session {
    /// The next message from the agent; `None` once the agent finished the stream or the
    /// connection closed.
    pub async fn next(&mut self) -> Option<FromAgent> {
        tokio::time::timeout(WAIT, self.from_agent.recv())
            .await
            .expect("the agent sends something or closes")
    }

    /// The next heartbeat's load (skipping nothing: anything else first is a failure).
    pub async fn next_heartbeat(&mut self) -> Load {
        match self.next().await {
            Some(FromAgent::Heartbeat(load)) => load,
            other => panic!("expected a heartbeat, got {other:?}"),
        }
    }

    /// Sends a message to the agent on the control stream.
    pub fn send(&self, message: ToAgent) {
        self.to_agent.send(message).expect("the session is open");
    }
}

async fn accept_loop(
    server: Arc<Server>,
    replies: Arc<Mutex<VecDeque<ToAgent>>>,
    sessions: mpsc::UnboundedSender<Session>,
) {
    // Dropped (and its tasks aborted) when this loop is aborted.
    let mut connections = JoinSet::new();
    while let Some(pending) = server.accept().await {
        connections.spawn(serve(pending, replies.clone(), sessions.clone()));
    }
}

/// One connection: the hello, the scripted reply, then messages both ways until it closes.
async fn serve(
    pending: Pending,
    replies: Arc<Mutex<VecDeque<ToAgent>>>,
    sessions: mpsc::UnboundedSender<Session>,
) {
    // A failed handshake is the agent's business (e.g. it refused our key); nothing to record.
    let Ok(accepted) = pending.handshake().await else {
        return;
    };
    let connection = accepted.connection().clone();
    let Ok((mut send, mut recv)) = connection.accept_bi().await else {
        return;
    };
    let Ok(Some(frame)) = read_frame(&mut recv, MAX_FRAME).await else {
        return;
    };
    let Ok(Open::Agent(hello)) = decode::<Open>(&frame) else {
        panic!("the agent's first frame is not an agent hello");
    };
    let reply = replies
        .lock()
        .expect("not poisoned")
        .pop_front()
        .unwrap_or(ToAgent::Welcome {
            proxy_software: "fake proxy".into(),
        });
    if write_frame(&mut send, &encode(&reply)).await.is_err() {
        return;
    }
    let (from_tx, from_agent) = mpsc::unbounded_channel();
    let (to_agent, mut to_rx) = mpsc::unbounded_channel::<ToAgent>();
    let refused = matches!(reply, ToAgent::Refused(_));
    let _ = sessions.send(Session {
        agent: accepted.peer(),
        hello,
        reply,
        from_agent,
        to_agent,
    });
    if refused {
        // The agent hangs up after a refusal.
        let _ = tokio::time::timeout(WAIT, connection.closed()).await;
        return;
    }
    let reading = async {
        while let Ok(Some(frame)) = read_frame(&mut recv, MAX_FRAME).await {
            let message = decode::<FromAgent>(&frame).expect("the agent sends valid messages");
            let leaving = message == FromAgent::Leaving;
            let _ = from_tx.send(message);
            if leaving {
                connection.close(0u32.into(), b"goodbye");
            }
        }
    };
    let writing = async {
        while let Some(message) = to_rx.recv().await {
            if write_frame(&mut send, &encode(&message)).await.is_err() {
                break;
            }
        }
        std::future::pending::<()>().await
    };
    // Both futures live across the whole loop, so neither is dropped mid-frame.
    tokio::select! {
        _ = reading => {}
        _ = writing => {}
    }
    // `accepted` holds the connection's slot until here.
    drop(accepted);
}
