//! The connection to the MQTT broker, with rumqttc.
//!
//! [`Bridge::new`] gives a [`Bridge`] (run it: it owns the connection) and a
//! [`BridgeHandle`] (clone it freely: publishing is a push into the [`Outbox`]). Two
//! futures run joined inside [`Bridge::run`]:
//!
//! - the *driver* polls rumqttc's event loop: it connects (TLS verified against the CA
//!   file, username and password), and after every CONNACK re-sends every retained topic
//!   and subscribes to Home Assistant's birth topic; a birth message (`online`) re-sends
//!   the discovery configs. When the connection fails it says why in words
//!   ([`BrokerError`]) and waits (exponential backoff, jittered, capped) before the next try.
//! - the *pump* moves messages from the outbox to rumqttc, only while connected.
//!
//! A last will on the status topic (`offline`, retained) means a bridge that dies without
//! a goodbye still reads offline: the broker publishes it when our keep-alive lapses.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, EventLoop, Incoming, LastWill, MqttOptions,
    Outgoing, QoS, TlsConfiguration, Transport,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

use crate::config::MqttConfig;
use crate::defaults;
use crate::outbox::{Outbox, Publication};

/// Why the broker connection failed, in words a person can act on.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BrokerError {
    /// CONNACK "bad user name or password".
    #[error("the MQTT broker at {url} refused the username or password (check `username` and `password_file` in [mqtt])")]
    BadCredentials { url: String },
    /// CONNACK "not authorized": anonymous access is off, or this user may not connect.
    #[error("the MQTT broker at {url} says we are not authorized: a wrong or missing username or password, or this user may not connect (check `username` and `password_file` in [mqtt])")]
    NotAuthorized { url: String },
    /// Another CONNACK refusal.
    #[error("the MQTT broker at {url} refused the connection: {code}")]
    Refused { url: String, code: String },
    /// The broker's certificate is not signed by a CA we trust, or is for another name.
    #[error("the MQTT broker at {url} presented a certificate we do not trust ({detail}); set `ca_file` to the CA that signed it, and check the URL's host is a name in the certificate")]
    Untrusted { url: String, detail: String },
    /// Another TLS failure (a broker not speaking TLS on this port, for one).
    #[error("TLS with the MQTT broker at {url} failed: {detail} (is that port the broker's TLS listener?)")]
    Tls { url: String, detail: String },
    /// Nothing listens there, or the network is down.
    #[error("cannot reach the MQTT broker at {url}: {detail} (is mosquitto running, and the host and port right?)")]
    Unreachable { url: String, detail: String },
    /// The broker did not answer in time.
    #[error("the MQTT broker at {url} did not answer within {}s", defaults::CONNECT_TIMEOUT.as_secs())]
    Timeout { url: String },
    /// The connection was lost after it worked.
    #[error("lost the connection to the MQTT broker at {url}: {detail}")]
    Lost { url: String, detail: String },
}

impl BrokerError {
    fn from_rumqttc(e: &ConnectionError, url: &str) -> Self {
        let url = url.to_string();
        let detail = e.to_string();
        match e {
            ConnectionError::ConnectionRefused(ConnectReturnCode::BadUserNamePassword) => {
                BrokerError::BadCredentials { url }
            }
            ConnectionError::ConnectionRefused(ConnectReturnCode::NotAuthorized) => {
                BrokerError::NotAuthorized { url }
            }
            ConnectionError::ConnectionRefused(code) => BrokerError::Refused {
                url,
                code: format!("{code:?}"),
            },
            ConnectionError::NetworkTimeout => BrokerError::Timeout { url },
            ConnectionError::Tls(_) => tls_error(url, detail),
            ConnectionError::Io(io) if looks_like_tls(&detail) => tls_error(url, io.to_string()),
            ConnectionError::Io(io)
                if matches!(
                    io.kind(),
                    std::io::ErrorKind::ConnectionRefused
                        | std::io::ErrorKind::NotFound
                        | std::io::ErrorKind::HostUnreachable
                        | std::io::ErrorKind::NetworkUnreachable
                        | std::io::ErrorKind::AddrNotAvailable
                ) =>
            {
                BrokerError::Unreachable { url, detail }
            }
            _ => BrokerError::Lost { url, detail },
        }
    }
}

