//! Subscribed handlers: a function whose mission file says `subscribe = ["social/unfriend"]`
//! is called once per signed event of that mission and topic, like a Promiscuous
//! subscriber.
//!
//! ```text
//!  proxy ──Delivery::Event──► verify signature + chain (Chain) ──► causal order (CausalOrder)
//!        ◄──Ack{position}──── save the position (atomic file) ◄── run the handler, exit 0
//! ```
//!
//! - **Nothing lost.** The subscription is durable: this agent keeps, per handler, the
//!   position of the last event it handled (`<state dir>/subscriptions/<mission>-<function>.json`,
//!   replaced atomically after each event), and subscribes from there; the proxy keeps the
//!   acknowledged position too. A handler that was off catches up on what it missed.
//! - **Nothing twice.** An event at or before the saved position is skipped, whatever the
//!   proxy replays. (The one window: killed after the handler exited but before the
//!   position was saved, that event runs again at the next start.)
//! - **In order, causally.** Events of one publisher come in order (the chain); an event
//!   that depends on another (emitted while handling it) waits until that one was handled.
//!   Events a handler emits depend on the event it handles and on what that depended on.
//! - **The proxy is not trusted.** A forged, altered, reordered or missing event stops the
//!   subscription with an error naming it; it starts again from the saved position.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use wtd_keys::call::CallStatus;
use wtd_keys::event::{Accepted, CausalOrder, Chain, Dep, EventHash, LogId, SignedEvent};
use wtd_keys::{AgentId, MissionName};
use wtd_transport::{read_frame, write_frame, Connection};
use wtd_wire::defaults::MAX_FRAME;
use wtd_wire::{
    decode, encode, Delivery, Key, LogPosition, Open, Request, Response, StartAt, Subscribe, SubscriberMsg,
};

use crate::calls::CallService;
use crate::defaults;
use crate::missions::{Catalogue, Function};

/// One subscribed handler: `mission/function` and what it subscribes to.
#[derive(Debug)]
pub(crate) struct Handler {
    mission: MissionName,
    function: Function,
    path: PathBuf,
}

#[derive(serde::Serialize, serde::Deserialize, Default)]
struct Saved {
    /// (publisher id, mission, seq, hash hex) of the last event handled, per log.
    logs: Vec<(String, String, u64, String)>,
}

type Positions = HashMap<LogId, (u64, EventHash)>;

impl Handler {
    /// Every function of `catalogue` with a `subscribe` list.
    pub(crate) fn all(catalogue: &Catalogue, state_dir: &std::path::Path) -> Vec<Handler> {
        let dir = state_dir.join("subscriptions");
        catalogue
            .missions()
            .iter()
            .flat_map(|m| {
                let dir = dir.clone();
                m.functions
                    .iter()
                    .filter(|f| !f.subscribe.is_empty())
                    .map(move |f| Handler {
                        mission: m.name.clone(),
                        function: f.clone(),
                        path: dir.join(format!("{}-{}.json", m.name, f.name)),
                    })
            })
            .collect()
    }

    fn load(&self) -> Positions {
        let Ok(bytes) = std::fs::read(&self.path) else {
            return Positions::new();
        };
        let Ok(saved) = serde_json::from_slice::<Saved>(&bytes) else {
            log::error!(
                "{}: not a subscription position; move it aside to start this handler over from the first event",
                self.path.display()
            );
            return Positions::new();
        };
        saved
            .logs
            .into_iter()
            .filter_map(|(p, m, seq, h)| {
                let hash: [u8; 32] = data_encoding::HEXLOWER
                    .decode(h.as_bytes())
                    .ok()?
                    .try_into()
                    .ok()?;
                Some((
                    LogId {
                        publisher: p.parse::<AgentId>().ok()?,
                        mission: MissionName::new(&m).ok()?,
                    },
                    (seq, EventHash(hash)),
                ))
            })
            .collect()
    }

    fn save(&self, positions: &Positions) -> Result<(), String> {
        let saved = Saved {
            logs: positions
                .iter()
                .map(|(l, (seq, h))| {
                    (
                        l.publisher.to_string(),
                        l.mission.to_string(),
                        *seq,
                        data_encoding::HEXLOWER.encode(&h.0),
                    )
                })
                .collect(),
        };
        if let Some(dir) = self.path.parent() {
            wtd_store::atomic::ensure_dir(dir, 0o700).map_err(|e| e.to_string())?;
        }
        let bytes = serde_json::to_vec(&saved).expect("plain data");
        wtd_store::atomic::write_atomic(&self.path, &bytes, 0o600).map_err(|e| e.to_string())
    }

    fn missions(&self) -> Vec<MissionName> {
        let set: BTreeSet<MissionName> = self
            .function
            .subscribe
            .iter()
            .map(|s| s.mission.clone())
            .collect();
        set.into_iter().collect()
    }

    /// Keeps the subscription going on `connection` until the session ends (never returns
    /// by itself); after an error it waits and subscribes again from the saved position.
    pub(crate) async fn run(
        &self,
        connection: &Connection,
        calls: &Arc<CallService>,
        stop: &CancellationToken,
    ) {
        loop {
            if let Err(why) = self.subscribe(connection, calls, stop).await {
                log::warn!(
                    "the subscription of {}/{} stopped: {why}; subscribing again in {}",
                    self.mission,
                    self.function.name,
                    humantime::format_duration(defaults::SUBSCRIBE_RETRY)
                );
            }
            tokio::time::sleep(defaults::SUBSCRIBE_RETRY).await;
        }
    }

