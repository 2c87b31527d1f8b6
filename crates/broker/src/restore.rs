//! Rebuilding the broker's state from the store at start-up: retained messages, and persistent
//! sessions (offline) with their subscriptions, queues, in-flight messages and QoS 2 ids. Each
//! restored session's expiry countdown continues from when its client went away.

use std::sync::Arc;

use crate::broker::{split_shared, Shared};
use crate::message::Delivery;
use crate::persistence::{Loaded, STATE_ACK, STATE_COMP, STATE_REC};
use crate::router::SubEntry;
use crate::session::{Inflight, InflightState, SessionHandle, SubRecord, NEVER_EXPIRES};

impl Shared {
    /// Loads what the store returned at open. Call inside a tokio runtime (expiry timers).
    pub fn restore(self: &Arc<Self>, loaded: Loaded) {
        let retained = loaded.retained.len();
        {
            let mut store = self.retained.write();
            for msg in loaded.retained {
                store.set(msg);
            }
        }
        let sessions = loaded.sessions.len();
        let mut messages = 0;
        for ls in loaded.sessions {
            let session = Arc::new(SessionHandle::new(
                self.next_id(),
                ls.ns.clone(),
                ls.client_id.clone(),
                ls.expiry,
            ));
            {
                let mut st = session.state.lock();
                for (filter, options, sub_id) in ls.subscriptions {
                    let (group, inner) = split_shared(&filter);
                    let entry = SubEntry {
                        session: session.clone(),
                        options,
                        sub_id,
                    };
                    self.router.write().subscribe(&ls.ns, inner, group, entry);
                    st.subscriptions
                        .insert(filter, SubRecord { options, sub_id });
                }
                for d in ls.queue {
                    messages += 1;
                    let delivery = Delivery {
                        msg: d.msg,
                        qos: d.qos,
                        retain: d.retain,
                        sub_ids: d.sub_ids,
                        share: d.share.map(Arc::new),
                        row: Some(d.row),
                    };
                    let state = match d.state {
                        STATE_ACK => Some(InflightState::Ack),
                        STATE_REC => Some(InflightState::Rec),
                        STATE_COMP => Some(InflightState::Comp),
                        _ => None,
                    };
                    match state {
                        Some(state) if d.pid != 0 => {
                            st.inflight.push_back(Inflight {
                                pid: d.pid,
                                delivery,
                                state,
                            });
                        }
                        _ => st.push_back(delivery),
                    }
                }
                st.incoming_qos2.extend(ls.qos2_in);
            }
            self.sessions
                .lock()
                .insert((ls.ns, ls.client_id), session.clone());
            let left = if ls.expiry == NEVER_EXPIRES {
                NEVER_EXPIRES
            } else {
                // At least a second, so a client reconnecting right after a restart finds it.
                (u64::from(ls.expiry).saturating_sub(ls.offline_for)).max(1) as u32
            };
            self.schedule_expiry(&session, 0, left);
        }
        tracing::info!(retained, sessions, messages, "restored broker state");
    }
}