fn looks_like_tls(detail: &str) -> bool {
    [
        "certificate",
        "UnknownIssuer",
        "NotValidForName",
        "tls",
        "TLS",
        "handshake",
    ]
    .iter()
    .any(|w| detail.contains(w))
}

fn tls_error(url: String, detail: String) -> BrokerError {
    if [
        "certificate",
        "UnknownIssuer",
        "NotValidForName",
        "BadSignature",
        "Expired",
    ]
    .iter()
    .any(|w| detail.contains(w))
    {
        BrokerError::Untrusted { url, detail }
    } else {
        BrokerError::Tls { url, detail }
    }
}

/// The bridge could not be set up (before any connection).
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    /// The CA file has a certificate rustls cannot use.
    #[error("the MQTT CA file {path} has a certificate that cannot be used: {detail}")]
    BadCa { path: String, detail: String },
    /// No CA file was given for mqtts:// and the system has no CA certificates.
    #[error(
        "mqtts:// without `ca_file` trusts the system's CA certificates, but none were found; set ca_file"
    )]
    NoSystemCas,
    /// rustls refused the TLS settings (should not happen with the defaults).
    #[error("TLS setup for MQTT failed: {0}")]
    Tls(String),
}

/// How the bridge is doing, for metrics and logs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BridgeHealth {
    pub connected: bool,
    /// Why the last attempt or connection failed, if it did.
    pub last_error: Option<String>,
    /// Successful connections (CONNACKs) since start.
    pub connects: u64,
    /// Messages written to the broker since start.
    pub published: u64,
    /// Events dropped because the queue was full.
    pub dropped: u64,
    /// Messages waiting in the outbox.
    pub queued: usize,
}

#[derive(Debug)]
struct Inner {
    outbox: Mutex<Outbox>,
    wake: Notify,
    last_error: Mutex<Option<String>>,
    connects: AtomicU64,
    published: AtomicU64,
    connected: watch::Sender<bool>,
}

impl Inner {
    fn outbox(&self) -> MutexGuard<'_, Outbox> {
        self.outbox.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Publishes through the bridge. Cheap to clone; never blocks on the network.
#[derive(Clone, Debug)]
pub struct BridgeHandle {
    inner: Arc<Inner>,
}

impl BridgeHandle {
    pub fn publish(&self, p: Publication) {
        self.inner.outbox().push(p);
        self.inner.wake.notify_one();
    }

    pub fn publish_all(&self, ps: impl IntoIterator<Item = Publication>) {
        {
            let mut outbox = self.inner.outbox();
            for p in ps {
                outbox.push(p);
            }
        }
        self.inner.wake.notify_one();
    }

    pub fn health(&self) -> BridgeHealth {
        let (dropped, queued) = {
            let o = self.inner.outbox();
            (o.dropped(), o.queued())
        };
        BridgeHealth {
            connected: *self.inner.connected.borrow(),
            last_error: self
                .inner
                .last_error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            connects: self.inner.connects.load(Ordering::Relaxed),
            published: self.inner.published.load(Ordering::Relaxed),
            dropped,
            queued,
        }
    }

