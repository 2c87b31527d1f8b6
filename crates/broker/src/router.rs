//! The subscription tree: which sessions want which topics, one tree per namespace.
//!
//! Levels are nodes; `+` and `#` are ordinary children looked up alongside the literal level.
//! Shared subscriptions live at the node of their inner filter, one group per name, and a
//! message matching a group goes to one member, chosen round-robin among online members.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use mqtt_codec::SubOptions;

use crate::session::SessionHandle;

/// One session's subscription at a node.
#[derive(Clone)]
pub struct SubEntry {
    pub session: Arc<SessionHandle>,
    pub options: SubOptions,
    pub sub_id: Option<u32>,
}

/// A subscription that matched a topic.
pub struct Match {
    pub session: Arc<SessionHandle>,
    pub options: SubOptions,
    pub sub_id: Option<u32>,
    /// `(group, filter)` for a shared subscription.
    pub share: Option<Arc<(Arc<str>, Arc<str>)>>,
}

struct SharedGroup {
    key: Arc<(Arc<str>, Arc<str>)>,
    members: Vec<SubEntry>,
    cursor: AtomicUsize,
}

#[derive(Default)]
struct Node {
    children: HashMap<Box<str>, Node>,
    subs: Vec<SubEntry>,
    shared: Vec<SharedGroup>,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.children.is_empty() && self.subs.is_empty() && self.shared.is_empty()
    }
}

/// Subscriptions of every namespace.
#[derive(Default)]
pub struct Router {
    roots: HashMap<Arc<str>, Node>,
    count: usize,
}

impl Router {
    /// Adds or replaces `entry.session`'s subscription to `filter` (shared if `group` is set).
    /// Returns true if the session already had this subscription.
    pub fn subscribe(
        &mut self,
        namespace: &Arc<str>,
        filter: &str,
        group: Option<&str>,
        entry: SubEntry,
    ) -> bool {
        let mut node = self.roots.entry(namespace.clone()).or_default();
        for level in filter.split('/') {
            node = node.children.entry(level.into()).or_default();
        }
        let id = entry.session.id;
        let existed = match group {
            None => replace_or_push(&mut node.subs, entry),
            Some(g) => {
                let pos = node.shared.iter().position(|s| &*s.key.0 == g);
                let grp = match pos {
                    Some(i) => &mut node.shared[i],
                    None => {
                        node.shared.push(SharedGroup {
                            key: Arc::new((Arc::from(g), Arc::from(filter))),
                            members: Vec::new(),
                            cursor: AtomicUsize::new(0),
                        });
                        node.shared.last_mut().expect("just pushed")
                    }
                };
                replace_or_push(&mut grp.members, entry)
            }
        };
        if !existed {
            self.count += 1;
        }
        tracing::trace!(session = id, filter, existed, "subscribed");
        existed
    }

    /// Removes a session's subscription. Returns true if it existed.
    pub fn unsubscribe(
        &mut self,
        namespace: &str,
        filter: &str,
        group: Option<&str>,
        session: u64,
    ) -> bool {
        let Some(root) = self.roots.get_mut(namespace) else {
            return false;
        };
        let levels: Vec<&str> = filter.split('/').collect();
        let removed = remove_at(root, &levels, group, session);
        if removed {
            self.count -= 1;
        }
        if root.is_empty() {
            self.roots.remove(namespace);
        }
        removed
    }

    /// Every subscription matching `topic` in `namespace`; one member per shared group.
    /// Returns how many tree nodes contributed: with at most one, no session appears twice.
    pub fn matches(&self, namespace: &str, topic: &str, out: &mut Vec<Match>) -> usize {
        let Some(root) = self.roots.get(namespace) else {
            return 0;
        };
        let levels: Vec<&str> = topic.split('/').collect();
        let dollar = topic.starts_with('$');
        let mut nodes = 0;
        collect(root, &levels, 0, dollar, out, &mut nodes);
        nodes
    }