    async fn subscribe(
        &self,
        connection: &Connection,
        calls: &Arc<CallService>,
        stop: &CancellationToken,
    ) -> Result<(), String> {
        let mut positions = self.load();
        let missions = self.missions();
        let (mut send, mut recv) = connection.open_bi().await.map_err(|e| e.to_string())?;
        let after: Vec<LogPosition> = positions
            .iter()
            .map(|(l, (seq, _))| LogPosition {
                publisher: Key::from(*l.publisher.key()),
                mission: l.mission.to_string(),
                seq: *seq,
            })
            .collect();
        let request = Open::Request(Request::Subscribe(Subscribe {
            missions: missions.iter().map(|m| m.to_string()).collect(),
            start: StartAt::After(after),
            name: Some(format!("{}-{}", self.mission, self.function.name)),
        }));
        write_frame(&mut send, &encode(&request))
            .await
            .map_err(|e| e.to_string())?;
        let mut chain = Chain::new();
        let wanted = missions.clone();
        let mut order = CausalOrder::new(move |l| wanted.contains(&l.mission));
        for (l, (seq, hash)) in &positions {
            chain.start_at(l.clone(), *seq, Some(*hash));
            order.delivered_up_to(l.clone(), *seq);
        }
        loop {
            let frame = read_frame(&mut recv, MAX_FRAME)
                .await
                .map_err(|e| e.to_string())?
                .ok_or("the proxy ended the subscription")?;
            let delivery = match decode::<Response>(&frame).map_err(|e| e.to_string())? {
                Response::Delivery(d) => d,
                Response::Error(why) => return Err(why),
                other => return Err(format!("unexpected answer {other:?}")),
            };
            match delivery {
                Delivery::Accepted { .. } => {}
                Delivery::Refused(why) => return Err(why),
                Delivery::Trimmed {
                    publisher,
                    mission,
                    first,
                    reason,
                } => {
                    let Some(log) = log_id(&publisher, &mission) else {
                        continue;
                    };
                    let have = chain.head(&log).map_or(0, |h| h.seq);
                    if have + 1 < first {
                        log::warn!(
                            "{}/{}: events {}..{} of {log} are gone from the proxy ({reason}); they will never be handled",
                            self.mission,
                            self.function.name,
                            have + 1,
                            first - 1
                        );
                        chain.start_at(log.clone(), first - 1, None);
                        order.delivered_up_to(log, first - 1);
                    }
                }
                Delivery::Event(bytes) => {
                    let event = SignedEvent::decode(&bytes)
                        .map_err(|e| format!("an event was altered or forged: {e}"))?;
                    if chain.accept(&event).map_err(|e| e.to_string())? == Accepted::Duplicate {
                        continue;
                    }
                    let ready = order.offer(event).map_err(|e| e.to_string())?;
                    for e in ready {
                        self.handle(&e, calls, stop).await;
                        positions.insert(e.event().log.clone(), (e.event().seq, e.hash()));
                        self.save(&positions)
                            .map_err(|why| format!("could not save the position: {why}"))?;
                        let ack = SubscriberMsg::Ack(LogPosition {
                            publisher: Key::from(*e.event().log.publisher.key()),
                            mission: e.event().log.mission.to_string(),
                            seq: e.event().seq,
                        });
                        write_frame(&mut send, &encode(&ack))
                            .await
                            .map_err(|e| e.to_string())?;
                    }
                }
            }
        }
    }

    /// Runs the handler on `event` if its topic is subscribed (up to
    /// [`defaults::HANDLER_ATTEMPTS`] times), and returns once it is done with it.
    async fn handle(&self, event: &SignedEvent, calls: &Arc<CallService>, stop: &CancellationToken) {
        let e = event.event();
        if !self
            .function
            .subscribe
            .iter()
            .any(|s| s.matches(&e.log.mission, &e.topic))
        {
            return;
        }
        let body: serde_json::Value = serde_json::from_str(&e.body).unwrap_or(serde_json::Value::Null);
        let args = serde_json::json!({
            "mission": e.log.mission.as_str(),
            "topic": e.topic.as_str(),
            "body": body,
            "publisher": e.log.publisher.to_string(),
            "seq": e.seq,
            "at": e.at.0,
        })
        .to_string();
        let mut cause: Vec<Dep> = e.deps.clone();
        cause.push(event.as_dep());
        for attempt in 1..=defaults::HANDLER_ATTEMPTS {
            let (status, _, detail) = calls
                .run_handler(
                    &self.function,
                    &self.mission,
                    args.as_bytes(),
                    &stop.child_token(),
                    &cause,
                )
                .await;
            if status == CallStatus::Ok {
                return;
            }
            log::warn!(
                "{}/{} failed on event {} of {} (attempt {attempt} of {}): {detail}",
                self.mission,
                self.function.name,
                e.seq,
                e.log,
                defaults::HANDLER_ATTEMPTS
            );
        }
        log::error!(
            "{}/{} skipped event {} of {} after {} failed attempts",
            self.mission,
            self.function.name,
            e.seq,
            e.log,
            defaults::HANDLER_ATTEMPTS
        );
    }
}

fn log_id(publisher: &Key, mission: &str) -> Option<LogId> {
    Some(LogId {
        publisher: AgentId(publisher.parse().ok()?),
        mission: MissionName::new(mission).ok()?,
    })
}