    /// Waits until the bridge is connected, or `limit` passes; for start-up and tests.
    pub async fn wait_connected(&self, limit: Duration) -> bool {
        let mut rx = self.inner.connected.subscribe();
        let connected = tokio::time::timeout(limit, rx.wait_for(|c| *c)).await.is_ok();
        connected
    }
}

/// The broker connection; see the module docs.
#[derive(Debug)]
pub struct Bridge {
    url: String,
    options: MqttOptions,
    status_topic: String,
    /// Home Assistant's status topic and the discovery prefix, when discovery is on.
    ha: Option<(String, String)>,
    inner: Arc<Inner>,
}

impl Bridge {
    /// A bridge for `config`, as `client_id`, whose last will sets `status_topic` to
    /// `offline` (and which sets it `online` on every connect).
    pub fn new(
        config: &MqttConfig,
        client_id: &str,
        status_topic: String,
    ) -> Result<(Bridge, BridgeHandle), BridgeError> {
        let client_id = config.client_id.clone().unwrap_or_else(|| client_id.to_string());
        let mut options = MqttOptions::new(client_id, config.host.clone(), config.port);
        options
            .set_keep_alive(defaults::KEEP_ALIVE)
            .set_clean_session(true)
            .set_max_packet_size(defaults::MAX_PACKET, defaults::MAX_PACKET)
            .set_last_will(LastWill::new(
                status_topic.clone(),
                "offline",
                QoS::AtLeastOnce,
                true,
            ));
        if let Some(user) = &config.username {
            options.set_credentials(user.clone(), config.password.clone().unwrap_or_default());
        }
        if config.tls {
            options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(Arc::new(
                tls_config(config)?,
            ))));
        }
        let ha = (!config.discovery_prefix.is_empty()).then(|| {
            (
                format!("{}/status", config.discovery_prefix),
                format!("{}/", config.discovery_prefix),
            )
        });
        let inner = Arc::new(Inner {
            outbox: Mutex::new(Outbox::new(config.queue)),
            wake: Notify::new(),
            last_error: Mutex::new(None),
            connects: AtomicU64::new(0),
            published: AtomicU64::new(0),
            connected: watch::channel(false).0,
        });
        // The status topic is retained state like any other: re-sent on every connect.
        inner
            .outbox()
            .push(Publication::retained(status_topic.clone(), "online"));
        let handle = BridgeHandle { inner: inner.clone() };
        Ok((
            Bridge {
                url: config.url(),
                options,
                status_topic,
                ha,
                inner,
            },
            handle,
        ))
    }

    /// Runs until `shutdown`: then sets the status topic `offline` and disconnects.
    pub async fn run(self, shutdown: CancellationToken) {
        let (client, mut eventloop) = AsyncClient::new(self.options.clone(), defaults::CLIENT_CHANNEL);
        let mut net = eventloop.network_options();
        net.set_connection_timeout(defaults::CONNECT_TIMEOUT.as_secs());
        eventloop.set_network_options(net);
        let drive = self.drive(&client, &mut eventloop, &shutdown);
        let pump = self.pump(&client, &shutdown);
        tokio::join!(drive, pump);
        self.goodbye(&client, &mut eventloop).await;
    }

    async fn drive(&self, client: &AsyncClient, eventloop: &mut EventLoop, shutdown: &CancellationToken) {
        let mut backoff = defaults::BACKOFF_BASE;
        let mut last_logged: Option<BrokerError> = None;
        loop {
            let event = tokio::select! {
                _ = shutdown.cancelled() => return,
                e = eventloop.poll() => e,
            };
            match event {
                Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                    log::info!("connected to the MQTT broker at {}", self.url);
                    backoff = defaults::BACKOFF_BASE;
                    last_logged = None;
                    *self.inner.last_error.lock().unwrap_or_else(|e| e.into_inner()) = None;
                    self.inner.connects.fetch_add(1, Ordering::Relaxed);
                    if let Some((ha_status, _)) = &self.ha {
                        let _ = client.try_subscribe(ha_status.clone(), QoS::AtLeastOnce);
                    }
                    self.inner.outbox().resend_retained();
                    self.inner.connected.send_replace(true);
                    self.inner.wake.notify_one();
                }
                Ok(Event::Incoming(Incoming::Publish(p))) => {
                    if let Some((ha_status, prefix)) = &self.ha {
                        if &p.topic == ha_status && p.payload.as_ref() == b"online" {
                            log::info!("Home Assistant came online: sending discovery again");
                            self.inner.outbox().resend_under(prefix);
                            self.inner.wake.notify_one();
                        }
                    }
                }
                Ok(Event::Outgoing(Outgoing::Publish(_))) => {
                    self.inner.published.fetch_add(1, Ordering::Relaxed);
                }
                Ok(_) => {}
                Err(e) => {
                    self.inner.connected.send_replace(false);
                    let error = BrokerError::from_rumqttc(&e, &self.url);
                    if last_logged.as_ref() != Some(&error) {
                        log::warn!("{error}; retrying");
                        last_logged = Some(error.clone());
                    } else {
                        log::debug!("{error}; retrying");
                    }
                    *self.inner.last_error.lock().unwrap_or_else(|e| e.into_inner()) =
                        Some(error.to_string());
                    let wait = jitter(backoff);
                    backoff = (backoff * 2).min(defaults::BACKOFF_CAP);
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
    }

    /// Hands the outbox to rumqttc while connected. Waiting here (rumqttc's queue full, a
    /// slow broker) holds only this future, never a publisher.
    async fn pump(&self, client: &AsyncClient, shutdown: &CancellationToken) {
        let mut connected = self.inner.connected.subscribe();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                r = connected.wait_for(|c| *c) => if r.is_err() { return },
            }
            let next = self.inner.outbox().pop();
            let Some(p) = next else {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = self.inner.wake.notified() => {}
                    _ = connected.changed() => {}
                }
                continue;
            };
            let qos = if p.retain {
                QoS::AtLeastOnce
            } else {
                QoS::AtMostOnce
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                r = client.publish(p.topic, qos, p.retain, p.payload) => if r.is_err() { return },
            }
        }
    }

    /// Status `offline`, then a clean disconnect, within a short grace.
    async fn goodbye(&self, client: &AsyncClient, eventloop: &mut EventLoop) {
        if !*self.inner.connected.borrow() {
            return;
        }
        let _ = client.try_publish(self.status_topic.clone(), QoS::AtLeastOnce, true, "offline");
        let _ = client.try_disconnect();
        let _ = tokio::time::timeout(defaults::SHUTDOWN_GRACE, async {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        })
        .await;
    }
}