    /// Picks another online member of a shared group, excluding `exclude`.
    pub fn shared_member(
        &self,
        namespace: &str,
        key: &(Arc<str>, Arc<str>),
        exclude: u64,
    ) -> Option<Match> {
        let mut node = self.roots.get(namespace)?;
        for level in key.1.split('/') {
            node = node.children.get(level)?;
        }
        let grp = node.shared.iter().find(|g| g.key.0 == key.0)?;
        let candidates: Vec<&SubEntry> = grp
            .members
            .iter()
            .filter(|m| m.session.id != exclude)
            .collect();
        let online: Vec<&&SubEntry> = candidates
            .iter()
            .filter(|m| m.session.is_online())
            .collect();
        let pick = if !online.is_empty() {
            *online[grp.cursor.fetch_add(1, Ordering::Relaxed) % online.len()]
        } else {
            *candidates.get(grp.cursor.fetch_add(1, Ordering::Relaxed) % candidates.len().max(1))?
        };
        Some(Match {
            session: pick.session.clone(),
            options: pick.options,
            sub_id: pick.sub_id,
            share: Some(grp.key.clone()),
        })
    }

    /// Number of subscriptions, shared members included.
    pub fn count(&self) -> usize {
        self.count
    }
}

fn replace_or_push(list: &mut Vec<SubEntry>, entry: SubEntry) -> bool {
    match list.iter_mut().find(|e| e.session.id == entry.session.id) {
        Some(e) => {
            *e = entry;
            true
        }
        None => {
            list.push(entry);
            false
        }
    }
}

fn remove_at(node: &mut Node, levels: &[&str], group: Option<&str>, session: u64) -> bool {
    let Some((first, rest)) = levels.split_first() else {
        return match group {
            None => remove_entry(&mut node.subs, session),
            Some(g) => {
                let Some(i) = node.shared.iter().position(|s| &*s.key.0 == g) else {
                    return false;
                };
                let removed = remove_entry(&mut node.shared[i].members, session);
                if node.shared[i].members.is_empty() {
                    node.shared.swap_remove(i);
                }
                removed
            }
        };
    };
    let Some(child) = node.children.get_mut(*first) else {
        return false;
    };
    let removed = remove_at(child, rest, group, session);
    if child.is_empty() {
        node.children.remove(*first);
    }
    removed
}

fn remove_entry(list: &mut Vec<SubEntry>, session: u64) -> bool {
    let before = list.len();
    list.retain(|e| e.session.id != session);
    list.len() != before
}

fn push_node(node: &Node, out: &mut Vec<Match>, nodes: &mut usize) {
    if !node.subs.is_empty() || !node.shared.is_empty() {
        *nodes += 1;
    }
    for e in &node.subs {
        out.push(Match {
            session: e.session.clone(),
            options: e.options,
            sub_id: e.sub_id,
            share: None,
        });
    }
    for grp in &node.shared {
        if grp.members.is_empty() {
            continue;
        }
        let n = grp.members.len();
        let start = grp.cursor.fetch_add(1, Ordering::Relaxed);
        // Round-robin, skipping offline members while an online one exists.
        let pick = (0..n)
            .map(|i| &grp.members[(start + i) % n])
            .find(|m| m.session.is_online())
            .unwrap_or(&grp.members[start % n]);
        out.push(Match {
            session: pick.session.clone(),
            options: pick.options,
            sub_id: pick.sub_id,
            share: Some(grp.key.clone()),
        });
    }
}

fn collect(
    node: &Node,
    levels: &[&str],
    depth: usize,
    dollar: bool,
    out: &mut Vec<Match>,
    nodes: &mut usize,
) {
    // A leading wildcard never matches a `$` topic.
    let wild_ok = !(depth == 0 && dollar);
    if wild_ok {
        if let Some(hash) = node.children.get("#") {
            push_node(hash, out, nodes);
        }
    }
    let Some((level, rest)) = levels.split_first() else {
        push_node(node, out, nodes);
        return;
    };
    if let Some(child) = node.children.get(*level) {
        collect(child, rest, depth + 1, dollar, out, nodes);
    }
    if wild_ok {
        if let Some(child) = node.children.get("+") {
            collect(child, rest, depth + 1, dollar, out, nodes);
        }
    }
}