/// Full jitter on the upper half: between `d/2` and `d`.
fn jitter(d: Duration) -> Duration {
    let mut b = [0u8; 8];
    let r = getrandom::getrandom(&mut b).map_or(0, |()| u64::from_le_bytes(b));
    let half = d.as_millis() as u64 / 2;
    Duration::from_millis(half + r % half.max(1))
}

fn tls_config(config: &MqttConfig) -> Result<rustls::ClientConfig, BridgeError> {
    let mut roots = rustls::RootCertStore::empty();
    match &config.ca_pem {
        Some(pem) => {
            let path = config
                .ca_file
                .as_ref()
                .map_or_else(String::new, |p| p.display().to_string());
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| BridgeError::BadCa {
                    path: path.clone(),
                    detail: e.to_string(),
                })?;
                roots.add(cert).map_err(|e| BridgeError::BadCa {
                    path: path.clone(),
                    detail: e.to_string(),
                })?;
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return Err(BridgeError::NoSystemCas);
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| BridgeError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_explained() {
        let url = "mqtt://127.0.0.1:1";
        let e = BrokerError::from_rumqttc(
            &ConnectionError::ConnectionRefused(ConnectReturnCode::BadUserNamePassword),
            url,
        );
        assert!(matches!(e, BrokerError::BadCredentials { .. }));
        assert!(e.to_string().contains("password_file"), "{e}");
        let e = BrokerError::from_rumqttc(
            &ConnectionError::ConnectionRefused(ConnectReturnCode::NotAuthorized),
            url,
        );
        assert!(matches!(e, BrokerError::NotAuthorized { .. }));
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let e = BrokerError::from_rumqttc(&ConnectionError::Io(io), url);
        assert!(matches!(e, BrokerError::Unreachable { .. }), "{e:?}");
        let io = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "invalid peer certificate: UnknownIssuer",
        );
        let e = BrokerError::from_rumqttc(&ConnectionError::Io(io), url);
        assert!(matches!(e, BrokerError::Untrusted { .. }), "{e:?}");
        assert!(e.to_string().contains("ca_file"));
    }

    #[test]
    fn jitter_stays_in_the_upper_half() {
        for _ in 0..100 {
            let j = jitter(Duration::from_millis(1000));
            assert!(
                j >= Duration::from_millis(500) && j < Duration::from_millis(1000),
                "{j:?}"
            );
        }
    }
}
